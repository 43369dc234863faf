"""Deep SVDD (Ruff et al. 2018): map normal images close to a fixed centre in feature space."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, InferenceBatch
from oddeye.detectors.memory import FeatureBank, grow
from oddeye.detectors.params import Derived, Params, param
from oddeye.detectors.registry import register
from oddeye.detectors.screening import screen_training


def bias_free_encoder(in_ch: int, width: int, dim: int) -> nn.Sequential:
    """Conv-BN(no affine)-LeakyReLU-pool stages, no bias anywhere: a network with biases could map
    every input to the centre (the collapse Deep SVDD's authors rule out this way)."""

    def stage(a: int, b: int) -> list[nn.Module]:
        return [
            nn.Conv2d(a, b, 3, 1, 1, bias=False),
            nn.BatchNorm2d(b, affine=False),
            nn.LeakyReLU(0.1),
            nn.MaxPool2d(2, ceil_mode=True),
        ]

    w = width
    return nn.Sequential(
        *stage(in_ch, w),
        *stage(w, 2 * w),
        *stage(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * w, dim, bias=False),
    )


@dataclass(frozen=True)
class DeepSVDDParams(Params):
    width: int = param(16, help="channels of the first stage (then 2x and 4x)")
    dim: int = param(32, help="feature dimensions")
    score: str = param(
        "center", help="distance to the centre, or to the k nearest", choices=("center", "knn")
    )
    k: int = param(3, help="training features averaged (score=knn)")


@register("deep-svdd", "Deep SVDD: distance to a centre of normal features, or to the k nearest (score=knn)")
class DeepSVDD(AnomalyModel):
    """One-class Deep SVDD. The centre is the mean feature of the training images under the
    initial network (fixed before training; near-zero coordinates nudged to +-``eps``). Loss: mean
    squared distance to the centre. Score: that distance (``score=center``), or the mean distance
    to the ``k`` nearest training images' features (``score=knn``, a feature-space memory bank).
    """

    cpu_bf16 = False  # the distances are small; bf16 rounding swamps them
    map_meaning = (
        "each position's share of the squared feature distance (to the centre, or to the nearest "
        "training feature)"
    )

    Params = DeepSVDDParams

    def __init__(
        self,
        shape: tuple[int, int, int],
        params: DeepSVDDParams | None = None,
        derived: Derived | None = None,
    ) -> None:
        super().__init__(shape, params, derived)
        p = self.params
        self.score_mode = p.score
        self.net = bias_free_encoder(self.shape[2], p.width, p.dim)
        self.register_buffer("center", torch.zeros(p.dim))
        self.features = FeatureBank(p.k)

    def fit_start(self, batches: Callable[[], Iterator[torch.Tensor]]) -> None:
        self.eval()
        total, count = 0.0, 0
        for x in batches():  # a streamed mean: no (N, dim) matrix
            total = total + self.net(x).float().sum(0)
            count += len(x)
        c = total / max(count, 1)
        eps = 0.1
        c[(c.abs() < eps) & (c < 0)] = -eps
        c[(c.abs() < eps) & (c >= 0)] = eps
        self.center = c

    latent = "the network's output (the space of the centre)"

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x).float() - self.center).pow(2).sum(1).mean()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float()

    def pass_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The distance to the centre (the ``knn`` bank is built after training)."""
        return (self.net(x).float() - self.center).pow(2).sum(1)

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        if self.score_mode == "knn":
            self.features.build(batches, self.net)
            screen_training(self, heldout)  # trained on every image; the bank keeps the typical

    def banks(self) -> list[tuple[Any, Callable[[torch.Tensor], torch.Tensor]]]:
        return [(self.features, self.net)] if self.score_mode == "knn" else []

    def fit_end_work(self) -> str:
        return "feature bank" if self.score_mode == "knn" else ""

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Map: the score split over the positions of the last convolution's output, before the
        pooling: the feature is a sum of one term per position, so the squared distance to the
        centre (``center``) or to the nearest bank feature (``knn``, the features scaled to unit
        length) is too. The terms add up to the score (``center``) or its square (``knn``, for the
        nearest feature); scaled up to the input's size."""
        z = self.net[:-3](x).float()  # (B, 4w, h, w): the stages before the 2x2 pooling
        f = self.net[-3:](z).float()
        if self.score_mode == "knn":
            score = self.features(f)
        else:
            score = (f - self.center).pow(2).sum(1)
        if not maps:
            return InferenceBatch(score)
        terms = self._position_terms(z)  # (B, dim, h, w), summing over positions to f
        if self.score_mode == "knn":
            unit = F.normalize(f, dim=1)
            near = self.features.closest(f)
            amap = (
                2
                * torch.einsum("bd,bdhw->bhw", unit - near, terms)
                / f.norm(dim=1).clamp_min(1e-12)[:, None, None]
            )
        else:
            gap = f - self.center
            n = z.shape[-2] * z.shape[-1]
            amap = torch.einsum("bd,bdhw->bhw", gap, terms) - (gap @ self.center)[:, None, None] / n
        return InferenceBatch(score, grow(amap[:, None], x.shape[-2:])[:, 0])

    def _position_terms(self, z: torch.Tensor) -> torch.Tensor:
        """(B, dim, h, w) one term per position whose sum is the network's output: the final
        linear map applied to each position's share of each of the 2x2 pooled cells."""
        weight = self.net[-1].weight.float()  # (dim, C * 2 * 2), flattened as (C, 2, 2)
        dim, c = weight.shape[0], z.shape[1]
        weight = weight.view(dim, c, 2, 2)
        h, w = z.shape[-2:]
        terms = torch.zeros(z.shape[0], dim, h, w, device=z.device)
        for i in range(2):
            for j in range(2):  # adaptive pooling's regions (they overlap on odd sizes)
                r0, r1 = (i * h) // 2, -((-(i + 1) * h) // 2)
                c0, c1 = (j * w) // 2, -((-(j + 1) * w) // 2)
                part = torch.einsum("dc,bchw->bdhw", weight[:, :, i, j], z[:, :, r0:r1, c0:c1])
                terms[:, :, r0:r1, c0:c1] += part / ((r1 - r0) * (c1 - c0))
        return terms
