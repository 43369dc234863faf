"""Memory-bank detectors: no gradient training, a bank of training features, distance to it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, Batches, InferenceBatch, selected
from oddeye.detectors.params import Derived, Params, param
from oddeye.detectors.registry import register
from oddeye.detectors.screening import screen_training


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur of (B, C, H, W) (sigma in pixels); reflect padding, or replicate
    where an image side is too small to reflect the kernel's radius."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    if c > 1 and not torch.compiler.is_exporting():  # depthwise convolution: 4-6x faster on CPU in
        x = x.contiguous(memory_format=torch.channels_last)  # this layout, and bit for bit the same
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def blur_sigma(blur: float, shape: tuple[int, int, int]) -> float:
    """The blur in pixels for a ``blur`` given as a fraction of the shorter image side."""
    return blur * min(shape[:2])


def reduced_size(shape: tuple[int, int, int], max_side: int) -> tuple[int, int]:
    """(H, W) scaled down so that the longer side is at most ``max_side`` (0: unchanged)."""
    h, w = shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def shrink(x: torch.Tensor, hw: tuple[int, int] | list[int]) -> torch.Tensor:
    """(B, C, H, W) area-averaged down to ``hw`` (unchanged when it is already that size)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=tuple(hw), mode="area")


def grow(x: torch.Tensor, hw: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(B, C, h, w) scaled up to ``hw`` bilinearly (unchanged when it is already that size)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False)


def count_of(batches: Callable[[], Iterator[torch.Tensor]]) -> int | None:
    """How many images ``batches()`` yields, when it says (the training loop's passes do)."""
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None


