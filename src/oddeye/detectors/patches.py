"""Patch-level memory banks: where in an image it is unlike the training images, not only whether.

A whole-image descriptor loses a defect covering 1% of a 256x256 image before it is compared.
``patch-knn`` keeps, for every position of a grid, the local descriptors of the training images
there, and compares each test patch with the training patches at the same and nearby positions
(objects that are roughly aligned: a part, a face, a board) and, with ``match="anywhere"``, with a
bounded sample of the training patches of every position (textures; ``match="auto"`` chooses from
the training images, as the default's local members do). Each position's distances are
put on one scale by the distances of the training images' own patches at that position (leave one
image out), so a patch of background that never varies and a patch of hair that always does are
judged alike. The map is that scaled distance at the input's resolution; the image score is the mean
of the map's highest cells.

Built in one streamed pass with no training; the bank is bounded by ``max_bank`` images at the
working resolution ``max_side``, whatever the images' size or number. The search reads each
position's bank rows once per batch of queries, a few positions at a time: it is bound by
arithmetic (about 80 GFLOP/s on two cores), not by memory traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, Batches, InferenceBatch, selected
from oddeye.detectors.memory import (
    bank_select_param,
    bank_shares,
    count_of,
    covering,
    gaussian_blur,
    grow,
    nearest,
    principal_axes,
    reduced_size,
    shrink,
    spaced,
)
from oddeye.detectors.params import Derived, Params, param
from oddeye.detectors.registry import register

FAR = 1e4  # descriptor value of a padded grid position: never anyone's nearest patch


def cell_means(x: torch.Tensor, cell: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H // cell, W // cell): mean colour of each ``cell`` x ``cell`` block."""
    return F.avg_pool2d(x, cell) if cell > 1 else x


def patch_grid(cells: torch.Tensor, span: int, step: int) -> torch.Tensor:
    """(B, C, h, w) cell means -> (B, gh, gw, C * span * span): the descriptor of every window of
    ``span`` x ``span`` cells, windows ``step`` cells apart (slices stacked: no unfold, so an
    exported graph runs the same operations)."""
    h, w = cells.shape[-2:]
    gh, gw = (h - span) // step + 1, (w - span) // step + 1
    parts = [
        cells[..., i : i + step * (gh - 1) + 1 : step, j : j + step * (gw - 1) + 1 : step]
        for i in range(span)
        for j in range(span)
    ]
    return torch.cat(parts, 1).permute(0, 2, 3, 1)  # (B, gh, gw, C*span*span)


def near_distances(
    queries: torch.Tensor,
    bank: torch.Tensor,
    norms: torch.Tensor,
    radius: int,
    exclude: torch.Tensor | None = None,
    owners: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, gh, gw) distance from each query patch to the nearest bank patch at the same position or
    one up to ``radius`` grid steps away.

    ``queries``: (B, gh, gw, d); ``bank``: (gh + 2r, gw + 2r, N, d), its padded positions far from
    everything, and ``norms`` its rows' squared lengths (gh + 2r, gw + 2r, N). ``exclude``: (B,)
    the bank image each query must not match (its own: leave one out), ``owners`` (N,) the image
    each bank column comes from (default: column j, image j).

    Computed a few positions at a time for every query of the batch, so each position's bank rows
    are read once per batch (not once per few queries: the search is bound by arithmetic, not by
    memory traffic), in blocks of bank images, so the temporaries stay small at any bank size.
    """
    if torch.compiler.is_exporting():  # one graph for any batch size: no blocks of queries
        return _near_graph(queries, bank, norms, radius, exclude, owners)
    b, gh, gw, _ = queries.shape
    n = bank.shape[2]
    wide = min(POSITIONS_BLOCK, gw)
    step = max(1, NEAR_BLOCK // (wide * min(n, NEAR_CHUNK)))  # queries per block
    q = queries.float().permute(1, 2, 0, 3)  # (gh, gw, b, d)
    best = torch.full((gh, gw, b), float("inf"), device=queries.device)
    own = None if exclude is None else exclude.to(queries.device)
    # column j is image j (a "near" bank): each query's own column is found once per block of
    # queries, not compared with every column at every position
    by_column = own is not None and (owners is None or torch.equal(owners.cpu(), torch.arange(n)))
    for q0 in range(0, b, step):
        q1 = min(b, q0 + step)
        mine = None if own is None else own[q0:q1].view(1, -1, 1)
        hits = _own_columns(own[q0:q1], n) if by_column else {}  # type: ignore[index]
        for y in range(gh):
            for x0 in range(0, gw, wide):
                x1 = min(gw, x0 + wide)
                block = q[y, x0:x1, q0:q1]  # (positions, queries, d)
                low = best[y, x0:x1, q0:q1]
                for dy in range(2 * radius + 1):
                    for dx in range(2 * radius + 1):
                        rows_all = bank[y + dy, x0 + dx : x1 + dx]  # (positions, N, d), a view
                        norms_all = norms[y + dy, x0 + dx : x1 + dx].unsqueeze(1)  # (positions, 1, N)
                        for start in range(0, n, NEAR_CHUNK):
                            part = _partial(
                                block, rows_all, norms_all, start, mine, owners, hits.get(start)
                            )  # (positions, queries)
                            torch.minimum(low, part, out=low)
    d2 = best + q.pow(2).sum(-1)
    return d2.clamp_min(0).sqrt().permute(2, 0, 1)


def anywhere_distances(
    queries: torch.Tensor,
    bank: torch.Tensor,
    norms: torch.Tensor,
    exclude: torch.Tensor | None = None,
    owners: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Q,) distance from each of the (Q, d) query patches to its nearest of the (N, d) ``bank``
    patches (``norms`` their squared lengths), not counting those ``owners`` (N,) says come from
    the image ``exclude`` (Q,) names for the query. In blocks of :data:`ANYWHERE_QUERIES` queries by
    :data:`ANYWHERE_ROWS` patches, a block of distances small enough to stay in the cache while its
    minimum is taken (with d = 16 or 24 the search is bound by reading the distances, not computing
    them: 38,000 patches against 50,000 took 0.8 s in such blocks, 2.4 s in blocks four times larger,
    on two cores)."""
    q = queries.float()
    best = torch.full((len(q),), float("inf"), device=q.device)
    starts = range(0, bank.shape[0], ANYWHERE_ROWS)
    spans = None  # each block of rows' least and greatest owner: most blocks hold none of a query's image
    if exclude is not None and owners is not None and len(owners):
        spans = [
            (int(owners[r : r + ANYWHERE_ROWS].min()), int(owners[r : r + ANYWHERE_ROWS].max()))
            for r in starts
        ]
    for s in range(0, len(q), ANYWHERE_QUERIES):
        block, low = q[s : s + ANYWHERE_QUERIES], best[s : s + ANYWHERE_QUERIES]
        mine = None if exclude is None else exclude[s : s + ANYWHERE_QUERIES].view(-1, 1).to(q.device)
        least, most = (int(mine.min()), int(mine.max())) if mine is not None else (0, -1)
        for k, r in enumerate(starts):
            rows = bank[r : r + ANYWHERE_ROWS].float()
            part = torch.addmm(norms[r : r + ANYWHERE_ROWS].view(1, -1), block, rows.T, alpha=-2)
            if spans is not None and spans[k][0] <= most and least <= spans[k][1]:
                same = mine == owners[r : r + ANYWHERE_ROWS].view(1, -1).to(q.device)  # type: ignore[union-attr,operator]
                part.masked_fill_(same, float("inf"))
            torch.minimum(low, part.amin(1), out=low)
    return (best + q.pow(2).sum(-1)).clamp_min(0).sqrt()


