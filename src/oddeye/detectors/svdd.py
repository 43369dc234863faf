"""Deep SVDD (Ruff et al. 2018): map normal images close to a fixed centre in feature space."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from oddeye.detectors.base import AnomalyModel, InferenceBatch, check_choice
from oddeye.detectors.memory import FeatureBank
from oddeye.detectors.registry import register


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


@register("deep-svdd", "Deep SVDD: distance to a centre of normal features, or to the k nearest (score=knn)")
class DeepSVDD(AnomalyModel):
    """One-class Deep SVDD. The centre is the mean feature of the training images under the
    initial network (fixed before training; near-zero coordinates nudged to +-``eps``). Loss: mean
    squared distance to the centre. Score: that distance (``score=center``), or the mean distance
    to the ``k`` nearest training images' features (``score=knn``, a feature-space memory bank).
    """

    cpu_bf16 = False  # the distances are small; bf16 rounding swamps them

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        width: int = 16,
        dim: int = 32,
        score: str = "center",
        k: int = 3,
    ) -> None:
        super().__init__(shape)
        check_choice("score", score, ("center", "knn"))
        self.score_mode = score
        self.net = bias_free_encoder(self.shape[2], width, dim)
        self.register_buffer("center", torch.zeros(dim))
        self.features = FeatureBank(k)

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

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        if self.score_mode == "knn":
            self.features.build(batches, self.net)

    def fit_end_work(self) -> str:
        return "feature bank" if self.score_mode == "knn" else ""

    def infer(self, x: torch.Tensor) -> InferenceBatch:
        f = self.net(x).float()
        if self.score_mode == "knn":
            return InferenceBatch(self.features(f))
        return InferenceBatch((f - self.center).pow(2).sum(1))