def resize_bank_on_load(
    self: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """``_load_from_state_dict`` for modules with a ``bank`` buffer whose length is only known
    from the saved weights: resize the buffers first, then load as usual. Banks saved before the
    ``offset`` buffer existed (format 1) hold their rows as they were: an empty offset, none; banks
    saved before ``centre`` and ``axes`` existed hold the features themselves: empty ones."""
    if prefix + "bank" in state_dict:
        self.bank = torch.empty_like(state_dict[prefix + "bank"])
        for name in ("offset", "centre", "axes"):
            if hasattr(self, name):
                state_dict.setdefault(prefix + name, torch.zeros(0))
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
    nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


def euclidean(q: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N) Euclidean distances between the rows of ``q`` and ``b``: |q|^2 + |b|^2 - 2 q.b, the
    product and the sum in one ``addmm`` on the rows as they are. Written out so that an exported
    graph runs the same operations (cdist exports badly).

    Until issue 24 this was torch.cdist's own form, one product of padded rows
    [-2q, |q|^2, 1] . [b, 1, |b|^2]: padding copied the whole bank on every call, which cost more
    than the product itself for small query batches (a 19,831 x 3,072 bank on 2 cores: 0.17 s
    against 0.05 s for 64 queries, 0.25 s against 0.13 s for 256; the same neighbours, distances
    within 2e-6 of each other, NOTES.md)."""
    qq = q.pow(2).sum(-1, keepdim=True)
    bb = torch.linalg.vector_norm(b, dim=-1).pow(2)  # no (N, D) temporary
    return torch.addmm(qq + bb, q, b.mT, alpha=-2).clamp_min(0).sqrt()


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, k) distances, ascending, and (B, k) bank rows) of each query's ``k`` nearest bank rows,
    in float32, the bank taken in chunks so the (B, chunk) block stays small at any bank size."""
    q = queries.float()
    k = max(1, min(k, bank.shape[0]))
    best = rows = None
    for start in range(0, bank.shape[0], BANK_CHUNK):
        d = euclidean(q, bank[start : start + BANK_CHUNK].float())  # (B, chunk)
        values, index = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        if best is None:
            best, rows = values, index
            continue
        values, index = torch.cat([best, values], 1), torch.cat([rows, index + start], 1)
        best, pick = values.topk(k, dim=1, largest=False)
        rows = index.gather(1, pick)
    return best, rows


def knn_distance(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) mean Euclidean distance from each query row to its ``k`` nearest bank rows."""
    return nearest(queries, bank, k)[0].mean(1)


BANK_CHUNK = 8192  # bank rows per distance block
AXES_IMAGES = 4096  # images the principal axes of a bank's features are fitted on (evenly spaced)
SKETCH_DIMS = 32  # dimensions of the random projection a coreset is chosen on
CORESET_GROUP = 16384  # rows a greedy k-center pass compares at once (a group's picks are its share)
SEED = 0  # of the sketch's projection and the principal axes' randomised search


def principal_axes(rows: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), axes (D, dims)) of the rows' ``dims`` directions of most variance (all D, as
    they are, when ``dims`` is 0 or at least D). Signs fixed (largest entry positive), so the
    same rows give the same axes. Beyond ``EXACT_AXES`` dimensions a seeded randomised search
    (:func:`torch.svd_lowrank`) finds them: a full eigendecomposition costs seconds there."""
    rows = rows.float()
    mean = rows.mean(0)
    dim = rows.shape[1]
    if dims <= 0 or dims >= dim:
        return mean, torch.eye(dim)
    centred = rows - mean
    if dim <= EXACT_AXES:
        covariance = centred.T @ centred / max(1, len(rows) - 1)
        try:
            _, vectors = torch.linalg.eigh(covariance)  # ascending
        except torch.linalg.LinAlgError:  # degenerate (many equal eigenvalues): in float64, it converges
            vectors = torch.linalg.eigh(covariance.double())[1].float()
        axes = vectors[:, -dims:].flip(1)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            axes = torch.svd_lowrank(centred, q=min(dim, len(rows), dims + 16), niter=2)[2][:, :dims]
    signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return mean, (axes * signs).contiguous()


EXACT_AXES = 1024  # feature dimensions up to which principal axes come from an exact eigendecomposition

_SKETCHES: dict[int, torch.Tensor] = {}


def sketch(rows: torch.Tensor) -> torch.Tensor:
    """(B, SKETCH_DIMS) a fixed random projection of (B, D) rows (Gaussian, seeded by ``SEED`` and
    D): distances kept to a few percent, enough to tell which rows cover which."""
    rows = rows.float()
    if rows.shape[1] <= SKETCH_DIMS:
        return rows
    if rows.shape[1] not in _SKETCHES:
        g = torch.Generator().manual_seed(SEED)
        _SKETCHES[rows.shape[1]] = torch.randn(rows.shape[1], SKETCH_DIMS, generator=g) / SKETCH_DIMS**0.5
    return rows @ _SKETCHES[rows.shape[1]].to(rows.device)


def image_sketch(x: torch.Tensor) -> torch.Tensor:
    """(B, SKETCH_DIMS) what a coreset of images is chosen on: each image's mean colours on a
    ``SKETCH_SIDE`` grid (its layout), randomly projected (:func:`sketch`). Cheap at any image size,
    and the same for every bank of a fit, so they all keep the same images."""
    return layout_sketch(F.adaptive_avg_pool2d(x.float(), SKETCH_SIDE))


def layout_sketch(layouts: torch.Tensor) -> torch.Tensor:
    """:func:`image_sketch` of (B, C, SKETCH_SIDE, SKETCH_SIDE) normalised mean colours (the
    training loop pools the stored images first and normalises the few means: the same numbers
    to rounding, at a fraction of the cost)."""
    return sketch(layouts.flatten(1))


SKETCH_SIDE = 8  # the image layout a coreset is chosen on: mean colours on an 8x8 grid


def covering(batches: Callable[[], Iterator[torch.Tensor]], m: int) -> np.ndarray:
    """Sorted positions of ``m`` images of the pass ``batches()`` that cover it (:func:`coreset` on
    :func:`image_sketch`): the pass's own ``cover`` where it has one (the training loop computes it
    once for all the banks of a fit), else one pass here."""
    cover = getattr(batches, "cover", None)
    if cover is not None:
        return cover(m)
    return coreset(torch.cat([image_sketch(x) for x in batches()]), m)


def coreset(rows: torch.Tensor, m: int) -> np.ndarray:
    """Sorted indices of ``m`` of the (n, d) ``rows`` that cover them all: greedy k-center (each pick
    the row farthest from those picked, as PatchCore selects its patches), run on consecutive groups
    of ``CORESET_GROUP`` rows, each giving its share of ``m``, so the cost is n x m x d / groups
    and a group stays in cache."""
    n = len(rows)
    if m >= n:
        return np.arange(n)
    bounds = np.linspace(0, n, max(1, -(-n // CORESET_GROUP)) + 1).astype(np.int64)
    picks = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        share = round(m * hi / n) - round(m * lo / n)
        if share > 0:
            picks.append(lo + k_center(rows[lo:hi], share))
    return np.sort(np.concatenate(picks))


def k_center(rows: torch.Tensor, m: int) -> np.ndarray:
    """Indices of ``m`` rows picked greedily, each the farthest from those before, starting from
    the row nearest the mean (the same rows give the same picks)."""
    rows = rows.float()
    norms = rows.pow(2).sum(1)
    first = int(((rows - rows.mean(0)).pow(2).sum(1)).argmin())
    chosen = np.empty(min(m, len(rows)), np.int64)
    chosen[0] = first
    low = (norms + norms[first] - 2 * (rows @ rows[first])).clamp_min_(0)
    for j in range(1, len(chosen)):
        i = int(low.argmax())
        chosen[j] = i
        torch.minimum(low, norms + norms[i] - 2 * (rows @ rows[i]), out=low)
        low[i] = 0
    return chosen


def spaced(n: int, k: int) -> np.ndarray:
    """``k`` evenly spaced indices of ``range(n)``, ascending (all of them when ``k >= n``)."""
    return np.arange(n) if k >= n else np.unique(np.linspace(0, n - 1, k).astype(np.int64))


def bank_shares(rows: int, seen: int, new: int, bound: int) -> tuple[int, int]:
    """(old rows, new images) a bank of at most ``bound`` rows keeps when ``new`` images join its
    ``rows``, which stand for ``seen`` images: all when they fit, else shares in proportion to the
    images each part stands for (the bank stays an even sample of every image it was given)."""
    if rows + new <= bound:
        return rows, new
    take_new = min(new, round(bound * new / (max(seen, rows) + new)))
    take_old = min(rows, bound - take_new)
    return take_old, min(new, bound - take_old)


class KNNBank(nn.Module):
    """A memory bank of feature rows; score = mean distance to the ``k`` nearest.

    Built streaming from the training batches: only the rows of an evenly spaced subset of at
    most ``max_bank`` images are kept, so memory is bounded by ``max_bank`` x the feature size
    whatever the number or size of the images. ``normalize``: rows scaled to unit length (learned
    features). The bank's length is known only once it is built or loaded. ``absorb`` adds images
    to a built bank, within the same bound (``oddeye update``).

    The rows are kept less their mean (``offset``, subtracted from queries too): distances do not
    change, but they are computed from far smaller numbers, so float32 loses less to cancellation
    and an exported graph (another matrix-product library) gives the same scores to 1e-6.
    """

    def __init__(
        self,
        k: int = 3,
        max_bank: int = 20000,
        normalize: bool = False,
        k_share: float = 0.0,
        k_max: int = 20,
        dims: int = 0,
        select: str = "spaced",
    ) -> None:
        super().__init__()
        self.k, self.max_bank, self.normalize = k, max_bank, normalize
        self.k_share, self.k_max, self.dims, self.select = k_share, k_max, dims, select
        self.register_buffer("bank", torch.zeros(0, 0))
        self.register_buffer("offset", torch.zeros(0))
        self.register_buffer("centre", torch.zeros(0))  # dims > 0: the features' mean, and
        self.register_buffer("axes", torch.zeros(0))  # their principal axes (D, dims)
        self.positions: np.ndarray | None = None  # after build: each row's image in the pass

    def _prepare(self, f: torch.Tensor) -> torch.Tensor:
        """Feature rows as the bank compares them: flattened (unit length with ``normalize``); on
        the principal axes, plus one column, the length of what the axes leave out (the distance
        of the row to their span), so an image unlike every training image in a direction the
        training images never vary in still stands out (distances to within that part's
        difference in length: a lower bound of the full distance)."""
        f = f.float().flatten(1)
        f = F.normalize(f, dim=1) if self.normalize else f
        if not self.axes.numel():
            return f
        centred = f - self.centre
        on = centred @ self.axes
        off = (centred - on @ self.axes.T).norm(dim=1, keepdim=True)
        return torch.cat([on, off], 1)

    def _centred(self, f: torch.Tensor) -> torch.Tensor:
        prepared = self._prepare(f)
        return prepared - self.offset if self.offset.numel() else prepared

    def _rows_of(
        self,
        batches: Callable[[], Iterator[torch.Tensor]],
        features: Callable[[torch.Tensor], torch.Tensor],
        keep: np.ndarray | None,
    ) -> Iterator[torch.Tensor]:
        """One pass: the prepared feature rows of the images ``keep`` names (every image: None),
        a batch at a time, in order (only those images read, where the pass can)."""
        for x in batches() if keep is None else selected(batches, keep):
            yield self._prepare(features(x))

    def _fit_axes(
        self,
        batches: Callable[[], Iterator[torch.Tensor]],
        features: Callable[[torch.Tensor], torch.Tensor],
        n: int,
    ) -> None:
        """``dims`` > 0: the principal axes of an evenly spaced sample of the images' features
        (one pass; nothing when the features have no more dimensions than that)."""
        sample = torch.cat(list(self._rows_of(batches, features, spaced(n, AXES_IMAGES))))
        if sample.shape[1] <= self.dims:
            return
        self.centre, self.axes = principal_axes(sample, self.dims)

    @torch.no_grad()
    def build(
        self, batches: Callable[[], Iterator[torch.Tensor]], features: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        """The bank from ``batches()``: ``features`` of at most ``max_bank`` images, streamed.
        ``select="spaced"`` keeps an evenly spaced subset (one pass); ``"coreset"`` the images that
        cover the rest (:func:`covering`: a sketch of every image's layout, shared by the banks of a
        fit, then a pass over the images kept). ``dims`` > 0 first fits the principal axes on a
        sample (a pass over its images) and keeps the rows on them."""
        n = count_of(batches)
        self.centre, self.axes = torch.zeros(0), torch.zeros(0)
        if self.dims > 0 and n:
            self._fit_axes(batches, features, n)
        if n is None or n <= self.max_bank:
            keep = None
        elif self.select == "coreset":
            keep = covering(batches, self.max_bank)
        else:
            keep = spaced(n, self.max_bank)
        bank = torch.cat(list(self._rows_of(batches, features, keep)) or [torch.zeros(0, 0)])
        positions = np.arange(len(bank)) if keep is None else keep
        if keep is None and len(bank) > self.max_bank:  # a pass of unknown length: subsample after
            picked = torch.linspace(0, len(bank) - 1, self.max_bank).long()
            bank, positions = bank[picked], picked.numpy()
        self.offset = bank.mean(0) if len(bank) else torch.zeros(bank.shape[1])
        self.bank = (bank - self.offset).contiguous()
        self.positions = np.asarray(positions, dtype=np.int64)

    def centred(self, f: torch.Tensor) -> torch.Tensor:
        """Feature rows as the bank holds its own (prepared, less the offset)."""
        return self._centred(f)

    def drop(self, mask: np.ndarray) -> None:
        """Remove the rows where ``mask`` is True (set aside); the offset stays, so the rows kept
        and every distance are unchanged."""
        keep = ~np.asarray(mask, bool)
        self.bank = self.bank[torch.from_numpy(keep).to(self.bank.device)].contiguous()
        if self.positions is not None:
            self.positions = self.positions[keep]

    @torch.no_grad()
    def absorb(self, batches: Batches, features: Callable[[torch.Tensor], torch.Tensor], seen: int) -> None:
        """``features`` of the images of ``batches()`` join the built bank (one pass). Its rows stay
        as they are, bit for bit, and so does ``offset`` (new rows are stored less it too). Beyond
        ``max_bank`` rows, evenly spaced subsets of the old rows and the new images are kept, in
        proportion to the images each stands for (``seen``: those the bank was built from)."""
        take_old, take_new = bank_shares(len(self.bank), seen, len(batches), self.max_bank)
        rows = [self._centred(features(x)) for x in selected(batches, spaced(len(batches), take_new))]
        if take_old:
            rows.insert(0, self.bank[torch.from_numpy(spaced(len(self.bank), take_old))])
        if rows:
            self.bank = torch.cat(rows).contiguous()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return knn_distance(self._centred(features), self.bank, self.k_now)

    @property
    def k_now(self) -> int:
        """The k this bank averages at its size (see :func:`bank_k`)."""
        return bank_k(self.k, self.k_share, self.k_max, self.bank.shape[0])

    def search(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) scores as :meth:`forward` gives them and (B, D) the nearest rows as :meth:`closest`
        gives them, from one search of the bank (a map costs no second search)."""
        distances, rows = nearest(self._centred(features), self.bank, self.k_now)
        return distances.mean(1), self._as_features(rows[:, 0])

    def closest(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) the nearest bank row of each feature row, as a feature row (what a map compares
        with; a bank on principal axes gives the row back in the features' space)."""
        return self._as_features(nearest(self._centred(features), self.bank, 1)[1][:, 0])

    def _as_features(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, D) bank rows ``rows`` as feature rows."""
        near = self.bank[rows].float()
        near = near + self.offset if self.offset.numel() else near
        return near[:, :-1] @ self.axes.T + self.centre if self.axes.numel() else near

    @torch.no_grad()
    def leave_one_out(self, max_rows: int = 2000) -> torch.Tensor | None:
        """Scores of up to ``max_rows`` bank rows (evenly spaced) against the rest of the bank:
        normal scores without held-out images (None for a bank of one row)."""
        n = self.bank.shape[0]
        if n < 2:
            return None
        rows = torch.linspace(0, n - 1, min(n, max_rows)).long().unique()
        out = []
        for start in range(0, len(rows), 512):
            idx = rows[start : start + 512]
            d = euclidean(self.bank[idx].float(), self.bank.float())  # (b, n)
            d[torch.arange(len(idx)), idx] = float("inf")  # not itself
            out.append(d.topk(min(self.k_now, n - 1), dim=1, largest=False).values.mean(1))
        return torch.cat(out)

    _load_from_state_dict = resize_bank_on_load  # type: ignore[assignment]


class BankDetector(AnomalyModel):
    """A memory-bank detector: mean distance to the ``k`` nearest training images in the space of
    its ``features`` (subclasses say which); a bank of at most ``max_bank`` images, no training.
    Its ``Params`` have ``k`` and ``max_bank``."""

    trainable = False
    updatable = True

    def __init__(
        self, shape: tuple[int, int, int], params: Params | None = None, derived: Derived | None = None
    ) -> None:
        super().__init__(shape, params, derived)
        p = self.params
        self.memory = KNNBank(p.k, p.max_bank, k_share=p.k_share, k_max=p.k_max, dims=p.dims, select=p.select)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        self.memory.build(batches, self.features)
        screen_training(self, heldout)

    def fit_end_work(self) -> str:
        return "memory bank"

    def banks(self) -> list[tuple[KNNBank, Callable[[torch.Tensor], torch.Tensor]]]:
        return [(self.memory, self.features)]

    def absorb(self, batches: Batches, heldout: Batches, seen: int) -> None:
        """The new images join the bank (within ``max_bank``); nothing is fitted on held-out ones."""
        self.memory.absorb(batches, self.features, seen)

    def reference_scores(self) -> torch.Tensor | None:
        return self.memory.leave_one_out()

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        f = self.features(x)
        if not maps:
            return InferenceBatch(self.memory(f))
        score, near = self.memory.search(f)
        return InferenceBatch(score, self.explain(x, f, near))

    def explain(self, x: torch.Tensor, f: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
        """(B, H, W) where the image differs from ``near``, its nearest bank row (subclasses)."""
        raise NotImplementedError


def k_share_param() -> Any:
    """Every bank family's ``k_share``: a k that grows with the bank, so that a share of stray
    images hides a test image no more in a large bank than in a small one (0: the fixed ``k``)."""
    return param(
        0.0, before=0.0, help="k grows with the bank: at least this share of its images (0: k alone)"
    )


def k_max_param() -> Any:
    return param(20, before=20, help="the most images a k grown by k_share averages")


def bank_dims_param() -> Any:
    """Every bank family's ``dims``: rows kept on the training features' principal axes and the
    length left off them (cheaper distances, a larger bank in the same memory; 0: the features as
    they are). Off by default: 256 cost nothing on the whole-image validation protocols
    (Fashion-MNIST one-class 0.9480 -> 0.9478, emoji style 0.9806 -> 0.9801) but 0.017 on the
    avatars' local anomalies (0.831 -> 0.814) and 0.003 on Fashion-MNIST 8-vs-2 (see NOTES.md)."""
    return param(0, before=0, help="bank rows on this many principal axes of the training features (0: all)")


def bank_select_param(default: str = "coreset") -> Any:
    """Every bank family's ``select``: which ``max_bank`` images a bank keeps of more. ``coreset``
    for the whole-image banks (issue 24): on Fashion-MNIST's 8-vs-2 validation protocol (40,000
    training images, banks of 20,000) the default went 0.776 -> 0.817 AUROC (see NOTES.md)."""
    return param(
        default,
        before="spaced",
        choices=("spaced", "coreset"),
        help="beyond max_bank images: an evenly spaced subset, or a coreset that covers the rest (k-center)",
    )


def bank_k(k: int, share: float, cap: int, n: int) -> int:
    """The k a bank of ``n`` rows averages: ``k``, or with a ``share``, at least that share of the
    bank (rounded), at most ``cap`` (and never below ``k``)."""
    return k if share <= 0 else max(k, min(cap, round(share * n)))


@dataclass(frozen=True)
class PixelKNNParams(Params):
    k: int = param(3, help="training images whose distances are averaged")
    blur: float = param(1 / 28, help="the Gaussian blur's sigma, as a fraction of the shorter side")
    max_bank: int = param(20000, help="training images the bank keeps at most (which: select)")
    max_side: int = param(32, before=0, help="the bank's resolution: pixels a side at most (0: full)")
    k_share: float = k_share_param()
    k_max: int = k_max_param()
    dims: int = bank_dims_param()
    select: str = bank_select_param()


@dataclass(frozen=True)
class PixelKNNDerived(Derived):
    sigma: float  # the blur in pixels of the input
    blur_hw: tuple[int, int]  # the resolution the blur is applied at
    bank_hw: tuple[int, int]  # the bank's resolution


@register("pixel-knn", "distance to the k nearest training images after a light blur (no training)")
class PixelKNN(BankDetector):
    """Mean Euclidean distance to the ``k`` nearest training images, both lightly blurred.

    ``blur`` is the Gaussian's sigma as a fraction of the image side (1/28: one pixel on 28x28
    Fashion-MNIST, 2.3 on 64x64 faces), fixed in advance so one setting serves every resolution.
    After the blur, images are area-averaged down to at most ``max_side`` pixels a side (the blur
    has already removed what that drops), so the bank costs the same at 64x64 as at 256x256; images
    larger than twice that are first averaged down to ``2 * max_side`` and blurred there (with the
    blur scaled alike), which costs far less than blurring at full size and changes nothing the
    bank keeps. The bank holds at most ``max_bank`` training images (an evenly spaced subset beyond
    that). Derived and recorded: ``sigma``, the blur in pixels of the input (:func:`blur_sigma`),
    ``blur_hw``, the resolution the blur is applied at, and ``bank_hw``, the bank's resolution.
    """

    Params = PixelKNNParams
    Derived = PixelKNNDerived

    @classmethod
    def derive(cls, params: PixelKNNParams, shape: tuple[int, int, int]) -> PixelKNNDerived:
        side = params.max_side
        blur_hw = reduced_size(shape, 2 * side) if side > 0 else tuple(shape[:2])
        return PixelKNNDerived(blur_sigma(params.blur, shape), blur_hw, reduced_size(shape, side))

    latent = "the blurred (and reduced) pixels it compares"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        d = self.derived
        small = shrink(x.float(), d.blur_hw)
        sigma = d.sigma * d.blur_hw[0] / x.shape[-2]  # the same blur, in the smaller pixels
        return shrink(gaussian_blur(small, sigma), d.bank_hw).flatten(1)  # (B, C*h*w)

    map_meaning = (
        "the squared difference to the nearest training image per pixel (both blurred, at the "
        "bank's resolution), summed over channels"
    )

    def explain(self, x: torch.Tensor, f: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
        """The squared difference to the nearest bank image, summed over channels, at the bank's
        resolution and scaled up to the input's (its sum there is the squared distance)."""
        diff = (
            (f - near).pow(2).unflatten(1, (-1, *self.derived.bank_hw)).sum(1, keepdim=True)
        )  # (B, 1, h, w)
        return grow(diff, x.shape[-2:])[:, 0]

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        if prefix + "bank" in state_dict:  # format 1 kept the bank on the model itself
            state_dict[prefix + "memory.bank"] = state_dict.pop(prefix + "bank")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class FeatureBank(KNNBank):
    """A :class:`KNNBank` of L2-normalised learned features (distance to training features in the
    space a network learned)."""

    def __init__(self, k: int = 3, max_bank: int = 20000) -> None:
        super().__init__(k, max_bank, normalize=True)
