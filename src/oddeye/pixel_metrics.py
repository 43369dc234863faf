"""Pixel-level quality of anomaly maps against ground-truth masks: pixel AUROC and AUPRO.

AUPRO as the MVTec AD papers define it (Bergmann et al., IJCV 2021, and the evaluation code
published with the data set): the regions are the connected components of each image's mask,
with 8-connectivity (a 3x3 structuring element, as in that code); at each threshold the
per-region overlap (the share of a region's pixels scoring at or above it) is averaged over every
region of every image and plotted against the false-positive rate over every normal pixel (mask 0)
of every image; the curve, from (0, 0) through one point per distinct map value, is integrated
over FPR from 0 to ``fpr_limit`` (the PRO at the limit interpolated linearly) and divided by it.

:class:`PixelEvaluator` takes maps batch by batch: exactly (one sort of every pixel) while the
pixels fit ``exact_pixels``, else in bins fixed from the pixels seen first, so that a hundred
1024x1024 maps need a few MB of counts rather than gigabytes of sorted copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oddeye.errors import OddeyeError

FPR_LIMIT = 0.3
EXACT_PIXELS = 2**21  # pixels kept for the exact computation (~70 bytes each while sorting: 150 MB)
QUANTILE_BINS = 2**14  # bin edges at this many quantiles of normal and of anomalous pixels each
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)  # MVTec AD's structuring element for the regions


@dataclass(frozen=True)
class PixelEvaluation:
    """Pixel AUROC and AUPRO of a set of maps, and what they were computed over."""

    pixel_auroc: float
    aupro: float
    fpr_limit: float
    n_images: int
    n_regions: int  # connected components of the masks (8-connectivity)
    n_pixels: int
    n_anomalous_pixels: int
    exact: bool  # False: binned (``bins`` thresholds), past the exact computation's budget
    bins: int | None = None
    outside_pixels: int = 0  # binned: pixels beyond the edges fixed first (tied at the ends)

    def to_text(self) -> str:
        how = "exact" if self.exact else f"binned, {self.bins} thresholds"
        if self.outside_pixels:
            how += f", {self.outside_pixels} pixels beyond them"
        return (
            f"pixel AUROC        {self.pixel_auroc:.4f}\n"
            f"AUPRO (FPR<={self.fpr_limit:g})   {self.aupro:.4f}   ({self.n_regions} regions in "
            f"{self.n_images} masks, {self.n_anomalous_pixels} of {self.n_pixels} pixels anomalous; {how})"
        )


def regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) region ids of a bool mask (0 = normal, 1..K its 8-connected components) as int32,
    and the K+1 region sizes in pixels (index 0: the normal pixels)."""
    from scipy import ndimage  # here: importing oddeye's evaluation stays light

    labelled, k = ndimage.label(mask, structure=EIGHT_CONNECTED)
    return labelled.astype(np.int32, copy=False), np.bincount(labelled.ravel(), minlength=k + 1)


def area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """The trapezoid area under the curve (x ascending, from 0) between x = 0 and ``limit``, y at
    the limit interpolated between its neighbours."""
    inside = int(np.searchsorted(x, limit, side="right"))  # x[:inside] <= limit
    xs, ys = x[:inside], y[:inside]
    if xs[-1] < limit and inside < len(x):
        frac = (limit - xs[-1]) / (x[inside] - xs[-1])
        xs, ys = np.append(xs, limit), np.append(ys, ys[-1] + frac * (y[inside] - ys[-1]))
    return float(np.trapezoid(ys, xs))


