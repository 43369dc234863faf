"""``oddeye outliers``: every image of a set ranked by how odd it is among the others, with no
model to keep; exact and near duplicates grouped, unreadable files listed.

The score: a memory-bank detector (``default`` unless told otherwise) is built on the set
(nothing set aside), and each image's score is its *atypicality* in each of the model's banks
(:mod:`oddeye.detectors.screening`: the robust z-score of its distance to the bank's typical
"core" images, never counting itself), averaged over the banks. Higher = odder; about 0 is a
typical image, and a handful of strays of one kind still score high, since they are measured
against the typical images, not against each other. Banks keep at most ``max_bank`` images
(evenly spaced) and 1% of the images are held out (``HELD_OUT``); the images not in a bank are
measured against its core the same way, in batches.

A detector with a local view (``default``'s ``local_members``) also ranks the images by it
(:func:`local_atypicality`): a patch bank built on the set, each of its images scored with its own
patches left out, as a robust z-score over the set; an image typical as a whole ranks by the larger
of the two (:func:`fused`), so one with a small defect (a scratch, a stain) is found too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oddeye.config import TrainConfig
from oddeye.data.duplicates import Duplicates, find_duplicates
from oddeye.data.imageset import ImageSet, Unreadable
from oddeye.detectors import get_spec
from oddeye.detectors.base import AnomalyModel
from oddeye.detectors.ensemble import build_member
from oddeye.detectors.screening import MIN_ROWS, screen
from oddeye.errors import InputError, OddeyeError
from oddeye.estimator import Detector
from oddeye.evaluation import ImageRowsCsv
from oddeye.scoring import infer, iter_batches
from oddeye.training.device import choose_device, choose_precision
from oddeye.training.loop import fit_model

GALLERY = 32  # the oddest images the report shows, with their anomaly maps
HELD_OUT = 0.01  # images kept out of the banks (measured as the ones a full bank leaves out), on
# which an ensemble fits its map scales: with none, it would score every image once more
COLUMNS = ("Id", "score", "duplicate_group", "duplicate")
FAR = 1e4  # where a gallery image's own bank row is moved while its map is made


@dataclass
class OutlierResult:
    """What :func:`oddeye.outliers` found: one score per readable image, in the input's order
    (higher = odder), the duplicate groups, the files skipped as unreadable, and the gallery (the
    oddest images, with the model's anomaly maps)."""

    scores: np.ndarray  # (N,) float64
    duplicates: Duplicates
    source: str
    detector: str
    shape: tuple[int, int, int]  # (H, W, C) of every image
    paths: tuple[str, ...] | None = None  # a folder's files, relative to it
    unreadable: tuple[Unreadable, ...] = ()
    gallery: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    maps: np.ndarray | None = None  # (G, H, W) anomaly maps of the gallery's images
    map_meaning: str = ""
    local: bool = False  # whether a local view ranked the images too (see fused)
    out: Path | None = None  # the HTML report, once written
    csv: Path | None = None

    def oddest(self, n: int | None = None) -> np.ndarray:
        """The indices of the ``n`` oddest images (all by default), the oddest first."""
        return np.argsort(-self.scores, kind="stable")[:n]

    def name(self, i: int) -> str:
        """'#12' or '#12 sub/cat.png': how an image is named in text."""
        return f"#{i} {self.paths[i]}" if self.paths is not None else f"#{i}"

    def rows(self) -> Iterator[tuple[float, int | str, str]]:
        """The CSV's rows after Id (and path): score, duplicate_group ('' for none), duplicate."""
        group, kinds = self.duplicates.group, self.duplicates
        for i, s in enumerate(self.scores):
            yield float(s), int(group[i]) if group[i] >= 0 else "", kinds.kind(i)


def rank_outliers(
    data: ImageSet, detector: Detector, top: int = GALLERY, progress: bool = True
) -> OutlierResult:
    """Score every image of ``data`` by its atypicality among the others (see the module's
    docstring) with ``detector`` (unfitted; its contamination is set to 0 and its held-out share
    to ``HELD_OUT``), find the duplicates, and make the anomaly maps of the ``top`` oddest."""
    if len(data) < MIN_ROWS:
        expected = f"at least {MIN_ROWS} readable images (each is judged against the others)"
        raise InputError(data.source, expected, f"{len(data)}")
    det = Detector(detector.detector, detector.config, detector.params)  # the caller's stays as it is
    det.set_params(contamination="0", val_fraction=HELD_OUT, progress=progress)
    local, params = (), None
    if hasattr(get_spec(det.detector).params_cls, "local_members"):  # the local view is ranked apart
        probe = det.build(data.shape)
        local, params = tuple(probe.local_chosen()), probe.params
        det.set_params(local_members=(), large_local_members=())
    config = det.config
    model = det.build(data.shape)
    for bank, _ in model.banks():  # the typical core is the bank's densest part: a coreset would
        bank.select = "spaced"  # even the density out, so large sets keep an evenly spaced sample
    if not model.banks():
        raise OddeyeError(
            f"outliers: expected a memory-bank detector (default, pixel-knn, hog-knn, color-knn, "
            f"shape-knn, or an ensemble with one), found {det.detector}, which has no bank"
        )
    device = choose_device(config.device)
    torch.manual_seed(config.seed)
    fitted = fit_model(
        model, data, config, device, choose_precision(config.precision, device, model.cpu_bf16)
    )
    in_pass = np.delete(np.arange(len(data)), fitted.val_indices)  # the banks' positions index these
    scores = atypicality(model, data, in_pass, device, config.score_batch_size, progress)
    whole = scores
    view = local_atypicality(local, data, config, device, progress) if local else None
    if view is not None:  # an image odd in one place
        scores = fused(whole, view.z, params)
    duplicates = find_duplicates(data, config.score_batch_size, progress)
    result = OutlierResult(
        scores, duplicates, data.source, det.detector, data.shape, data.paths, data.unreadable
    )
    result.local = view is not None
    result.gallery = result.oddest(top)
    result.maps = gallery_maps(model, data, in_pass, device, result.gallery, config.score_batch_size)
    result.map_meaning = model.map_meaning
    if view is not None and result.maps is not None:  # the map of the view that ranked the image
        by_local = scores[result.gallery] > whole[result.gallery]
        found = view.maps(data, device, result.gallery[by_local], config.score_batch_size)
        if found is not None:
            result.maps[by_local] = found
            result.map_meaning += (
                "; for an image ranked by the local view, the patch member's map instead (each "
                "position's left-out z-score, the image's own patches out of the bank)"
            )
    return result


@torch.no_grad()
def atypicality(
    model: AnomalyModel,
    data: ImageSet,
    in_pass: np.ndarray,
    device: torch.device,
    batch_size: int,
    progress: bool = True,
) -> np.ndarray:
    """(N,) each image's atypicality in the fitted ``model``'s banks, averaged over them: a bank's
    own rows as screening measured them (never against themselves), the images a bank left out
    measured against its core, one batch at a time. ``in_pass``: the images of the pass the banks
    were built from, in order (what their ``positions`` index)."""
    measured = []
    for bank, features in model.banks():
        found = screen(bank.bank) if bank.positions is not None else None
        if found is not None:
            measured.append((bank, features, found))
    if not measured:
        raise OddeyeError(f"outliers: expected banks of at least {MIN_ROWS} images, found smaller ones")
    total = np.zeros(len(data))
    inside = np.zeros((len(measured), len(data)), bool)  # (banks, N): the image is a row of the bank
    for b, (bank, _, found) in enumerate(measured):
        total[in_pass[bank.positions]] += found.z.double().numpy()
        inside[b, in_pass[bank.positions]] = True
    outside = np.flatnonzero(~inside.all(0))
    if not len(outside):
        return total / len(measured)

    def measure(x: torch.Tensor) -> list[torch.Tensor]:
        return [found.measure(bank.centred(features(x))) for bank, features, found in measured]

    done = 0
    desc = "measuring the images outside the banks"
    for zs in iter_batches(measure, model, data, device, batch_size, outside, progress, desc):
        index = outside[done : done + len(zs[0])]
        done += len(index)
        for b, z in enumerate(zs):
            out = ~inside[b, index]
            total[index[out]] += z.double().numpy()[out]
    return total / len(measured)


def fused(whole: np.ndarray, local: np.ndarray, params: Any) -> np.ndarray:
    """The whole-image and local atypicality of each image joined: the larger of the whole-image
    z-score and the local one less ``local_gate`` (the detector's: ``default`` raises its local
    view's bar by it) per unit of the whole-image z-score above 0. Both are robust z-scores over
    the same set, so an image typical as a whole with one odd part ranks by that part, as
    ``default`` lets its local view speak for such images; an image odd as a whole ranks by the
    whole-image view. (Not monotone: a part as odd in an image somewhat odd as a whole counts
    less; see benchmarks/NOTES.md.) ``default``'s own half-weight excess ranked fewer of the
    planted local marks (0.16 against 0.36 of them first, avatars at 64 pixels)."""
    return np.maximum(whole, local - float(params.local_gate) * np.maximum(whole, 0.0))


@dataclass
class LocalView:
    """How odd each image is in one place (:func:`local_atypicality`): ``z`` (N,), and the patch
    members that found it, each with the set's index of every image its bank holds."""

    z: np.ndarray
    members: list[tuple[AnomalyModel, np.ndarray]]

    def maps(
        self, data: ImageSet, device: torch.device, index: np.ndarray, batch_size: int
    ) -> np.ndarray | None:
        """(len(index), H, W) the first member's maps of the images at ``index``, each compared
        with the bank less its own patches (None where that member cannot leave one out)."""
        if not len(index):
            return np.zeros((0, *data.shape[:2]), np.float32)
        model, held = self.members[0]
        if not hasattr(model, "left_out_maps"):
            return None
        where = {int(d): b for b, d in enumerate(held)}
        own = torch.tensor([where.get(int(i), -1) for i in index])
        maps, done = [], 0
        for x in iter_batches(lambda x: x, model, data, device, batch_size, index, False, "local maps"):
            found = model.left_out_maps(x, own[done : done + len(x)].to(x.device))
            if found is None:
                return None
            maps.append(found.float().cpu().numpy())
            done += len(x)
        return np.concatenate(maps)


def local_atypicality(
    members: Sequence[Any], data: ImageSet, config: TrainConfig, device: torch.device, progress: bool = True
) -> LocalView | None:
    """How odd each image is in one place, or None (no member can leave an image out): each local
    member (``patch-knn``) is built on the set, every image in its bank scored with its own
    patches left out (each position's scale refitted from all of those), the others against the
    bank; the robust z-score of those scores over the set (median, 1.4826 x median absolute
    deviation), averaged over the members."""
    per_member, fitted_members = [], []
    for member in members:
        model = build_member(member, data.shape)
        precision = choose_precision(config.precision, device, model.cpu_bf16)
        fitted = fit_model(model, data, config, device, precision, name="local view")
        positions = getattr(model, "positions_", None)
        if positions is None or not hasattr(model, "leave_one_out_scores"):
            continue
        in_pass = np.delete(np.arange(len(data)), fitted.val_indices)
        batch = config.score_batch_size
        held = in_pass[positions]  # a bank of patches, not of images, scores them anew
        images = partial(iter_batches, lambda x: x, model, data, device, batch, held, progress, "local view")
        loo = model.leave_one_out_scores(refit=True, images=images)
        if loo is None:
            continue
        scores = np.full(len(data), np.nan)
        scores[held] = loo.double().cpu().numpy()
        outside = np.flatnonzero(np.isnan(scores))
        if len(outside):
            scores[outside] = infer(
                model, data, device, batch, False, outside, progress, desc="local view"
            ).scores
        centre = np.median(scores)
        spread = 1.4826 * np.median(np.abs(scores - centre)) or float(np.std(scores)) or 1.0
        per_member.append((scores - centre) / spread)
        fitted_members.append((model, held))
    return LocalView(np.mean(per_member, 0), fitted_members) if per_member else None


@torch.no_grad()
def gallery_maps(
    model: AnomalyModel,
    data: ImageSet,
    in_pass: np.ndarray,
    device: torch.device,
    index: np.ndarray,
    batch_size: int,
) -> np.ndarray | None:
    """(G, H, W) the model's anomaly maps of the images at ``index``, each compared with the
    other images: while the maps are made, the gallery's own bank rows are moved out of reach, so
    that an image, and a few odd ones of a kind, do not explain each other away (in turns of at
    most half a bank's rows, so every image still has a bank to be compared with)."""
    if not len(index):
        return None
    turn = max(1, min(len(bank.bank) for bank, _ in model.banks()) // 2)
    maps = []
    for start in range(0, len(index), turn):
        part = index[start : start + turn]
        with _out_of_reach(model, in_pass, part):
            maps.append(infer(model, data, device, batch_size, True, part, progress=False).anomaly_maps)
    return np.concatenate(maps) if all(m is not None for m in maps) else None


@contextlib.contextmanager
def _out_of_reach(model: AnomalyModel, in_pass: np.ndarray, index: np.ndarray) -> Iterator[None]:
    """The banks' rows of the images at ``index`` moved far from every image, then put back."""
    moved = []
    try:
        for bank, _ in model.banks():
            rows = _rows_of(in_pass[bank.positions], index).to(bank.bank.device)
            if len(rows):
                moved.append((bank, rows, bank.bank[rows].clone()))
                bank.bank[rows] = FAR
        yield
    finally:
        for bank, rows, saved in moved:
            bank.bank[rows] = saved


def _rows_of(images: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """The bank rows holding the images at ``index`` (those the bank keeps), in ``index``'s order;
    ``images``: each row's image, ascending."""
    if not len(images):
        return torch.zeros(0, dtype=torch.long)
    at = np.minimum(np.searchsorted(images, index), len(images) - 1)
    return torch.from_numpy(at[images[at] == index])


def write_csv(path: str | Path, result: OutlierResult) -> Path:
    """``Id,score,duplicate_group,duplicate`` (``path`` after ``Id`` for a folder), one row per
    image in the input's order, atomically."""
    with ImageRowsCsv(path, COLUMNS, result.paths) as out:
        out.write_rows(result.rows())
    return Path(path)


def unreadable_text(unreadable: Sequence[Unreadable], limit: int = 5) -> str:
    """'2 unreadable files skipped: a.png (why), b.png (why)', the first ``limit`` named."""
    n = len(unreadable)
    named = ", ".join(f"{u.path} ({u.reason})" for u in unreadable[:limit])
    more = f", and {n - limit} more" if n > limit else ""
    return f"{n} unreadable file{'s' if n != 1 else ''} skipped: {named}{more}"
