"""Updates: new normal images join a fitted model without training (``oddeye update``).

The new images are split as training splits its images (the run's ``val_fraction`` and seed): most
join the memory banks (:meth:`~oddeye.detectors.base.AnomalyModel.absorb`), the rest are held out.
What was fitted on held-out images is then fitted again on the run's kept held-out sample and the
new held-out images together: an ensemble's fusion scales, and the threshold on their scores
(the run's older held-out scores are on the scale before the refit, so they no longer count).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from oddeye.config import TrainConfig
from oddeye.data.imageset import ImageSet, batch_images
from oddeye.detectors.base import AnomalyModel, Batches
from oddeye.progress import Task, clock, say
from oddeye.training.feed import Feed
from oddeye.training.loop import part_name, split_indices

ADDED_ONLY = "normal images just added (none held out: optimistic)"


@dataclass
class Absorbed:
    """What absorbing a set of new images did: which joined the banks, which were held out, and
    the held-out scores the threshold is now chosen on (with what they are, in words)."""

    absorbed: np.ndarray  # indices into the new images
    held_out: np.ndarray  # indices into the new images
    scores: np.ndarray  # (N,) float64: the kept sample's, then the new held-out images'
    basis: str


def absorb_images(
    model: AnomalyModel,
    data: ImageSet,
    sample: ImageSet | None,
    seen: int,
    config: TrainConfig,
    device: torch.device,
) -> Absorbed:
    """``model`` absorbs the prepared new images ``data`` (in place), refitting its score scales on
    the held-out ``sample`` the run kept (None: none) and the new held-out images; ``seen``: the
    images its banks were built from."""
    absorbed, held_out = split_indices(
        len(data), config.val_fraction, np.random.default_rng(config.seed), config.max_heldout
    )
    kept = [] if sample is None else [(sample, np.arange(len(sample)))]
    step, shown = batch_images(config.score_batch_size, data.shape), config.progress
    new = passes([(data, absorbed)], device, model.channels_last, step, "absorbing the new images", shown)
    heldout = passes([*kept, (data, held_out)], device, model.channels_last, step, "held-out images", shown)
    started = time.perf_counter()
    with torch.no_grad():
        model.eval()
        model.absorb(new, heldout, seen)
        refit = f", scales refitted on {len(heldout) or len(new)} images" if model.members() else ""
        took = clock(time.perf_counter() - started)
        say(f"{part_name(model)}: {len(new)} images absorbed{refit} in {took}", shown)
        if len(heldout):
            basis = heldout_words(len(heldout) - len(held_out), len(held_out), len(data))
            return Absorbed(absorbed, held_out, scores_of(model, heldout), basis)
        return Absorbed(absorbed, held_out, scores_of(model, new), ADDED_ONLY)


def passes(
    parts: list[tuple[ImageSet, np.ndarray]],
    device: torch.device,
    channels_last: bool,
    step: int,
    desc: str,
    shown: bool,
) -> Batches:
    """The images at each (set, indices) of ``parts``, one set after the other, as normalised
    batches of at most ``step`` images: one pass per call."""
    total = sum(len(indices) for _, indices in parts)

    def gen() -> Iterator[torch.Tensor]:
        with Task(f"pass over the {desc}", total, "images", shown, leave=False, final_line=False) as bar:
            for data, indices in parts:
                feed = Feed(data, device, channels_last, resident=False)
                for idx, x in feed.stream(indices[i : i + step] for i in range(0, len(indices), step)):
                    yield x
                    bar.update(len(idx))

    return Batches(gen, total)


def scores_of(model: AnomalyModel, batches: Batches) -> np.ndarray:
    """(N,) float64 scores of the images of ``batches()``, in order (eval mode, no gradients)."""
    parts = [model.infer(x).score.double().cpu().numpy() for x in batches()]
    return np.concatenate(parts) if parts else np.zeros(0)


def heldout_words(kept: int, held: int, added: int) -> str:
    """What the held-out scores after an update are, in words (a threshold's basis quotes it)."""
    new = f"{held} of the {added} images added" if held else f"none of the {added} images added"
    return f"held-out normal images ({kept} kept by the run, {new})"


def images_sha256(data: ImageSet) -> str:
    """SHA-256 of the images' bytes as loaded, in input order: each image H x W x C in its dtype
    (uint8 for image files and uint8 arrays), native byte order."""
    digest = hashlib.sha256()
    step = batch_images(1024, data.shape)
    for start in range(0, len(data), step):
        part = slice(start, start + step)
        digest.update(data.batch(part).permute(0, 2, 3, 1).contiguous().numpy().tobytes())
        data.release(part)
    return digest.hexdigest()


def bank_images(
    n_images: int, updates: list[dict[str, Any]], val_fraction: float, max_heldout: int = 0
) -> int:
    """How many images a run's memory banks were built from: the training images less those held
    out, then every update's absorbed images (``n_images`` counts every image, added ones too)."""
    first = n_images - sum(int(u["added"]) for u in updates)
    rng = np.random.default_rng(0)
    held = len(split_indices(first, val_fraction, rng, max_heldout)[1]) if first > 0 else 0
    return first - held + sum(int(u["absorbed"]) for u in updates)
