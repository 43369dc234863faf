"""Batched inference in eval mode, fp32, without gradients: one code path for every detector."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from oddeye.data.imageset import ImageSet
from oddeye.detectors.base import AnomalyModel, InferenceBatch
from oddeye.training.loop import to_device


@dataclass
class InferenceResult:
    """Scores for a whole image set (higher = more anomalous), with maps when asked for."""

    scores: np.ndarray  # (N,) float64
    anomaly_maps: np.ndarray | None = None  # (N, H, W) float32
    reconstructions: np.ndarray | None = None  # (N, H, W, C) float32 in the input's value range


@torch.no_grad()
def iter_inference(
    model: AnomalyModel,
    data: ImageSet,
    device: torch.device,
    batch_size: int,
    indices: np.ndarray | None = None,
    progress: bool = True,
) -> Iterator[InferenceBatch]:
    """Inference batches over ``data`` (or ``indices`` of it), in order."""
    model.eval()
    n = len(data) if indices is None else len(indices)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=None if progress else True):
        sel = slice(start, start + batch_size) if indices is None else indices[start : start + batch_size]
        yield model.infer(to_device(data.batch(sel), data, device, model.channels_last))


def infer(
    model: AnomalyModel,
    data: ImageSet,
    device: torch.device,
    batch_size: int = 1024,
    maps: bool = False,
    indices: np.ndarray | None = None,
    progress: bool = True,
) -> InferenceResult:
    """Run the model over ``data``; ``maps=True`` also keeps anomaly maps and reconstructions."""
    scores, amaps, recons = [], [], []
    for out in iter_inference(model, data, device, batch_size, indices, progress):
        scores.append(out.score.double().cpu().numpy())
        if maps and out.anomaly_map is not None:
            amaps.append(out.anomaly_map.float().cpu().numpy())
        if maps and out.reconstruction is not None:
            raw = data.normalisation.invert(out.reconstruction.float())  # (B, C, H, W)
            recons.append(raw.permute(0, 2, 3, 1).cpu().numpy())
    return InferenceResult(
        np.concatenate(scores),
        np.concatenate(amaps) if amaps else None,
        np.concatenate(recons) if recons else None,
    )
