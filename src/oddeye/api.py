"""The Python API, mirroring the CLI: ``create``, ``train``, ``load``, ``score``, ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oddeye.config import TrainConfig
from oddeye.data.loaders import load_classes, load_labels
from oddeye.detectors import DEFAULT_DETECTOR, get_spec
from oddeye.errors import OddeyeError, TrainingInterrupted
from oddeye.estimator import Detector, ImagesLike
from oddeye.evaluation import DEFAULT_HEADER, Evaluation, read_scores_csv, write_scores_csv
from oddeye.evaluation import evaluate as _evaluate
from oddeye.reports.report import ReportFiles, ReportInputs, write_report
from oddeye.runs import CHECKPOINT, load_run, prepare_run_dir
from oddeye.thresholds import Threshold, choose_threshold
from oddeye.training.distributed import barrier, on_main, world

LabelsLike = str | Path | np.ndarray


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
    resume: bool = False,
    size: tuple[int, int] | None = None,
    **params: Any,
) -> Detector:
    """``oddeye train``: fit ``detector`` on normal ``images`` and, with ``out``, save the run.

    With ``out``, a checkpoint is saved in it after every epoch; ``resume=True`` continues an
    interrupted training there, ``force=True`` replaces what is there.
    """
    det = create(detector, **params)
    main = world().main  # under torchrun, rank 0 alone writes the run folder
    checkpoint = None
    if out is not None:  # every rank learns the path, or the error, from rank 0
        on_main(lambda: prepare_run_dir(out, force=force, resume=resume))
        checkpoint = Path(out) / CHECKPOINT
    created = main and checkpoint is not None and not checkpoint.parent.exists()
    try:
        det.fit(images, size=size, checkpoint=checkpoint, resume=resume)
    except TrainingInterrupted as e:
        if checkpoint is None or not checkpoint.exists():
            raise
        raise TrainingInterrupted(f"{e}; to continue, run the same command with --resume") from None
    finally:
        if created and checkpoint.parent.is_dir() and not any(checkpoint.parent.iterdir()):
            checkpoint.parent.rmdir()  # a failure before the first checkpoint leaves no empty folder
    if out is not None and main:
        det.save(out, force=True)  # replaces the folder that held the checkpoint
    barrier()  # the run folder is complete before any rank returns
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


def report(
    run: str | Path | Detector | None,
    images: ImagesLike | None,
    out: str | Path,
    *,
    scores: np.ndarray | None = None,
    labels: LabelsLike | None = None,
    classes: LabelsLike | None = None,
    class_names: list[str] | None = None,
    threshold: str | Threshold | None = None,
    size: tuple[int, int] | None = None,
    scores_source: str | None = None,
    progress: bool = True,
) -> ReportFiles:
    """``oddeye report``: an HTML report (and its figures as PNG files) of a run on ``images``.

    ``scores`` skips re-scoring (e.g. from a CSV); without ``run`` and ``images`` the report has the
    score sections only. ``threshold``: a rule ('fpr:0.01', 'top:0.05', 'f1', '200') or a
    :class:`Threshold`; by default the run's own.
    """
    det = run if isinstance(run, Detector) or run is None else load(run, progress=progress)
    data = det.prepare(images, size=size) if det is not None and images is not None else None
    if scores is None:
        if det is None or data is None:
            raise ValueError("report() needs scores, or a run and images to score")
        scores = det.infer(data).scores
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if data is not None and len(data) != n:
        raise OddeyeError(f"{data.source}: expected {n} images (one per score), found {len(data)}")
    label_values = _labels(labels, n)
    if not isinstance(threshold, Threshold):
        threshold = resolve_threshold(det, threshold, scores, label_values)
    inputs = ReportInputs(
        scores=scores,
        scores_source=scores_source or (data.source if data is not None else "<scores>"),
        labels=label_values,
        classes=None if classes is None else load_classes(classes, n),
        class_names=class_names,
        det=det,
        data=data,
        threshold=threshold,
        title=f"oddeye report: {det.detector}" if det is not None else "oddeye report",
    )
    return write_report(out, inputs, progress=progress)


def _labels(labels: LabelsLike | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    return load_labels(labels, n=n)


def resolve_threshold(
    det: Detector | None, rule: str | None, scores: np.ndarray, labels: np.ndarray | None = None
) -> Threshold | None:
    """The threshold ``rule`` asks for (with the run's held-out scores when there is a run), or
    without a rule the run's own (None without a run)."""
    if rule is None:
        return det.threshold_ if det is not None else None
    if det is not None:
        return det.choose_threshold(rule, scores=scores, labels=labels)
    return choose_threshold(rule, scores=scores, labels=labels)
