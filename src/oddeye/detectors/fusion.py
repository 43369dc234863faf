"""Putting several scores on one scale: z-scores fitted on held-out normal training images."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn


class ScoreFusion(nn.Module):
    """Mean of z-scores: each component standardised by the mean and spread of its scores on
    held-out normal training images (never on test data), then averaged with equal weights.

    ``loc`` and ``scale`` are buffers, so the fitted scale is saved with the model.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))

    @torch.no_grad()
    def fit(self, components: torch.Tensor) -> None:
        """Fit on (N, n) component scores of normal images."""
        components = components.float()
        self.loc = components.mean(0)
        spread = components.std(0) if len(components) > 1 else torch.ones_like(self.loc)
        self.scale = torch.nan_to_num(spread, nan=1.0).clamp_min(1e-6)

    def forward(self, components: torch.Tensor) -> torch.Tensor:
        """(B, n) component scores -> (B,) fused score (higher = more anomalous)."""
        return ((components.float() - self.loc) / self.scale).mean(1)


def collect(
    score: Callable[[torch.Tensor], torch.Tensor],
    heldout: Callable[[], Iterator[torch.Tensor]],
    fallback: Callable[[], Iterator[torch.Tensor]],
) -> torch.Tensor:
    """``score`` over the held-out batches, or over ``fallback`` (training) batches if none are held out."""
    rows = [score(x) for x in heldout()]
    if not rows:
        rows = [score(x) for x in fallback()]
    return torch.cat(rows)
