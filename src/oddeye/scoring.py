"""Batched inference in eval mode, fp32, without gradients: one code path for every detector."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from oddeye.data.imageset import ImageSet, batch_images
from oddeye.detectors.base import AnomalyModel
from oddeye.progress import Task
from oddeye.training.distributed import gather_arrays, shard, world
from oddeye.training.feed import Feed

T = TypeVar("T")


@dataclass
class InferenceResult:
    """Scores for a whole image set (higher = more anomalous), with maps when asked for."""

    scores: np.ndarray  # (N,) float64
    anomaly_maps: np.ndarray | None = None  # (N, H, W) float32
    reconstructions: np.ndarray | None = None  # (N, H, W, C) float32 in the input's value range


@torch.no_grad()
def iter_batches(
    fn: Callable[[torch.Tensor], T],
    model: AnomalyModel,
    data: ImageSet,
    device: torch.device,
    batch_size: int,
    indices: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "scoring",
) -> Iterator[T]:
    """``fn`` (``model.infer``, ``model.embed``) over ``data`` (or ``indices`` of it), in order."""
    model.eval()
    n = len(data) if indices is None else len(indices)
    batch_size = batch_images(batch_size, data.shape)
    starts = range(0, n, batch_size)
    sels = (slice(i, i + batch_size) if indices is None else indices[i : i + batch_size] for i in starts)
    feed = Feed(data, device, model.channels_last, resident=False)  # one pass: stream, one batch ahead
    with Task(desc, n, "images", progress) as bar:
        for sel, x in feed.stream(sels):
            yield fn(x)
            data.release(sel)  # a sequential pass over a memory-mapped file keeps a bounded RSS
            bar.update(len(x))


def embed(
    model: AnomalyModel,
    data: ImageSet,
    device: torch.device,
    batch_size: int = 1024,
    indices: np.ndarray | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(N, D) latent codes (``model.latent`` says what they are) for ``data`` or ``indices`` of it."""
    parts = iter_batches(model.embed, model, data, device, batch_size, indices, progress, "embedding")
    return np.concatenate([p.float().cpu().numpy() for p in parts])


def iter_results(
    model: AnomalyModel,
    data: ImageSet,
    device: torch.device,
    batch_size: int = 1024,
    maps: bool = False,
    indices: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "scoring",
) -> Iterator[InferenceResult]:
    """The model's results batch by batch, in order, as NumPy: scores (float64) and, with
    ``maps``, anomaly maps (float32) and reconstructions in the input's value range where the
    family has them. The one inference loop: :func:`iter_scores` and :func:`infer` use it."""
    fn = functools.partial(model.infer, maps=True) if maps else model.infer
    for out in iter_batches(fn, model, data, device, batch_size, indices, progress, desc):
        amap = out.anomaly_map.float().cpu().numpy() if maps and out.anomaly_map is not None else None
        recon = None
        if maps and out.reconstruction is not None:
            raw = data.normalisation.invert(out.reconstruction.float())  # (B, C, H, W)
            recon = raw.permute(0, 2, 3, 1).cpu().numpy()
        yield InferenceResult(out.score.double().cpu().numpy(), amap, recon)


def iter_scores(
    model: AnomalyModel,
    data: ImageSet,
    device: torch.device,
    batch_size: int = 1024,
    indices: np.ndarray | None = None,
    progress: bool = True,
    distributed: bool = False,
    desc: str = "scoring",
) -> Iterator[np.ndarray]:
    """Scores batch by batch, in order (float64), for writing as they come.

    ``distributed`` (under torchrun): each rank scores a contiguous shard and every rank then
    gets all the scores in the original order, as one chunk. Every rank must make the same call.
    """
    if distributed and world().active:
        mine = shard(np.arange(len(data)) if indices is None else np.asarray(indices))
        part = iter_scores(model, data, device, batch_size, mine, progress and world().main, desc=desc)
        yield gather_arrays(np.concatenate(list(part)))
        return
    for out in iter_results(model, data, device, batch_size, False, indices, progress, desc):
        yield out.scores


def infer(
    model: AnomalyModel,
    data: ImageSet,
    device: torch.device,
    batch_size: int = 1024,
    maps: bool = False,
    indices: np.ndarray | None = None,
    progress: bool = True,
    distributed: bool = False,
    desc: str = "scoring",
) -> InferenceResult:
    """Run the model over ``data``; ``maps=True`` also keeps anomaly maps and reconstructions.

    ``distributed`` (under torchrun, scores only): each rank scores a contiguous shard and every
    rank gets all the scores in the original order. Every rank must make the same call.
    """
    if not maps:
        chunks = iter_scores(model, data, device, batch_size, indices, progress, distributed, desc)
        return InferenceResult(np.concatenate(list(chunks)))
    parts = list(iter_results(model, data, device, batch_size, True, indices, progress, desc))
    amaps = [p.anomaly_maps for p in parts if p.anomaly_maps is not None]
    recons = [p.reconstructions for p in parts if p.reconstructions is not None]
    return InferenceResult(
        np.concatenate([p.scores for p in parts]),
        np.concatenate(amaps) if amaps else None,
        np.concatenate(recons) if recons else None,
    )
