"""Self-supervised transformation recognition (in the spirit of GEOM, Golan & El-Yaniv 2018).

A classifier learns which geometric transformation (flip x rotation x shift) was applied to a
normal image. On an anomaly the transformations are recognised less surely. Score: the mean
cross-entropy of the true transformation over all transformations of the image (higher = more
anomalous), or the distance to the nearest training images in the features the classifier
learned (``score=knn``), or both on one scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, InferenceBatch
from oddeye.detectors.fusion import ScoreFusion, collect
from oddeye.detectors.memory import FeatureBank, grow, reduced_size, shrink
from oddeye.detectors.params import Derived, Params, param
from oddeye.detectors.registry import register
from oddeye.detectors.screening import screen_training


def pad_to_square(x: torch.Tensor) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) to a square so that 90-degree rotations keep the shape."""
    h, w = x.shape[-2:]
    if h == w:
        return x
    d = abs(h - w)
    pad = (0, 0, d // 2, d - d // 2) if h < w else (d // 2, d - d // 2, 0, 0)
    return F.pad(x, pad, mode="replicate")


def transform_list(flips: bool, rotations: int, shift: float) -> list[tuple[int, int, int, int]]:
    """(flip, quarter turns, dy, dx) tuples; shifts in units of ``shift`` * size (0 = none)."""
    shifts = [-1, 0, 1] if shift > 0 else [0]
    return list(itertools.product([0, 1] if flips else [0], range(rotations), shifts, shifts))


def shift_pixels(shift: float, side: int) -> int:
    """The shift in pixels for a ``shift`` given as a fraction of the (square) image side."""
    return int(round(shift * side))


def apply_transform(x: torch.Tensor, t: tuple[int, int, int, int], s: int) -> torch.Tensor:
    """One geometric transformation of a square batch (B, C, S, S): shifts of ``s`` pixels per
    unit of dy and dx, wrapping with reflection."""
    flip, turns, dy, dx = t
    if flip:
        x = x.flip(-1)
    if dy or dx:
        x = F.pad(x, (s, s, s, s), mode="reflect")
        size = x.shape[-1] - 2 * s
        x = x[..., s + dy * s : s + dy * s + size, s + dx * s : s + dx * s + size]
    if turns:
        x = torch.rot90(x, turns, dims=(-2, -1))
    return x


def invert_transform(m: torch.Tensor, t: tuple[int, int, int, int], s: int) -> torch.Tensor:
    """A (B, S, S) map of a transformed copy moved back to the original's frame (rotation and flip
    undone exactly; a shift undone with zeros where the shifted copy showed reflected pixels)."""
    flip, turns, dy, dx = t
    if turns:
        m = torch.rot90(m, -turns, dims=(-2, -1))
    if dy or dx:
        size = m.shape[-1]
        m = F.pad(m, (s, s, s, s))[..., s - dy * s : s - dy * s + size, s - dx * s : s - dx * s + size]
    return m.flip(-1) if flip else m


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) cross-entropy of each row's label: F.cross_entropy's numbers, in operations that
    export to ONNX at any batch size."""
    return -logits.log_softmax(1).gather(1, labels[:, None])[:, 0]


def small_resnet_trunk(in_ch: int, width: int) -> nn.Sequential:
    """Conv stages (width, 2w, 4w), BN + ReLU, stride 2 between stages, global average pool."""

    def block(a: int, b: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(a, b, 3, stride, 1, bias=False),
            nn.BatchNorm2d(b),
            nn.ReLU(inplace=True),
            nn.Conv2d(b, b, 3, 1, 1, bias=False),
            nn.BatchNorm2d(b),
            nn.ReLU(inplace=True),
        ]

    w = width
    return nn.Sequential(
        *block(in_ch, w, 1),
        *block(w, 2 * w, 2),
        *block(2 * w, 4 * w, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


@dataclass(frozen=True)
class TransformParams(Params):
    width: int = param(32, help="channels of the first stage (then 2x and 4x)")
    flips: bool = param(True, help="horizontal flips among the transformations")
    rotations: int = param(4, help="quarter turns among the transformations (1: none)")
    shift: float = param(0.0, help="shifts of this fraction of the side among them (0: none)")
    score: str = param("ce", help="cross-entropy, feature k-NN or both", choices=("ce", "knn", "both"))
    k: int = param(3, help="training features averaged (score=knn or both)")
    max_side: int = param(0, before=0, help="work at most this many pixels a side (0: full size)")


@dataclass(frozen=True)
class TransformDerived(Derived):
    transforms: tuple[tuple[int, int, int, int], ...]  # (flip, quarter turns, dy, dx): the head's classes
    shift_px: int  # the shift in pixels
    work_hw: tuple[int, int]  # the resolution it works at


@register("transform", "self-supervised: recognise which flip/rotation/shift was applied (GEOM-style)")
class TransformationClassifier(AnomalyModel):
    """Derived and recorded: ``transforms``, the (flip, quarter turns, dy, dx) list whose order is
    the head's class order, ``shift_px``, the shift in pixels, and ``work_hw``, the resolution it
    works at (``max_side`` > 0: images area-averaged down to at most that many pixels a side)."""

    Params = TransformParams
    Derived = TransformDerived

    @classmethod
    def derive(cls, params: TransformParams, shape: tuple[int, int, int]) -> TransformDerived:
        work_hw = reduced_size(shape, params.max_side)
        side = max(work_hw)  # images are reduced, then padded to a square
        transforms = transform_list(params.flips, params.rotations, params.shift)
        return TransformDerived(tuple(transforms), shift_pixels(params.shift, side), work_hw)

    def __init__(
        self,
        shape: tuple[int, int, int],
        params: TransformParams | None = None,
        derived: TransformDerived | None = None,
    ) -> None:
        super().__init__(shape, params, derived)
        p, d = self.params, self.derived
        self.score_mode, width = p.score, p.width
        self.work_hw, self.transforms, self.shift_px = d.work_hw, list(d.transforms), d.shift_px
        self.trunk = small_resnet_trunk(self.shape[2], width)
        self.head = nn.Linear(4 * width, len(self.transforms))
        self.features = FeatureBank(p.k)
        self.fusion = ScoreFusion(2)

    def _all_transforms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K*B, C, S, S) transformed copies and their (K*B,) transformation labels."""
        x = pad_to_square(shrink(x, self.work_hw))
        views = [apply_transform(x, t, self.shift_px) for t in self.transforms]
        b = x.shape[0]
        labels = torch.arange(len(views) * b, device=x.device) // b  # 0 for the first b copies, ...; exports
        return torch.cat(views), labels

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B) cross-entropy of the true transformation for every copy of every image, and the
        (B, D) trunk features averaged over the copies."""
        ce, feats, _, _ = self._forward_maps(x)
        return ce, feats

    def _forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`_forward`, plus the trunk's (K*B, C, s, s) output before its pooling and the
        (K*B,) transformation labels."""
        views, labels = self._all_transforms(x)
        z = self.trunk[:-2](views)  # (K*B, 4w, s, s)
        feats = self.trunk[-2:](z)  # pooled, (K*B, 4w)
        ce = _cross_entropy(self.head(feats).float(), labels)
        k = len(self.transforms)
        return ce.view(k, -1), feats.float().view(k, x.shape[0], -1).mean(0), z, labels

    latent = "the trunk's features, averaged over the transformed copies"

    @property
    def map_meaning(self) -> str:  # type: ignore[override]
        return {
            "ce": "how badly each position's view tells which transformation was applied, averaged "
            "over the transformed copies (turned back)",
            "knn": "each position's share of the squared feature distance to the nearest training image",
            "both": "the two maps (cross-entropy and feature distance), each on its fusion scale, averaged",
        }[self.score_mode]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0].mean()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[1]

    def _components(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2): mean cross-entropy and feature-space k-NN distance."""
        ce, feats = self._forward(x)
        return torch.stack([ce.mean(0), self.features(feats)], 1)

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        if self.score_mode == "ce":
            return
        self.features.build(batches, self.bank_features)
        heldout = screen_training(self, heldout) or heldout  # trained on every image; bank: typical
        if self.score_mode == "both":
            self.fusion.fit(collect(self._components, heldout, batches))

    def pass_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The cross-entropy of the true transformations (the bank and the scales come after)."""
        return self._forward(x)[0].mean(0)

    def bank_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[1]

    def banks(self) -> list[tuple[Any, Callable[[torch.Tensor], torch.Tensor]]]:
        return [] if self.score_mode == "ce" else [(self.features, self.bank_features)]

    def fit_end_work(self) -> str:
        return {"ce": "", "knn": "feature bank", "both": "feature bank and score scales"}[self.score_mode]

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Maps, from the trunk's output before its pooling, each transformed copy's map turned
        back to the image's own orientation: ``ce``, the cross-entropy of the true transformation
        at each position (the head applied there), averaged over the copies; ``knn``, the squared
        feature distance to the nearest bank feature split over positions and copies (the pooled
        feature is their sum), added up; ``both``, the two divided by their fusion scales and
        averaged. Scaled up to the input's size."""
        ce, feats, z, labels = self._forward_maps(x)
        if self.score_mode == "ce":
            score = ce.mean(0)
        else:
            parts = torch.stack([ce.mean(0), self.features(feats)], 1)
            score = parts[:, 1] if self.score_mode == "knn" else self.fusion(parts)
        if not maps:
            return InferenceBatch(score)
        k, b = len(self.transforms), x.shape[0]
        ce_map = knn_map = None
        if self.score_mode != "knn":
            logits = torch.einsum("nchw,oc->nohw", z.float(), self.head.weight.float())
            logits = logits + self.head.bias.float()[None, :, None, None]
            chosen = F.one_hot(labels, logits.shape[1]).float()[:, :, None, None]  # (K*B, T, 1, 1)
            picked = (logits.log_softmax(1) * chosen).sum(1)  # the true transformation's log-probability
            ce_map = self._back(-picked.view(k, b, *z.shape[-2:]), x).mean(0)
        if self.score_mode != "ce":
            unit, near = F.normalize(feats, dim=1), self.features.closest(feats)
            n = z.shape[-2] * z.shape[-1]
            per = torch.einsum("bd,kbdhw->kbhw", unit - near, z.float().view(k, b, *z.shape[1:]))
            knn_map = self._back(
                2 * per / (k * n * feats.norm(dim=1).clamp_min(1e-12)[None, :, None, None]), x
            ).sum(0)
        if ce_map is None:
            amap = knn_map
        elif knn_map is None:
            amap = ce_map
        else:
            amap = (ce_map / self.fusion.scale[0] + knn_map / self.fusion.scale[1]) / 2
        return InferenceBatch(score, amap)

    def _back(self, maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(K, B, s, s) maps of the transformed copies -> (K, B, H, W) in the image's own frame."""
        h, w = self.work_hw
        side = max(h, w)
        out = []
        for t, m in zip(self.transforms, maps, strict=True):
            m = invert_transform(grow(m[:, None], (side, side))[:, 0], t, self.shift_px)
            d = side - min(h, w)  # pad_to_square's margin, on the shorter side
            m = m[:, d // 2 : d // 2 + h, :] if h < w else m[:, :, d // 2 : d // 2 + w]
            out.append(grow(m[:, None], x.shape[-2:])[:, 0])
        return torch.stack(out)
