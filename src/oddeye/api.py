"""The Python API, mirroring the CLI: ``create``, ``train``, ``load``, ``score``, ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oddeye.config import TrainConfig
from oddeye.data.loaders import load_labels
from oddeye.detectors import DEFAULT_DETECTOR, get_spec
from oddeye.estimator import Detector, ImagesLike
from oddeye.evaluation import DEFAULT_HEADER, Evaluation, read_scores_csv, write_scores_csv
from oddeye.evaluation import evaluate as _evaluate
from oddeye.io import check_new_dir
from oddeye.runs import load_run


def create(name: str = DEFAULT_DETECTOR, **params: Any) -> Detector:
    """A new detector by registry name; ``params`` mixes training settings and architecture ones.

    >>> det = oddeye.create("cnn-bn", epochs=20, batch_size=256)
    """
    get_spec(name)
    fields = set(TrainConfig.fields())
    config = TrainConfig().replace(**{k: v for k, v in params.items() if k in fields})
    return Detector(name, config, {k: v for k, v in params.items() if k not in fields})


def train(
    images: ImagesLike,
    detector: str = DEFAULT_DETECTOR,
    out: str | Path | None = None,
    *,
    force: bool = False,
    size: tuple[int, int] | None = None,
    **params: Any,
) -> Detector:
    """``oddeye train``: fit ``detector`` on normal ``images`` and, with ``out``, save the run."""
    det = create(detector, **params)
    if out is not None:
        check_new_dir(out, force)  # fail before training, not after
    det.fit(images, size=size)
    if out is not None:
        det.save(out, force=force)
    return det


def load(run: str | Path, device: str = "auto", progress: bool = True) -> Detector:
    """A fitted detector from a run folder (weights never unpickled)."""
    return load_run(run, device=device, progress=progress)


def score(
    run: str | Path | Detector,
    images: ImagesLike,
    out: str | Path | None = None,
    *,
    header: tuple[str, str] = DEFAULT_HEADER,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """``oddeye score``: scores for ``images`` (higher = more anomalous), optionally as a CSV."""
    det = run if isinstance(run, Detector) else load(run)
    scores = det.score(images, size=size)
    if out is not None:
        write_scores_csv(out, scores, header)
    return scores


def evaluate(scores: str | Path | np.ndarray, labels: str | Path | np.ndarray) -> Evaluation:
    """``oddeye evaluate``: ROC AUC, average precision and score distributions per class."""
    values = read_scores_csv(scores) if isinstance(scores, (str, Path)) else np.asarray(scores)
    if isinstance(labels, (str, Path)):
        return _evaluate(values, load_labels(labels, n=len(values)), str(labels))
    return _evaluate(values, np.asarray(labels))