class PixelEvaluator:
    """Pixel AUROC and AUPRO over maps given batch by batch (``add``), in bounded memory.

    Every map is paired with a bool mask of its own shape (resize the maps to the masks first).
    While the pixels seen fit ``exact_pixels`` (None: no limit) they are kept and sorted once at
    ``result``; past it, ``bins`` edges are fixed from the pixels kept so far (``QUANTILE_BINS``
    quantiles of the normal pixels, as many of the anomalous ones, and as many evenly spaced
    from a span's width below the lowest value to one above the highest; the outermost bins are
    open) and each pixel only adds to its bin's counts: the normal pixels, the anomalous pixels
    and the summed region shares. Give the maps in an order that mixes normal and anomalous
    images (the metrics do not depend on it), so the first ones fix representative bins.
    """

    def __init__(self, fpr_limit: float = FPR_LIMIT, exact_pixels: int | None = EXACT_PIXELS) -> None:
        if not 0.0 < fpr_limit <= 1.0:
            raise OddeyeError(f"fpr_limit: expected a false-positive rate in (0, 1], found {fpr_limit!r}")
        self.fpr_limit, self.exact_pixels = fpr_limit, exact_pixels
        self.n_images = self.n_regions = self.n_pixels = self.n_anomalous = 0
        self.outside = 0  # binned: pixels in the open end bins, beyond every edge
        self._values: list[np.ndarray] = []  # exact: each image's map values, float64
        self._ids: list[np.ndarray] = []  # and its pixels' global region ids (0: normal)
        self._sizes: list[np.ndarray] = [np.ones(1, np.int64)]  # region sizes by global id (0: none)
        self._edges: np.ndarray | None = None  # binned: the inner bin edges, ascending
        self._counts: np.ndarray | None = None  # (3, bins): normal, anomalous, region shares

    def add(self, maps: np.ndarray, masks: np.ndarray) -> PixelEvaluator:
        """Maps (B, H, W) or (H, W), higher = more anomalous, with their masks of the same shape."""
        maps, masks = np.asarray(maps), np.asarray(masks, dtype=bool)
        if maps.ndim == 2:
            maps, masks = maps[None], masks[None]
        if maps.shape != masks.shape or maps.ndim != 3:
            raise ValueError(f"maps {maps.shape} and masks {masks.shape}: expected the same (B, H, W)")
        for amap, mask in zip(maps, masks, strict=True):
            self._add_one(np.asarray(amap, dtype=np.float64), mask)
        return self

    def _add_one(self, amap: np.ndarray, mask: np.ndarray) -> None:
        ids, sizes = regions(mask)
        if not np.isfinite(amap).all():
            raise OddeyeError(f"anomaly map {self.n_images}: expected finite values, found NaN or inf")
        self.n_images += 1
        self.n_pixels += amap.size
        self.n_anomalous += int(mask.sum())
        ids = np.where(ids > 0, ids + self.n_regions, 0).astype(np.int32)
        self.n_regions += len(sizes) - 1
        self._sizes.append(sizes[1:])
        if self._edges is None:
            self._values.append(amap.ravel())
            self._ids.append(ids.ravel())
            if self.exact_pixels is not None and self.n_pixels > self.exact_pixels:
                self._to_bins()
        else:
            self._bin(amap.ravel(), ids.ravel())

    def _shares(self) -> np.ndarray:
        """Each global region id's share of its region per pixel, 1 / size (id 0, normal: 0)."""
        if len(self._sizes) > 1:
            self._sizes = [np.concatenate(self._sizes)]
        shares = 1.0 / self._sizes[0]
        shares[0] = 0.0
        return shares

    def _to_bins(self) -> None:
        """Fix the bin edges from the pixels kept so far, count those, and keep counts only."""
        values, ids = np.concatenate(self._values), np.concatenate(self._ids)
        self._values, self._ids = [], []
        probe = np.linspace(0.0, 1.0, QUANTILE_BINS)
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo if hi > lo else 1.0  # room for later maps beyond the range seen so far
        parts = [np.linspace(lo - span, hi + span, QUANTILE_BINS)]
        for part in (values[ids == 0], values[ids > 0]):
            if part.size:
                parts.append(np.quantile(part, probe))
        self._edges = np.unique(np.concatenate(parts))[1:]  # bin b holds edges[b-1] <= v < edges[b]
        self._counts = np.zeros((3, len(self._edges) + 1))
        self._bin(values, ids)

    def _bin(self, values: np.ndarray, ids: np.ndarray) -> None:
        assert self._edges is not None and self._counts is not None
        b = np.searchsorted(self._edges, values, side="right")
        inside = ids > 0
        n = len(self._edges) + 1
        self._counts[0] += np.bincount(b[~inside], minlength=n)
        self._counts[1] += np.bincount(b[inside], minlength=n)
        self._counts[2] += np.bincount(b[inside], weights=self._shares()[ids[inside]], minlength=n)
        self.outside += int(np.count_nonzero((b == 0) | (b == n - 1)))

    def result(self) -> PixelEvaluation:
        """The metrics over everything added; needs normal and anomalous pixels both."""
        n_normal = self.n_pixels - self.n_anomalous
        if self.n_anomalous == 0 or n_normal == 0:
            kind = "anomalous" if self.n_anomalous == 0 else "normal"
            raise OddeyeError(
                f"pixel metrics: expected masks with both normal and anomalous pixels, found no {kind} "
                f"pixel in {self.n_images} masks"
            )
        fp, tp, pro = self._curve_counts()
        fpr = np.r_[0.0, fp / n_normal]
        tpr = np.r_[0.0, tp / self.n_anomalous]
        pro = np.r_[0.0, np.minimum(pro / max(self.n_regions, 1), 1.0)]
        return PixelEvaluation(
            pixel_auroc=float(np.trapezoid(tpr, fpr)),
            aupro=area_to(fpr, pro, self.fpr_limit) / self.fpr_limit,
            fpr_limit=self.fpr_limit,
            n_images=self.n_images,
            n_regions=self.n_regions,
            n_pixels=self.n_pixels,
            n_anomalous_pixels=self.n_anomalous,
            exact=self._edges is None,
            bins=None if self._edges is None else len(self._edges) + 1,
            outside_pixels=self.outside,
        )

    def _curve_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normal pixels, anomalous pixels and summed region shares at or above each threshold,
        from the highest threshold down (one point per distinct value, or per bin)."""
        if self._counts is not None:
            normal, anomalous, shares = (np.cumsum(c[::-1]) for c in self._counts)
            return normal, anomalous, shares
        values, ids = np.concatenate(self._values), np.concatenate(self._ids)
        order = np.argsort(values, kind="stable")[::-1]  # highest first
        values, ids = values[order], ids[order]
        del order
        last = np.r_[values[1:] != values[:-1], True]  # the last pixel of each run of equal values
        inside = ids > 0
        anomalous = np.cumsum(inside)
        normal = np.arange(1, len(ids) + 1) - anomalous
        shares = np.cumsum(self._shares()[ids])
        return normal[last], anomalous[last], shares[last]


def _evaluation(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> PixelEvaluation:
    return PixelEvaluator(fpr_limit, exact_pixels=None).add(maps, masks).result()


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """ROC AUC of every pixel's map value against its mask: maps (N, H, W) float, masks bool."""
    return _evaluation(maps, masks, FPR_LIMIT).pixel_auroc


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = FPR_LIMIT) -> float:
    """The normalised area under the per-region-overlap curve up to ``fpr_limit`` (see the
    module's docstring): maps (N, H, W) float, masks (N, H, W) bool."""
    return _evaluation(maps, masks, fpr_limit).aupro


def per_defect_auroc(scores: np.ndarray, labels: np.ndarray, defects: Sequence[str]) -> dict[str, float]:
    """Image ROC AUC per defect type: each type's anomalous images against every normal image."""
    from sklearn.metrics import roc_auc_score

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    kinds = np.asarray(defects, dtype=object)
    normal = labels == 0
    out = {}
    for kind in sorted({str(d) for d, y in zip(kinds, labels, strict=True) if y == 1}):
        pick = normal | ((kinds == kind) & (labels == 1))
        if normal.any():
            out[kind] = float(roc_auc_score(labels[pick], scores[pick]))
    return out
