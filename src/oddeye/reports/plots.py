"""Figures with matplotlib (Agg backend: no screen needed). Each ``*_figure`` function returns a
Figure; :func:`save_png` writes one atomically and :func:`png_bytes` renders one for embedding."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve  # noqa: E402

from oddeye.io import atomic_path  # noqa: E402

DPI = 100
NORMAL_ANOMALOUS = {0: ("normal", "tab:blue"), 1: ("anomalous", "tab:red")}


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def image_png(image: np.ndarray, side: int = 96) -> bytes:
    """An (H, W, C) image in [0, 1] (C = 1 or 3) as PNG bytes, its longer side scaled to ``side``
    pixels (enlarged without smoothing, so small images keep their pixels sharp)."""
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return _thumbnail_png(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, side)


def map_png(amap: np.ndarray, vmin: float, vmax: float, side: int = 96) -> bytes:
    """An (H, W) anomaly map as PNG bytes in the colours of the reports' maps (``inferno``,
    ``vmin`` dark to ``vmax`` bright), its longer side scaled to ``side`` pixels."""
    scaled = (np.asarray(amap, np.float64) - vmin) / max(vmax - vmin, 1e-12)
    colours = matplotlib.colormaps["inferno"](np.clip(np.nan_to_num(scaled), 0.0, 1.0))[..., :3]
    return _thumbnail_png(np.round(colours * 255).astype(np.uint8), side)


def _thumbnail_png(pixels: np.ndarray, side: int) -> bytes:
    from PIL import Image

    im = Image.fromarray(pixels)
    scale = side / max(im.size)
    size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
    im = im.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG atomically; the figure is closed."""
    data = png_bytes(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def plot_training_curve(
    histories: Mapping[str, Sequence[Any]], path: str | Path, title: str = "training"
) -> Path:
    """:func:`training_curve_figure` saved as a PNG."""
    return save_png(training_curve_figure(histories, title), path)


def training_curve_figure(histories: Mapping[str, Sequence[Any]], title: str = "training") -> Figure:
    """Train and held-out loss per epoch (log scale), the kept epoch marked; one panel per model
    that trained (an ensemble's members)."""
    trained = {name: h for name, h in histories.items() if h}
    n = max(len(trained), 1)
    fig, axes = plt.subplots(1, n, figsize=(min(5.5 * n, 16), 3.8), squeeze=False)
    if not trained:
        ax = axes[0, 0]
        ax.text(0.5, 0.5, "no training loop\n(memory-bank detector)", ha="center", va="center")
        ax.set(xticks=[], yticks=[], title=title)
    for ax, (name, history) in zip(axes[0], trained.items()):
        epochs = [r.epoch for r in history]
        ax.plot(epochs, [r.train_loss for r in history], marker="o", ms=3, label="train")
        ax.plot(epochs, [r.val_loss for r in history], marker="o", ms=3, label="held-out")
        best = [r for r in history if r.improved]
        if best:
            ax.axvline(best[-1].epoch, color="grey", ls="--", lw=1, label=f"kept (epoch {best[-1].epoch})")
        if all(r.train_loss > 0 and r.val_loss > 0 for r in history):
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel="loss", title=title if name in title else f"{name} (member)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def groups_of(
    labels: np.ndarray | None, classes: np.ndarray | None, class_names: Sequence[str] | None
) -> list[tuple[str, np.ndarray]]:
    """(name, mask) per class to colour by: the given classes, else normal / anomalous labels."""
    if classes is not None:
        values = np.unique(classes)
        known = class_names or []
        names = [known[int(v)] if 0 <= int(v) < len(known) else str(v) for v in values]
        return [(name, classes == v) for name, v in zip(names, values)]
    if labels is not None:
        return [(NORMAL_ANOMALOUS[v][0], labels == v) for v in (0, 1) if (labels == v).any()]
    return []


def group_colours(groups: Sequence[tuple[str, np.ndarray]]) -> list[Any]:
    """Blue / red for normal / anomalous labels; a qualitative palette for classes."""
    named = dict(NORMAL_ANOMALOUS.values())
    if all(name in named for name, _ in groups):
        return [named[name] for name, _ in groups]
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(len(groups))]


