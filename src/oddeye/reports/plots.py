"""Plots with matplotlib (Agg backend: no screen needed), saved atomically as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from oddeye.io import atomic_path  # noqa: E402


def plot_training_curve(history: Sequence[Any], path: str | Path, title: str = "training") -> Path:
    """Train and held-out loss per epoch (log scale), the kept epoch marked."""
    epochs = [r.epoch for r in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [r.train_loss for r in history], marker="o", ms=3, label="train")
    ax.plot(epochs, [r.val_loss for r in history], marker="o", ms=3, label="held-out")
    best = [r for r in history if r.improved]
    if best:
        ax.axvline(best[-1].epoch, color="grey", ls="--", lw=1, label=f"kept (epoch {best[-1].epoch})")
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    if not history:
        ax.text(
            0.5,
            0.5,
            "no training loop\n(memory-bank detector)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    elif all(r.train_loss > 0 and r.val_loss > 0 for r in history):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if history:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