def _own_columns(own: torch.Tensor, n: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per block of :data:`NEAR_CHUNK` bank columns (by its first), the queries whose own image
    ``own`` (B,) is among its columns, and that column within the block (column j: image j)."""
    hits = {}
    for start in range(0, n, NEAR_CHUNK):
        local = own - start
        inside = ((local >= 0) & (local < min(NEAR_CHUNK, n - start))).nonzero().view(-1)
        hits[start] = (inside, local[inside])
    return hits


def _partial(
    q: torch.Tensor,
    rows_all: torch.Tensor,
    norms_all: torch.Tensor,
    start: int,
    own: torch.Tensor | None,
    owners: torch.Tensor | None,
    hits: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(P, B) the least |b|^2 - 2 q.b of queries ``q`` (P, B, d) over the bank rows ``start`` to
    ``start + NEAR_CHUNK`` of ``rows_all`` (P, N, d), not counting the rows of the images ``own``
    (1, B, 1) names; or, where given, the ``hits`` of :func:`_own_columns` (queries, their own
    column in this block): the same, without comparing every column. |q|^2, the same for every
    bank row, is added after the minimum."""
    rows = rows_all[:, start : start + NEAR_CHUNK].float()  # a stored float16 bank: float32 math
    part = torch.baddbmm(norms_all[..., start : start + NEAR_CHUNK], q, rows.transpose(1, 2), alpha=-2)
    if hits is not None:
        part[:, hits[0], hits[1]] = float("inf")
    elif own is not None:
        index = (
            torch.arange(start, start + rows.shape[1])
            if owners is None
            else owners[start : start + rows.shape[1]]
        )
        part = part.masked_fill(own == index.to(part.device).view(1, 1, -1), float("inf"))
    return part.amin(-1)


def _near_graph(
    queries: torch.Tensor,
    bank: torch.Tensor,
    norms: torch.Tensor,
    radius: int,
    exclude: torch.Tensor | None,
    owners: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`near_distances` as one graph (export): every position at once."""
    _, gh, gw, _ = queries.shape
    q = queries.float().permute(1, 2, 0, 3).flatten(0, 1)  # (gh*gw, b, d)
    best = torch.full(q.shape[:2], float("inf"), device=queries.device)
    own = None if exclude is None else exclude.view(1, -1, 1).to(queries.device)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            rows_all = bank[dy : dy + gh, dx : dx + gw].flatten(0, 1)  # (gh*gw, N, d)
            norms_all = norms[dy : dy + gh, dx : dx + gw].flatten(0, 1).unsqueeze(1)  # (gh*gw, 1, N)
            for start in range(0, bank.shape[2], NEAR_CHUNK):
                best = torch.minimum(best, _partial(q, rows_all, norms_all, start, own, owners))
    d2 = best + q.pow(2).sum(-1)
    return d2.clamp_min(0).sqrt().view(gh, gw, -1).permute(2, 0, 1)


def candidate_distances(
    queries: torch.Tensor, bank: torch.Tensor, norms: torch.Tensor, radius: int, candidates: torch.Tensor
) -> torch.Tensor:
    """(B, gh, gw) as :func:`near_distances`, each query image compared with its own ``candidates``
    (B, K) bank images only (its nearest by layout): K bank images gathered per query, so the cost
    does not grow with the bank."""
    b, gh, gw, _ = queries.shape
    if torch.compiler.is_exporting():
        return _candidate_block(queries, bank, norms, radius, candidates)
    step = max(1, NEAR_BLOCK // max(1, bank.shape[0] * bank.shape[1] * candidates.shape[1] * bank.shape[3]))
    return torch.cat(
        [
            _candidate_block(queries[q0 : q0 + step], bank, norms, radius, candidates[q0 : q0 + step])
            for q0 in range(0, b, step)
        ]
    )


def _candidate_block(
    queries: torch.Tensor, bank: torch.Tensor, norms: torch.Tensor, radius: int, candidates: torch.Tensor
) -> torch.Tensor:
    b, gh, gw, d = queries.shape
    k = candidates.shape[1]
    big_h, big_w = bank.shape[:2]
    pick = candidates.reshape(-1).to(bank.device)
    rows = bank.index_select(2, pick).float().view(big_h, big_w, b, k, d)
    lengths = norms.index_select(2, pick).view(big_h, big_w, b, k)
    q = queries.float().permute(1, 2, 0, 3).unsqueeze(-1)  # (gh, gw, b, d, 1)
    best = torch.full((gh, gw, b), float("inf"), device=queries.device)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            dots = (rows[dy : dy + gh, dx : dx + gw] @ q).squeeze(-1)  # (gh, gw, b, k)
            best = torch.minimum(best, (lengths[dy : dy + gh, dx : dx + gw] - 2 * dots).amin(-1))
    d2 = best + q.squeeze(-1).pow(2).sum(-1)
    return d2.clamp_min(0).sqrt().permute(2, 0, 1)


def layout(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * 16 * 16): the image's colours on a 16x16 grid, which finds the
    training images laid out most alike (the candidates a patch is compared with)."""
    return F.adaptive_avg_pool2d(x.float(), LAYOUT_SIDE).flatten(1)


LAYOUT_SIDE = 16


NEAR_BLOCK = 1 << 23  # distances per block
NEAR_CHUNK = 512  # bank images per distance block
POSITIONS_BLOCK = 2  # grid positions per distance block (eager search; 2 x 512 measured fastest)
ANYWHERE_QUERIES, ANYWHERE_ROWS = 512, 2048  # an "anywhere" search's distance block (measured fastest)


def in_batch(index: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """The entries of the ascending ``index`` (positions in a whole pass) that fall in the batch of
    ``count`` rows from ``start``, as positions in that batch."""
    return index[(index >= start) & (index < start + count)] - start


def pad_positions(bank: torch.Tensor, radius: int) -> torch.Tensor:
    """(gh, gw, N, D) -> (gh + 2r, gw + 2r, N, D), the new positions :data:`FAR` away from every patch."""
    if radius == 0:
        return bank
    return F.pad(bank.permute(2, 3, 0, 1), (radius, radius, radius, radius), value=FAR).permute(2, 3, 0, 1)


def compact_images(bank: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(H, W, k, D) the images ``index`` (k increasing indices) of a (H, W, N, D) bank, moved to
    the front of the bank's own memory, position by position: no second bank exists at any moment
    (an ensemble's screening takes a few images out of a bank of gigabytes). Each position's kept
    rows are gathered (a (k, D) copy) before they are written at offsets no later than their own,
    and never past the next position's rows, so no row is overwritten before it is read. The result
    is a contiguous view of the first part of that memory; the rest (the dropped share) stays
    allocated with it."""
    h, w, n, d = bank.shape
    k = len(index)
    if not bank.is_contiguous():
        return bank.index_select(2, index).contiguous()
    rows = bank.view(h * w, n, d)
    out = bank.view(-1)[: h * w * k * d].view(h * w, k, d)
    for p in range(h * w):
        out[p].copy_(rows[p].index_select(0, index))
    return out.view(h, w, k, d)


@dataclass(frozen=True)
class PatchKNNParams(Params):
    max_side: int = param(64, help="the working resolution: pixels a side at most (0: full)")
    patches: tuple[int, ...] = param((4, 8), help="patch sides in working pixels (one grid each)")
    span: int = param(4, help="cells a patch side is described by (its colour means)")
    stride: int = param(2, help="cells between neighbouring patches of a grid")
    blur: float = param(0.5, help="Gaussian blur before the cells, in working pixels")
    dims: int = param(16, help="descriptor dimensions kept (principal axes of the training patches; 0: all)")
    match: str = param(
        "near",
        help="where a patch's nearest is looked for: near its place (aligned objects), anywhere (textures), "
        "or auto: anywhere where the patches' place explains little of how they vary (see ALIGNED)",
        choices=("near", "anywhere", "auto"),
    )
    radius: int = param(1, help="near: grid steps around a patch's own position searched for its nearest")
    radius_rule: str = param(
        "fixed",
        before="fixed",
        help="near: fixed, radius as given; or auto: 0 where the training images are registered to the "
        "working pixel (most of them fit their mean image best unshifted: see REGISTERED), radius elsewhere "
        "(an object shot again and again, never at exactly the same place)",
        choices=("fixed", "auto"),
    )
    max_patches: int = param(50_000, help="anywhere: training patches the bank keeps (evenly spaced)")
    candidates: int = param(
        0, help="near: compare with the patches of this many training images laid out most alike (0: all)"
    )
    max_bank: int = param(3000, help="training images whose patches the bank keeps at most (evenly spaced)")
    select: str = bank_select_param("spaced")  # a cover keeps rare faces, not the patches most faces share
    references: int = param(
        200, help="bank images whose own patches (left out in turn) set each position's scale"
    )
    top: float = param(0.02, help="image score: mean of this share of the map's highest cells")


@dataclass(frozen=True)
class PatchKNNDerived(Derived):
    work_hw: tuple[int, int]  # the working resolution
    grids: tuple[tuple[int, int, int, int], ...]  # per patch size: (cell, span, gh, gw) at work_hw


BANK_DTYPE = torch.float16  # a "near" bank's descriptors, as stored
# match="auto": the training patches are compared near their place where their place explains at
# least this share of their descriptors' variance (objects roughly aligned), else anywhere (a
# texture, or a scene cropped anywhere). Measured on the first grid of the default's members over
# ALIGN_IMAGES training images: avatars 0.41-0.42, Fashion-MNIST's classes 0.31-0.74 (its 8-class
# sets 0.25-0.34), digits 0.67-0.81, emoji categories 0.085-0.45; crops of scikit-image's brick,
# grass and gravel 0.003-0.007, of its photographs 0.016-0.054: the cut sits between the textures
# and the least aligned objects (see NOTES.md)
ALIGNED = 0.03
ALIGN_IMAGES = 256
# radius_rule="auto": the training images are registered where at least this share of them fits the
# images' mean best with no shift (of up to REGISTER_SHIFT working pixels each way; gray, each image
# less its mean, by normalised correlation). Measured by `default`'s large member (128 working pixels):
# the avatars (drawn at the same place to the pixel, their hair and clothes varying) 0.65-0.68; one
# photograph shot again and again (`bench objects`), turned, scaled and shifted by up to 0.5% / 1% /
# 2% of its side: 0.55-0.63 / 0.14-0.17 / 0.02-0.04; shot still: 1.0 (see NOTES.md)
REGISTERED = 0.5
REGISTER_SHIFT = 3
PCA_ROWS = 50_000  # training patches the principal axes are fitted on, per patch size


@register(
    "patch-knn", "distance of every local patch to the training patches at and near its place (no training)"
)
class PatchKNN(AnomalyModel):
    """Local descriptors (the mean colours of ``span`` x ``span`` cells of a patch, after a light
    blur, projected on the training patches' ``dims`` principal axes) on a grid per patch size,
    patches ``stride`` cells apart, at the working resolution ``max_side``. A test patch's distance
    is to the nearest training patch within ``radius`` grid steps of its position, over a bank of at
    most ``max_bank`` training images; each position's distances are standardised by those of
    ``references`` bank images' own patches against the rest of the bank (mean and spread per
    position; the spread floored by its median over positions, so a position that never varies does
    not turn noise into alarms). The map averages the patch sizes' standardised grids, scaled up to
    the input's size; the score is the mean of its highest ``top`` share of cells.
    Derived and recorded: ``work_hw`` and each patch size's cell and grid.

    ``match="auto"`` measures, before the bank is built, how much of the training patches' variance
    their place explains (:meth:`alignment`): aligned objects are compared near their place, a
    texture anywhere; the measure is kept with the model, and :attr:`matching` says what was chosen.

    A "near" bank holds every patch of its images in float16 (distances in float32), so new normal
    images join it (``oddeye update``: :meth:`absorb`) and an ensemble's screening can take images
    out of it (:meth:`set_aside_images`), the scales refit each time. An "anywhere" bank holds an
    even sample of the patches, each with the image it came from: new images' patches join the
    sample within ``max_patches`` and set-aside images' patches leave it, the scales as built.
    Alone it sets no image aside:
    screened by their whole-image layout, the avatars' rarest normal faces went (14% of the bank),
    and with them the patches the bank needs: image AUROC 0.963 -> 0.850 (see NOTES.md)."""

    trainable = False
    latent = "its patches' mean colours"
    map_meaning = (
        "how far each patch is from the nearest training patch at and near its place, in spreads "
        "of the training images' own distances there"
    )
    Params = PatchKNNParams
    Derived = PatchKNNDerived
    BUFFERS = ("bank", "norms", "owners", "centre", "axes", "mean", "spread")
    # and ``layouts``: the bank images' :func:`layout` (candidates > 0)

    def __init__(
        self,
        shape: tuple[int, int, int],
        params: PatchKNNParams | None = None,
        derived: PatchKNNDerived | None = None,
    ) -> None:
        super().__init__(shape, params, derived)
        for i in range(len(self.derived.grids)):
            for name in self.BUFFERS:
                self.register_buffer(f"{name}{i}", torch.zeros(0))
        self.register_buffer("layouts", torch.zeros(0))
        self.match_: str | None = None  # match="auto": "near" or "anywhere", once the images chose
        if self.params.match == "auto":  # the share of the patches' variance their place explains
            self.register_buffer("aligned", torch.zeros(0))
        self.reach_: int | None = None  # radius_rule="auto": the radius the images chose
        if self.params.radius_rule == "auto":  # the share of the images that fit their mean unshifted
            self.register_buffer("registered", torch.zeros(0))
        self.positions_: np.ndarray | None = None  # after fit_end: each bank image's place in the pass
        self.reference_: torch.Tensor | None = None  # after fit_end: the references' own scores

    @classmethod
    def derive(cls, params: PatchKNNParams, shape: tuple[int, int, int]) -> PatchKNNDerived:
        if not params.patches:
            raise ValueError("patch-knn needs at least one patch size")
        hw = reduced_size(shape, params.max_side)
        grids = []
        for patch in params.patches:  # patches larger than a small image shrink to fit it
            cell = max(1, min(patch, *hw) // params.span)
            cells = (hw[0] // cell, hw[1] // cell)
            span = min(params.span, *cells)
            gh, gw = ((side - span) // params.stride + 1 for side in cells)
            grids.append((cell, span, gh, gw))
        return PatchKNNDerived(hw, tuple(grids))

    def _get(self, name: str, i: int) -> torch.Tensor:
        return getattr(self, f"{name}{i}")

    @property
    def matching(self) -> str:
        """Where a patch's nearest is looked for: ``match``, or with ``"auto"`` what the training
        images chose (:meth:`alignment`; "near" before the bank is built)."""
        return self.params.match if self.params.match != "auto" else self.match_ or "near"

    def compares_places(self) -> bool:
        return self.matching == "near"

    @property
    def reach(self) -> int:
        """The grid steps searched around a patch's place: ``radius``, or with ``radius_rule="auto"``
        0 where the training images were found registered (:meth:`registration`)."""
        return self.params.radius if self.reach_ is None else self.reach_

    def _choose_reach(self) -> None:
        """``reach_`` from the measured ``registered`` share (radius_rule="auto")."""
        registered = self.registered.numel() and float(self.registered) >= REGISTERED
        self.reach_ = 0 if registered else self.params.radius

    def _choose_match(self) -> None:
        """``match_`` from the measured ``aligned`` share (match="auto")."""
        self.match_ = "anywhere" if self.aligned.numel() and float(self.aligned) < ALIGNED else "near"

    def _sample_images(self, batches: Batches, keep: np.ndarray | None) -> Iterator[torch.Tensor]:
        """Batches of an evenly spaced sample of at most :data:`ALIGN_IMAGES` of the images ``keep``
        names (the first ones, in a pass of unknown length)."""
        sample = None if keep is None else keep[spaced(len(keep), ALIGN_IMAGES)]
        seen = 0
        for x in batches() if sample is None else selected(batches, sample):
            yield x[: ALIGN_IMAGES - seen]
            seen += len(x[: ALIGN_IMAGES - seen])
            if seen >= ALIGN_IMAGES:
                break

    @torch.no_grad()
    def alignment(self, batches: Batches, keep: np.ndarray | None) -> float:
        """The share of the first grid's descriptor variance that the patches' place explains, over
        a sample of the images (:meth:`_sample_images`): near 1 where every image shows the same
        thing at the same place, near 0 for a texture."""
        at_place: torch.Tensor | float = 0.0  # sums, batch by batch
        squares, seen = 0.0, 0
        for x in self._sample_images(batches, keep):
            d = self.raw_descriptors(self.working(x))[0]
            d = d.flatten(1, 2)  # (b, places, D)
            at_place = at_place + d.sum(0, dtype=torch.float64)
            squares += float(d.pow(2).sum(dtype=torch.float64))
            seen += len(d)
        if not isinstance(at_place, torch.Tensor):
            return 1.0
        at_place = at_place / seen  # each place's mean descriptor
        centre = at_place.mean(0)
        between = float((at_place - centre).pow(2).sum(-1).mean())
        total = squares / (seen * at_place.shape[0]) - float(centre.pow(2).sum())
        return between / total if total > 0 else 1.0

    @torch.no_grad()
    def registration(self, batches: Batches, keep: np.ndarray | None) -> float:
        """The share of a sample of the images (:meth:`_sample_images`) that fit the sample's mean
        image best with no shift, among shifts of up to :data:`REGISTER_SHIFT` working pixels each
        way (gray at the working size, each image less its mean, normalised correlation with the
        mean's interior): near 1 where the images are drawn or shot at the same place to the pixel.
        Two passes over the sample (its mean, then each batch's fits): memory of one batch."""

        def gray(x: torch.Tensor) -> torch.Tensor:
            g = self.working(x).mean(1, keepdim=True)
            return g - g.mean((2, 3), keepdim=True)

        total: torch.Tensor | float = 0.0
        count = 0
        for x in self._sample_images(batches, keep):
            total, count = total + gray(x).sum(0, keepdim=True), count + len(x)
        h, w = self.derived.work_hw
        r = min(REGISTER_SHIFT, (min(h, w) - 1) // 4)
        if count < 2 or r < 1 or not isinstance(total, torch.Tensor):
            return 1.0
        core = (total / count)[..., r : h - r, r : w - r]

        def fit(g: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
            window = g[..., r + dy : h - r + dy, r + dx : w - r + dx]
            return (window * core).sum((1, 2, 3)) / window.pow(2).sum((1, 2, 3)).sqrt().clamp_min(1e-6)

        unshifted, fitting = (2 * r + 1) * r + r, 0
        for x in self._sample_images(batches, keep):
            g = gray(x)
            fits = torch.stack([fit(g, dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)], 1)
            fitting += int((fits.argmax(1) == unshifted).sum())
        return fitting / count

    def working(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised batch at the working resolution (what descriptors and layouts are made of)."""
        return shrink(x.float(), self.derived.work_hw)

    def raw_descriptors(self, small: torch.Tensor) -> list[torch.Tensor]:
        """Per patch size, (B, gh, gw, D) cell-mean descriptors of a batch at the working size."""
        p = self.params
        small = gaussian_blur(small, p.blur)
        return [patch_grid(cell_means(small, c), span, p.stride) for c, span, _, _ in self.derived.grids]

    def descriptors(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per patch size, (B, gh, gw, d) descriptors on the bank's principal axes."""
        return self._projected(self.raw_descriptors(self.working(x)))

    def _projected(self, raw: list[torch.Tensor]) -> list[torch.Tensor]:
        """Raw descriptors on each grid's principal axes (less the centre alone where every
        dimension is kept as it is: no product with the identity)."""
        out = []
        for i, r in enumerate(raw):
            kept = not torch.compiler.is_exporting() and self._keeps_every_dim(i)
            out.append(
                r - self._get("centre", i) if kept else (r - self._get("centre", i)) @ self._get("axes", i)
            )
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([d.flatten(1) for d in self.descriptors(x)], 1)

    @torch.no_grad()
    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        n, bound = count_of(batches), self.params.max_bank
        coreset = self.params.select == "coreset" and n is not None and n > bound
        keep = None if n is None else covering(batches, bound) if coreset else spaced(n, bound)
        if self.params.match == "auto":
            self.aligned = torch.tensor(self.alignment(batches, keep))
            self._choose_match()
        if self.params.radius_rule == "auto":
            self.registered = torch.tensor(self.registration(batches, keep))
            self._choose_reach()
        near = self.matching == "near"
        if keep is not None:  # a known pass: the bank stored projected, never every raw descriptor
            self._build_near(batches, keep) if near else self._build_anywhere(batches, keep)
            return
        # a pass of unknown length: the raw descriptors, then the axes
        parts: list[list[torch.Tensor]] = [[] for _ in self.derived.grids]
        layouts: list[torch.Tensor] = []
        seen = 0
        for x in batches() if keep is None else selected(batches, keep):  # only the kept images read
            seen += len(x)
            small = self.working(x)
            for i, d in enumerate(self.raw_descriptors(small)):  # (b, gh, gw, D) until the axes are known
                parts[i].append(d.half())
            if self.params.candidates > 0:
                layouts.append(layout(small))
        after = None  # a pass of unknown length: the bank's images picked once it is over
        if keep is None and seen > self.params.max_bank:
            after = torch.from_numpy(spaced(seen, self.params.max_bank))
        self.positions_ = (
            keep if keep is not None else after.numpy() if after is not None else np.arange(seen)
        )
        if layouts:
            self.layouts = torch.cat(layouts) if after is None else torch.cat(layouts)[after]
        anywhere = []  # "anywhere": each grid's reference distances, as its scale is fitted
        for i in range(len(self.derived.grids)):
            raw, parts[i] = torch.cat(parts[i]), []
            raw = raw if after is None else raw[after]
            store = self._store_of(i, raw) if near else None
            if store is not None:
                sample = self._sample(i, store)
            else:
                flat = raw.flatten(0, 2)
                sample = flat[torch.from_numpy(spaced(len(flat), PCA_ROWS))]
            centre, axes = principal_axes(sample, self.params.dims)
            setattr(self, f"centre{i}", centre)
            setattr(self, f"axes{i}", axes)
            del sample
            if near:
                self._set_bank(i, self._projected_store(i, store))
                continue
            own = torch.cat([(c.float() - centre) @ axes for c in raw.split(256)])  # (N, gh, gw, d)
            del raw
            n, gh, gw, d = own.shape
            pick = torch.from_numpy(spaced(n * gh * gw, self.params.max_patches))
            self._set_anywhere(i, own.reshape(-1, d)[pick], pick // (gh * gw))
            refs = torch.from_numpy(spaced(len(own), self.params.references))
            anywhere.append(
                self._fit_scale(i, own[refs], refs, None)
            )  # a sample of patches: scale from these
            del own
        if near:
            self._fit_scales()
        else:
            self.reference_ = self._scored(anywhere)[0]

    def fit_end_work(self) -> str:
        return "patch memory bank"

    def _build_near(self, batches: Batches, keep: np.ndarray) -> None:
        """A "near" bank of the images at ``keep`` in two passes over them: the first takes the
        raw descriptors :meth:`_sample` would take from a store of them all (as stored, float16)
        and fits each grid's principal axes; the second writes each batch's descriptors on those
        axes straight into the bank. The same bank as projecting a full raw store, without the
        raw store: at 128 working pixels it would be 1.4 GB for 3,000 images, twice the bank."""
        n, grids = len(keep), self.derived.grids
        picks = []  # per grid: (image, row, column) of each sampled patch, image by image
        for _, _, gh, gw in grids:
            k = torch.from_numpy(spaced(n * gh * gw, PCA_ROWS))
            image, place = k // (gh * gw), k % (gh * gw)
            picks.append((image, place // gw, place % gw))
        samples: list[list[torch.Tensor]] = [[] for _ in grids]
        layouts: list[torch.Tensor] = []
        placed = 0
        for x in selected(batches, keep):
            small = self.working(x)
            for i, d in enumerate(self.raw_descriptors(small)):
                image, row, column = picks[i]
                here = (image >= placed) & (image < placed + len(d))
                samples[i].append(d[image[here] - placed, row[here], column[here]].to(BANK_DTYPE))
            placed += len(small)
            if self.params.candidates > 0:
                layouts.append(layout(small))
        for i, parts in enumerate(samples):
            centre, axes = principal_axes(torch.cat(parts), self.params.dims)
            setattr(self, f"centre{i}", centre)
            setattr(self, f"axes{i}", axes)
        del samples
        banks = [self._empty_store(i, n, self._get("axes", i).shape[1]) for i in range(len(grids))]
        placed = 0
        for x in selected(batches, keep):
            for i, d in enumerate(self.raw_descriptors(self.working(x))):
                # as stored (float16), then on the axes a grid row at a time, as a raw store was
                inner = self._interior(i, banks[i])[:, :, placed : placed + len(d)]
                raw = d.to(BANK_DTYPE).permute(1, 2, 0, 3)
                for y in range(raw.shape[0]):
                    inner[y].copy_(self._on_axes(i, raw[y]))
            placed += len(x)
        self.positions_ = keep
        if layouts:
            self.layouts = torch.cat(layouts)
        for i, bank in enumerate(banks):
            self._set_bank(i, bank)
        self._fit_scales()

    def _build_anywhere(self, batches: Batches, keep: np.ndarray) -> None:
        """An "anywhere" bank of the images at ``keep`` in one pass: of each batch's raw descriptors
        (as stored, float16) only the patches the axes are fitted on, the evenly spaced patches the
        bank keeps and the ``references`` images' are kept; then each grid's axes, those patches on
        them, and the scales. The bank a store of every raw descriptor gives (a pass of unknown
        length), without that store: at 128 working pixels it would be 1.4 GB for 3,000 images."""
        n, grids = len(keep), self.derived.grids
        refs = torch.from_numpy(spaced(n, self.params.references))
        wanted = [
            (
                torch.from_numpy(spaced(n * gh * gw, PCA_ROWS)),
                torch.from_numpy(spaced(n * gh * gw, self.params.max_patches)),
            )
            for _, _, gh, gw in grids
        ]
        parts: list[tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = [
            ([], [], []) for _ in grids
        ]
        placed = 0
        for x in selected(batches, keep):
            for i, d in enumerate(self.raw_descriptors(self.working(x))):
                d = d.to(BANK_DTYPE)
                places, flat = d.shape[1] * d.shape[2], d.flatten(0, 2)
                for found, index in zip(parts[i][:2], wanted[i], strict=True):
                    found.append(flat[in_batch(index, placed * places, len(flat))])
                parts[i][2].append(d[in_batch(refs, placed, len(d))])
            placed += len(x)
        self.positions_ = keep
        distances = []
        for i, (_, _, gh, gw) in enumerate(grids):
            sample, rows, own = (torch.cat(found) for found in parts[i])
            centre, axes = principal_axes(sample, self.params.dims)
            setattr(self, f"centre{i}", centre)
            setattr(self, f"axes{i}", axes)
            self._set_anywhere(i, (rows.float() - centre) @ axes, wanted[i][1] // (gh * gw))
            distances.append(self._fit_scale(i, (own.float() - centre) @ axes, refs, None))
        self.reference_ = self._scored(distances)[0]

    def _on_axes(self, i: int, raw: torch.Tensor) -> torch.Tensor:
        """Stored raw descriptors (float16) of grid ``i`` on its principal axes, as the bank keeps
        them (float16): less the centre only, where every dimension is kept."""
        centre, axes = self._get("centre", i), self._get("axes", i)
        if self._keeps_every_dim(i):
            return (raw.float() - centre).to(BANK_DTYPE)
        return ((raw.float() - centre) @ axes).to(BANK_DTYPE)

    def _keeps_every_dim(self, i: int) -> bool:
        """Whether grid ``i``'s axes keep every raw dimension (:func:`principal_axes` gives the
        identity then: only the centre is taken off)."""
        axes = self._get("axes", i)
        return axes.shape[0] == axes.shape[1]

    def _empty_store(self, i: int, n: int, dim: int | None = None) -> torch.Tensor:
        """(gh + 2r, gw + 2r, n, dim) float16, every value :data:`FAR`: the place of grid ``i``'s
        descriptors of ``n`` images (``dim``: the raw ones' D by default), positions first, padded
        for the search around them."""
        r, (_, span, gh, gw) = self.reach, self.derived.grids[i]
        dim = self.shape[2] * span * span if dim is None else dim
        return torch.full((gh + 2 * r, gw + 2 * r, n, dim), FAR, dtype=BANK_DTYPE)

    def _interior(self, i: int, store: torch.Tensor) -> torch.Tensor:
        """(gh, gw, n, D) the grid's own positions of a padded store (a view)."""
        r, (_, _, gh, gw) = self.reach, self.derived.grids[i]
        return store[r : r + gh, r : r + gw]

    def _store_of(self, i: int, raw: torch.Tensor) -> torch.Tensor:
        """A padded store of (N, gh, gw, D) raw descriptors."""
        store = self._empty_store(i, len(raw))
        self._interior(i, store).copy_(raw.permute(1, 2, 0, 3))
        return store

    def _sample(self, i: int, store: torch.Tensor) -> torch.Tensor:
        """(PCA_ROWS, D) the raw descriptors the axes are fitted on: evenly spaced over the images'
        patches, image by image (rows as ``raw.flatten(0, 2)`` would order them)."""
        inner = self._interior(i, store)
        gh, gw, n = inner.shape[:3]
        k = torch.from_numpy(spaced(n * gh * gw, PCA_ROWS))
        image, place = k // (gh * gw), k % (gh * gw)
        return inner[place // gw, place % gw, image]

    def _projected_store(self, i: int, store: torch.Tensor) -> torch.Tensor:
        """The bank of grid ``i``: its raw store on the principal axes, a grid row at a time (in the
        store itself where every dimension is kept: no second copy), float16 (half the memory;
        distances are computed in float32 from those values)."""
        inner, axes = self._interior(i, store), self._get("axes", i)
        if self._keeps_every_dim(i):
            for y in range(inner.shape[0]):
                inner[y] = self._on_axes(i, inner[y])
            return store
        bank = self._empty_store(i, inner.shape[2], axes.shape[1])
        for y, row in enumerate(self._interior(i, bank)):
            row.copy_(self._on_axes(i, inner[y]))
        return bank

    def _set_bank(self, i: int, bank: torch.Tensor) -> None:
        """Bank ``i`` ("near": its images in order), its rows' squared lengths and owners."""
        setattr(self, f"bank{i}", bank)
        setattr(
            self, f"norms{i}", torch.stack([row.float().pow(2).sum(-1) for row in bank])
        )  # a row at a time
        setattr(self, f"owners{i}", torch.arange(bank.shape[2]))

    def _set_anywhere(self, i: int, rows: torch.Tensor, owners: torch.Tensor) -> None:
        """The "anywhere" bank of patch size ``i``: (P, d) patches on the axes, each from the bank
        image ``owners`` names, and their squared lengths."""
        bank = rows.view(1, 1, -1, rows.shape[-1]).contiguous()
        setattr(self, f"bank{i}", bank)
        setattr(self, f"norms{i}", bank.float().pow(2).sum(-1))
        setattr(self, f"owners{i}", owners)

    def _candidates(self, layouts: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, K) the bank images laid out most like each query (not the one ``exclude`` names), or
        None: every bank image is a candidate."""
        k = min(self.params.candidates, len(self.layouts) - (exclude is not None))
        if self.matching != "near" or self.params.candidates <= 0 or k < 1:
            return None
        rows = nearest(layouts, self.layouts, k + (exclude is not None))[1]
        if exclude is None:
            return rows
        others = rows != exclude.view(-1, 1).to(rows.device)
        order = torch.argsort((~others).to(torch.int8), dim=1, stable=True)  # itself, if there, last
        return rows.gather(1, order)[:, :k]

    def _distances(
        self,
        i: int,
        d: torch.Tensor,
        exclude: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, gh, gw) distance of each patch of (B, gh, gw, d) descriptors to its nearest in bank
        ``i`` (not counting the bank images ``exclude`` names, one per query image; among the
        ``candidates`` (B, K) images alone, where given)."""
        bank, norms, owners = self._get("bank", i), self._get("norms", i), self._get("owners", i)
        if candidates is not None:
            return candidate_distances(d, bank, norms, self.reach, candidates)
        if self.matching == "near":
            return near_distances(d, bank, norms, self.reach, exclude, owners)
        b, gh, gw, dim = d.shape
        per_patch = None if exclude is None else exclude.repeat_interleave(gh * gw)
        if torch.compiler.is_exporting():  # one graph for any batch size
            return near_distances(d.reshape(-1, 1, 1, dim), bank, norms, 0, per_patch, owners).view(b, gh, gw)
        return anywhere_distances(d.reshape(-1, dim), bank[0, 0], norms[0, 0], per_patch, owners).view(
            b, gh, gw
        )

    def _fit_scale(
        self, i: int, ref_rows: torch.Tensor, refs: torch.Tensor, candidates: torch.Tensor | None
    ) -> torch.Tensor:
        """Each position's mean and spread of the distances of the bank images ``refs`` (their
        (R, gh, gw, d) descriptors ``ref_rows``; their ``candidates``, where the bank compares with
        some only), each left out of the bank; returns those (R, gh, gw) distances."""
        many = self.bank_images() > 1
        dist = self._distances(i, ref_rows, refs, candidates) if many else torch.zeros(ref_rows.shape[:3])
        self._set_scale(i, dist)
        return dist

    def _set_scale(self, i: int, dist: torch.Tensor) -> None:
        """Grid ``i``'s per-position mean and spread from (R, gh, gw) left-out distances (the
        spread at least its median over the positions)."""
        spread = dist.std(0, unbiased=False) if len(dist) > 1 else torch.ones(dist.shape[1:])
        setattr(self, f"mean{i}", dist.mean(0))
        setattr(self, f"spread{i}", spread.clamp_min(spread.median().clamp_min(1e-6)))

    def bank_images(self) -> int:
        """How many training images the bank holds patches of."""
        if self.matching == "near":
            return self._get("bank", 0).shape[2]
        owners = self._get("owners", 0)
        return int(owners.max()) + 1 if owners.numel() else 0

    def _bank_rows(self, i: int, images: torch.Tensor) -> torch.Tensor:
        """(R, gh, gw, d) the descriptors bank ``i`` holds of its ``images`` ("near" banks hold
        every patch of their images, padded around)."""
        bank = self._get("bank", i)
        return self._interior(i, bank).index_select(2, images.to(bank.device)).permute(2, 0, 1, 3)

    @torch.no_grad()
    def _fit_scales(self) -> None:
        """Every grid's scale ("near" banks) from ``references`` of its images, each left out."""
        refs = torch.from_numpy(spaced(self.bank_images(), self.params.references))
        many = self.bank_images() > 1
        distances = (
            self._left_out_distances(refs)
            if many
            else [torch.zeros(self._bank_rows(i, refs).shape[:3]) for i in range(len(self.derived.grids))]
        )
        for i, dist in enumerate(distances):
            self._set_scale(i, dist)
        self.reference_ = self._scored(distances)[0] if many else None

    def _left_out_distances(self, refs: torch.Tensor) -> list[torch.Tensor]:
        """Per grid, (R, gh, gw) the distances of the bank images ``refs``' patches to the bank,
        each image's own patches left out."""
        candidates = self._candidates(self.layouts[refs], refs) if self.layouts.numel() else None
        return [
            self._distances(i, self._bank_rows(i, refs), refs, candidates)
            for i in range(len(self.derived.grids))
        ]

    @torch.no_grad()
    def leave_one_out_scores(
        self,
        batch: int = 256,
        refit: bool = False,
        images: Callable[[], Iterator[torch.Tensor]] | None = None,
    ) -> torch.Tensor | None:
        """(bank images,) each bank image's score with its own patches left out, in the bank's
        order (``reference_scores`` gives them for the references alone). The distances are
        found ``batch`` images at a time (the bank is never copied whole) and kept, a few numbers a
        patch position; with ``refit``, each position's scale is first refitted from all of them,
        as ``references`` covering the whole bank would fit it. An "anywhere" bank keeps a sample of
        patches, not its images: ``images()`` gives them (normalised batches, in the bank's order;
        None: no scores). None too where the bank holds one image."""
        n = self.bank_images()
        if n < 2 or (self.matching != "near" and images is None):
            return None
        if self.matching == "near":
            chunks = [
                self._left_out_distances(torch.arange(s, min(n, s + batch))) for s in range(0, n, batch)
            ]
        else:
            chunks, done = [], 0
            for x in images():  # type: ignore[misc]
                own = torch.arange(done, done + len(x), device=x.device)
                chunks.append([self._distances(i, d, own) for i, d in enumerate(self.descriptors(x))])
                done += len(x)
        distances = [torch.cat(grid) for grid in zip(*chunks, strict=True)]
        if refit:
            for i, dist in enumerate(distances):
                self._set_scale(i, dist)
        return self._scored(distances)[0]

    @torch.no_grad()
    def left_out_maps(self, x: torch.Tensor, own: torch.Tensor) -> torch.Tensor | None:
        """(B, H, W) the maps of the normalised batch ``x`` at its size, each image compared with
        the bank less its own patches: ``own`` (B,) the bank image each one is (-1: none). None
        where the bank cannot leave an image out (a search among candidates)."""
        if self.layouts.numel():
            return None
        raw = self._projected(self.raw_descriptors(self.working(x)))
        distances = [self._distances(i, d, own) for i, d in enumerate(raw)]
        return grow(self._scored(distances)[1], x.shape[-2:])[:, 0]

    updatable = True  # images join either bank, and leave it (:meth:`absorb`, :meth:`keep_images`)

    @torch.no_grad()
    def keep_images(self, keep: np.ndarray) -> None:
        """Keep the bank images where ``keep`` (its images' order) is True, then refit the scales
        ("near"; an "anywhere" bank keeps the scales it was built with: it holds a sample of patches,
        not the reference images' own)."""
        if self._drop_images(keep) and self.matching == "near":
            self._fit_scales()

    def _drop_images(self, keep: np.ndarray) -> bool:
        """Keep the bank images where ``keep`` is True (the scales as they were); False when all stay.
        An "anywhere" bank keeps the patches those images gave it, their owners numbered anew."""
        keep = np.asarray(keep, bool)
        if keep.all():
            return False
        if self.matching != "near":
            renumber = torch.from_numpy(np.cumsum(keep) - 1)
            for i in range(len(self.derived.grids)):
                owners, bank = self._get("owners", i).cpu(), self._get("bank", i)
                stays = torch.from_numpy(keep)[owners]
                setattr(self, f"bank{i}", bank[:, :, stays.to(bank.device)].contiguous())
                setattr(self, f"norms{i}", self._get("norms", i)[:, :, stays.to(bank.device)])
                setattr(self, f"owners{i}", renumber[owners[stays]].to(bank.device))
        else:
            index = torch.from_numpy(np.flatnonzero(keep))
            for i in range(len(self.derived.grids)):
                self._set_bank(i, compact_images(self._get("bank", i), index))
            if self.layouts.numel():
                self.layouts = self.layouts[index]
        if self.positions_ is not None:
            self.positions_ = self.positions_[keep]
        return True

    def set_aside_images(self, positions: np.ndarray) -> None:
        """The training-pass ``positions`` an ensemble's screening set aside leave this bank too."""
        if self.positions_ is not None:
            self.keep_images(~np.isin(self.positions_, positions))

    @torch.no_grad()
    def absorb(self, batches: Batches, heldout: Batches, seen: int) -> None:
        """The new images' patches join the bank, described on the bank's own axes. "near": beyond
        ``max_bank`` images, evenly spaced shares of the old and the new ones are kept in proportion
        to the images each stands for (``seen``: those the bank was built from); then the scales
        are refit from the bank, as :meth:`fit_end` fits them. "anywhere": the same within
        ``max_patches`` patches (:meth:`_absorb_anywhere`)."""
        if self.matching != "near":
            self._absorb_anywhere(batches, seen)
            return
        old = self.bank_images()
        take_old, take_new = bank_shares(old, seen, len(batches), self.params.max_bank)
        self._drop_images(np.isin(np.arange(old), spaced(old, take_old)))  # scales refit once, below
        parts: list[list[torch.Tensor]] = [[] for _ in self.derived.grids]
        layouts: list[torch.Tensor] = []
        for x in selected(batches, spaced(len(batches), take_new)):
            small = self.working(x)
            for i, d in enumerate(self._projected(self.raw_descriptors(small))):
                stored = self._get("bank", i).dtype  # float16, or float32 in a run written before
                parts[i].append(pad_positions(d.permute(1, 2, 0, 3), self.reach).to(stored))
            layouts.append(layout(small))
        if not layouts:
            self._fit_scales()  # the bank may have lost images to its bound
            return
        for i, part in enumerate(parts):
            self._set_bank(i, torch.cat([self._get("bank", i), *part], 2).contiguous())
        if self.layouts.numel():
            self.layouts = torch.cat([self.layouts, *layouts])
        self.positions_ = None  # no longer positions of a training pass
        self._fit_scales()

    def _absorb_anywhere(self, batches: Batches, seen: int) -> None:
        """An "anywhere" bank takes the new images' patches: within ``max_patches``, evenly spaced
        shares of its own patches and of the new ones, in proportion to the images each stands for
        (one pass over the new images; each new patch owned by its image, numbered after the bank's).
        The scales stay as built (see :meth:`keep_images`)."""
        images, n = self.bank_images(), len(batches)
        picks, kept = [], []
        for i, (_, _, gh, gw) in enumerate(self.derived.grids):
            places = gh * gw
            rows = self._get("bank", i).shape[2]
            take_old, take_new = bank_shares(rows, seen * places, n * places, self.params.max_patches)
            kept.append(torch.from_numpy(spaced(rows, take_old)))
            picks.append(torch.from_numpy(spaced(n * places, take_new)))
        parts: list[list[torch.Tensor]] = [[] for _ in self.derived.grids]
        owners: list[list[torch.Tensor]] = [[] for _ in self.derived.grids]
        placed = 0
        for x in batches():
            for i, d in enumerate(self.descriptors(x)):
                places = d.shape[1] * d.shape[2]
                here = in_batch(picks[i], placed * places, len(d) * places)
                parts[i].append(d.reshape(-1, d.shape[-1])[here])
                owners[i].append(images + placed + here // places)
            placed += len(x)
        for i in range(len(self.derived.grids)):
            bank, old = self._get("bank", i), self._get("owners", i)
            rows = torch.cat([bank[0, 0, kept[i]], *[r.to(bank) for r in parts[i]]])
            self._set_anywhere(i, rows, torch.cat([old[kept[i]], *[o.to(old.device) for o in owners[i]]]))
        self.positions_ = None  # no longer positions of a training pass

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        small = self.working(x)
        candidates = self._candidates(layout(small)) if self.layouts.numel() else None
        distances = [
            self._distances(i, d, candidates=candidates)
            for i, d in enumerate(self._projected(self.raw_descriptors(small)))
        ]
        score, grid = self._scored(distances)
        return InferenceBatch(score, grow(grid, x.shape[-2:])[:, 0] if maps else None)

    def _scored(self, distances: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B,) scores, (B, 1, gh, gw) map at the finest grid) from each grid's (B, gh, gw)
        distances: standardised per position, averaged over the grids, the mean of the top cells."""
        finest = max(self.derived.grids, key=lambda g: g[2] * g[3])[2:]
        grids = [
            grow(((dist - self._get("mean", i)) / self._get("spread", i)).unsqueeze(1), finest)
            for i, dist in enumerate(distances)
        ]
        grid = torch.stack(grids).mean(0)
        flat = grid.flatten(1)
        top = max(1, round(self.params.top * flat.shape[1]))
        return flat.topk(top, dim=1).values.mean(1), grid

    def reference_scores(self) -> torch.Tensor | None:
        """The ``references`` bank images' own scores, each left out of the bank (what the
        per-position scales were fitted on): normal scores for an ensemble's fusion scale, far more
        than a small set's few held-out images."""
        return self.reference_

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for name in list(self._buffers):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)
        if self.params.match == "auto":
            self._choose_match()
        if self.params.radius_rule == "auto":
            self._choose_reach()