def score_histogram_figure(
    scores: np.ndarray,
    groups: Sequence[tuple[str, np.ndarray]] = (),
    threshold: float | None = None,
    threshold_label: str = "threshold",
    xlabel: str = "score (higher = more anomalous)",
) -> Figure:
    """Score distributions, one colour per class (each normalised to its own area), threshold line."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    lo, hi = np.percentile(scores, [0, 100])
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 61)
    if groups:
        for (name, mask), colour in zip(groups, group_colours(groups)):
            ax.hist(scores[mask], bins, density=True, histtype="stepfilled", alpha=0.25, color=colour)
            label = f"{name} ({int(mask.sum())})"
            ax.hist(scores[mask], bins, density=True, histtype="step", lw=1.5, color=colour, label=label)
    else:
        ax.hist(scores, bins, color="tab:grey", alpha=0.7, label=f"all ({len(scores)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=threshold_label)
    ax.set(xlabel=xlabel, ylabel="density" if groups else "images", title="score distributions")
    ax.legend(fontsize=8, ncol=2 if len(groups) > 5 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def roc_pr_figure(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> Figure:
    """ROC curve with its AUROC and the precision-recall curve with its AP, the threshold marked."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    fpr, tpr, _ = roc_curve(labels, scores)
    ax1.plot(fpr, tpr, lw=2, label=f"AUROC {auc(fpr, tpr):.4f}")
    ax1.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    precision, recall, _ = precision_recall_curve(labels, scores)
    ap = average_precision_score(labels, scores)
    ax2.plot(recall, precision, lw=2, label=f"average precision {ap:.4f}")
    ax2.axhline(labels.mean(), color="grey", ls=":", lw=1, label=f"chance {labels.mean():.3f}")
    if threshold is not None:
        flagged = scores > threshold
        tp = int((flagged & (labels == 1)).sum())
        t_fpr, t_tpr = flagged[labels == 0].mean(), tp / max(int(labels.sum()), 1)
        t_prec = tp / max(int(flagged.sum()), 1)
        ax1.plot(t_fpr, t_tpr, "ko", label=f"threshold: FPR {t_fpr:.3f}, TPR {t_tpr:.3f}")
        ax2.plot(t_tpr, t_prec, "ko", label=f"threshold: recall {t_tpr:.3f}, precision {t_prec:.3f}")
    ax1.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC curve")
    ax2.set(xlabel="recall", ylabel="precision", title="precision-recall (anomaly = positive)")
    for ax in (ax1, ax2):
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is ax1 else "lower left")
    fig.tight_layout()
    return fig


def _show(ax: Any, image: np.ndarray, **kwargs: Any) -> None:
    """(H, W, C) image in [0, 1] (C = 1 or 3) or an (H, W) map."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, **kwargs}
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set(xticks=[], yticks=[])


def image_grid_figure(
    images: np.ndarray, captions: Sequence[str], title: str, edge_colours: Sequence[Any] | None = None
) -> Figure:
    """A grid of (N, H, W, C) images in [0, 1], each captioned (its score), framed by class colour."""
    n = len(images)
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.65 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, images[i])
        ax.set_title(captions[i], fontsize=7)
        if edge_colours is not None:
            for spine in ax.spines.values():
                spine.set(color=edge_colours[i], linewidth=3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def triplets_figure(
    inputs: np.ndarray,
    reconstructions: np.ndarray | None,
    maps: np.ndarray,
    captions: Sequence[str],
    title: str,
    map_name: str = "anomaly map",
) -> Figure:
    """Columns of input / reconstruction (where there is one) / anomaly map, one per image, one
    colour scale for all maps (from 0, or from the 0.5th percentile for maps that go below 0)."""
    n = len(inputs)
    rows = 3 if reconstructions is not None else 2
    fig, axes = plt.subplots(rows, n, figsize=(1.5 * n + 0.8, 1.75 * rows), squeeze=False)
    vmax = float(np.percentile(maps, 99.5)) if maps.size else 1.0
    vmin = min(0.0, float(np.percentile(maps, 0.5))) if maps.size else 0.0
    for i in range(n):
        _show(axes[0, i], inputs[i])
        if reconstructions is not None:
            _show(axes[1, i], reconstructions[i])
        _show(axes[-1, i], maps[i], cmap="inferno", vmin=vmin, vmax=max(vmax, vmin + 1e-12))
        axes[0, i].set_title(captions[i], fontsize=7)
    names = ("input", "reconstruction", map_name) if reconstructions is not None else ("input", map_name)
    for ax, name in zip(axes[:, 0], names):
        ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def latent_map_figure(
    panels: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray]], np.ndarray]],
    title: str = "latent codes",
) -> Figure:
    """2-D maps (PCA, t-SNE) of latent codes, one panel per (name, (N, 2) points, groups, scores):
    coloured by group (class or label) when there are groups, else by score."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (name, xy, groups, scores) in zip(axes[0], panels):
        if groups:
            for (gname, mask), colour in zip(groups, group_colours(groups)):
                ax.scatter(*xy[mask].T, s=5, alpha=0.6, color=colour, label=gname, linewidths=0)
            ax.legend(fontsize=7, markerscale=2.5, ncol=2 if len(groups) > 5 else 1)
        else:
            points = ax.scatter(*xy.T, s=5, c=scores, cmap="viridis", linewidths=0)
            fig.colorbar(points, ax=ax, label="score")
        ax.set(title=name, xticks=[], yticks=[])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
