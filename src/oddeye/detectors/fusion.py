"""Putting several scores on one scale: z-scores fitted on held-out normal training images."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn


class ScoreFusion(nn.Module):
    """Weighted mean of z-scores: each component standardised by the mean and spread of its scores
    on held-out normal training images (never on test data), then averaged with ``weights``
    (equal by default; they sum to 1).

    ``loc`` and ``scale`` are buffers, so the fitted scale is saved with the model; the weights
    come from the ensemble's parameters, which the run records.
    """

    def __init__(self, n: int, weights: list[float] | None = None) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        # None: equal weights, computed as the plain mean that runs had before weights (bit for bit)
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float32) / sum(weights)

    @torch.no_grad()
    def fit(self, components: torch.Tensor, extra: list[torch.Tensor | None] | None = None) -> None:
        """Fit on (N, n) component scores of normal images; ``extra[i]``: more normal scores of
        component ``i`` alone (a memory bank's leave-one-out scores), or None."""
        self.fit_columns(self.columns(components, extra))

    def fit_columns(self, columns: list[torch.Tensor]) -> None:
        """The scales from each component's normal scores (:meth:`columns`): mean and spread."""
        self.loc = torch.stack([c.mean() if len(c) else c.new_zeros(()) for c in columns])
        spread = torch.stack([c.std() if len(c) > 1 else c.new_ones(()) for c in columns])
        self.scale = torch.nan_to_num(spread, nan=1.0).clamp_min(1e-6)

    @staticmethod
    def columns(
        components: torch.Tensor, extra: list[torch.Tensor | None] | None = None
    ) -> list[torch.Tensor]:
        """Each component's normal scores: its column of ``components``, then its ``extra`` ones."""
        columns = [components[:, i].float() for i in range(components.shape[1])]
        if extra is None:
            return columns
        return [c if e is None else torch.cat([c, e.float()]) for c, e in zip(columns, extra, strict=True)]

    def standardised(self, components: torch.Tensor) -> torch.Tensor:
        """(B, n) component scores -> (B, n) z-scores on the fitted scales."""
        return (components.float() - self.loc) / self.scale

    def forward(self, components: torch.Tensor, weights: list[float] | None = None) -> torch.Tensor:
        """(B, n) component scores -> (B,) fused score (higher = more anomalous); ``weights`` (n),
        summing to 1, in place of the fusion's own rule: the weighted mean of the z-scores."""
        z = self.standardised(components)
        if weights is not None:
            return (z * torch.tensor(weights, dtype=z.dtype, device=z.device)).sum(1)
        return z.mean(1) if self.weights is None else (z * self.weights.to(z.device)).sum(1)


class ExcessFusion(ScoreFusion):
    """The mean z-score of the first ``n - n_local`` components (whole-image views), plus ``excess``
    times how far the mean z-score of the last ``n_local`` ones (local views) goes beyond
    ``margin + gate * max(whole, 0)`` (nothing below it). A local view then speaks only where it
    is sure, and where the image as a whole is typical: an image unlike the training images as a
    whole has unlike patches too, so its local excess would restate what the whole-image views
    already say (and on normal images unlike each other, emoji or clothes, add noise), while an
    image typical as a whole with one odd part is what the local view is for. An image no local
    view finds odd scores exactly as the whole-image views alone score it. ``weights`` are the
    maps' (see :class:`ScoreFusion`); the scales are fitted as there, except, with ``robust_local``,
    the local views': their median and 1.4826 x their median absolute deviation (see :meth:`fit`).
    """

    def __init__(
        self,
        n: int,
        n_local: int,
        excess: float,
        margin: float,
        weights: list[float] | None,
        gate: float = 0.0,
        robust_local: bool = False,
    ) -> None:
        super().__init__(n, weights)
        if not 0 < n_local < n:
            raise ValueError(
                f"an excess fusion needs whole-image and local components, found {n_local} of {n}"
            )
        if gate < 0:
            raise ValueError(f"an excess fusion's gate must be at least 0, found {gate}")
        self.n_local, self.excess, self.margin, self.gate = n_local, excess, margin, gate
        self.robust_local = robust_local

    def fit_columns(self, columns: list[torch.Tensor]) -> None:
        """As :meth:`ScoreFusion.fit_columns`; with ``robust_local``, each local view's scale is the median
        and 1.4826 x the median absolute deviation of its normal scores (the mean and spread where
        that deviation is 0). A local view's score is the mean of an image's oddest cells, so a few
        normal images with one rare part draw a long tail; the mean and spread follow that tail,
        and the bar the excess is measured from would move with it, not with the typical image."""
        super().fit_columns(columns)
        if not self.robust_local:
            return
        loc, scale = self.loc.clone(), self.scale.clone()
        for i in range(len(columns) - self.n_local, len(columns)):
            column = columns[i]
            if len(column) < 2:
                continue
            median = column.median()
            mad = 1.4826 * (column - median).abs().median()
            if mad > 0:
                loc[i], scale[i] = median, mad
        self.loc, self.scale = loc, scale

    def forward(self, components: torch.Tensor, weights: list[float] | None = None) -> torch.Tensor:
        if weights is not None:
            return super().forward(components, weights)
        z = self.standardised(components)
        whole, local = z[:, : -self.n_local].mean(1), z[:, -self.n_local :].mean(1)
        # gate 0 keeps the ungated rule's arithmetic exactly (0 * an infinite z would be nan)
        bar = self.margin + self.gate * torch.relu(whole) if self.gate else self.margin
        return whole + self.excess * torch.relu(local - bar)


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
