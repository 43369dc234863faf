"""Run folders: weights as safetensors + JSON metadata; loading never unpickles anything.

This module reads and writes a plain :class:`RunRecord` (and the weights); it knows nothing of the
estimator. Layout of a run folder::

    model.safetensors   state dict (tensors only)
    model.json          format, the resolved build (detector, every parameter, derived values,
                        epoch caps; ensemble members nested), settings, input shape,
                        normalisation, versions, statistics, the operating threshold, the
                        images added since training (``updates``, from ``oddeye update``)
    heldout_scores.npy  the held-out normal training images' scores (thresholds, calibration)
    history.csv         one row per epoch (per member, for ensembles)
    training_curve.png  train and held-out loss per epoch

Older formats are upgraded on reading (:mod:`oddeye.migrate`), so they load and score as they did.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oddeye._version import __version__
from oddeye.config import TrainConfig
from oddeye.data.imageset import Normalisation
from oddeye.detectors.registry import Build
from oddeye.errors import OddeyeError
from oddeye.io import UMASK, atomic_dir, json_text, unwritable, write_text
from oddeye.migrate import UPGRADES
from oddeye.thresholds import Threshold
from oddeye.training.checkpoint import CHECKPOINT
from oddeye.training.loop import EpochRecord, SetAside

FORMAT = "oddeye-run/7"
WEIGHTS, META, HISTORY, CURVE = "model.safetensors", "model.json", "history.csv", "training_curve.png"
HELDOUT_SCORES = "heldout_scores.npy"
HELDOUT_SAMPLE = "heldout_sample.npy"
SET_ASIDE, SET_ASIDE_SAMPLE = "set_aside.csv", "set_aside_sample.npy"
HISTORY_COLUMNS = ["model", "epoch", "train_loss", "val_loss", "seconds", "images_per_s", "improved"]
HELDOUT = "held-out normal training images"


@dataclass
class TrainingInfo:
    """How training went, as recorded."""

    n_images: int
    device: str
    precision: str
    seconds: float
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    plan: dict[str, Any] | None = None  # the time budget's plan and what each part made of it


@dataclass
class RunRecord:
    """A fitted detector as plain data: what a run folder holds besides the weights."""

    build: Build
    config: TrainConfig
    input_shape: tuple[int, int, int]
    normalisation: Normalisation
    n_parameters: int
    training: TrainingInfo
    history: list[EpochRecord]  # the detector's own loop (empty for ensembles and memory banks)
    member_histories: dict[str, list[EpochRecord]]  # by member label (ensembles)
    heldout_scores: np.ndarray | None
    heldout_sample: np.ndarray | None  # a few held-out images, NHWC as stored (export checks)
    heldout_stats: dict[str, Any]
    heldout_basis: str
    threshold: Threshold | None
    versions: dict[str, str] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)  # images added since (oddeye update)
    extra: dict[str, Any] = field(default_factory=dict)  # other keys of model.json, kept as read
    set_aside: SetAside | None = None  # training images screening set aside (contamination)
    set_aside_paths: tuple[str, ...] | None = None  # their paths, for a folder
    set_aside_sample: np.ndarray | None = None  # the oddest of them, NHWC as stored (the report)

    @property
    def detector(self) -> str:
        return self.build.detector


def versions() -> dict[str, str]:
    return {"oddeye": __version__, "torch": torch.__version__, "python": platform.python_version()}


def metadata(record: RunRecord) -> dict[str, Any]:
    """model.json: everything needed to rebuild and describe a fitted detector, as plain JSON."""
    return {
        **record.extra,
        "format": FORMAT,
        **record.build.to_dict(),
        "config": record.config.to_dict(),
        "input_shape": list(record.input_shape),
        "normalisation": record.normalisation.to_dict(),
        "n_parameters": record.n_parameters,
        "training": asdict(record.training),
        "heldout_scores": {**record.heldout_stats, "basis": record.heldout_basis},
        "threshold": record.threshold.to_dict() if record.threshold is not None else None,
        "versions": record.versions,
        **({"screening": screening_summary(record.set_aside)} if record.set_aside is not None else {}),
        **({"updates": record.updates} if record.updates else {}),  # a key older code keeps as read
    }


def screening_summary(s: SetAside) -> dict[str, Any]:
    """model.json's account of what screening set aside (the images are listed in set_aside.csv)."""
    return {
        "rule": s.rule,
        "bank_images_screened": s.screened,
        "bank_images_set_aside": int((~s.heldout).sum()),
        "heldout_images_set_aside": int(s.heldout.sum()),
        "list": SET_ASIDE,
    }


def write_set_aside(record: RunRecord, folder: Path) -> None:
    """set_aside.csv (``Id[,path],score,heldout``: the training images' ids, most atypical first)
    and a sample of the images (the report's gallery)."""
    s = record.set_aside
    if s is None:
        return
    from oddeye.evaluation import ImageRowsCsv

    order = np.argsort(-s.scores, kind="stable")
    paths = [record.set_aside_paths[i] for i in order] if record.set_aside_paths is not None else None
    with ImageRowsCsv(folder / SET_ASIDE, ("Id", "score", "heldout"), paths, ids=s.indices[order]) as out:
        out.write_rows((float(s.scores[i]), int(s.heldout[i])) for i in order)
    if record.set_aside_sample is not None and len(record.set_aside_sample):
        np.save(folder / SET_ASIDE_SAMPLE, np.ascontiguousarray(record.set_aside_sample))


def read_set_aside(
    run_dir: str | Path, summary: Any
) -> tuple[SetAside | None, tuple[str, ...] | None, np.ndarray | None]:
    """What a run's screening set aside (from ``summary``, model.json's ``screening``, and
    set_aside.csv), the images' paths (a folder's) and the sample of them; Nones for a run
    without screening."""
    if not isinstance(summary, dict):
        return None, None, None
    path = Path(run_dir) / SET_ASIDE
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8", errors="surrogateescape"))))
        ids = np.array([int(r["Id"]) for r in rows], dtype=np.int64)
        scores = np.array([float(r["score"]) for r in rows], dtype=np.float32)
        heldout = np.array([bool(int(r["heldout"])) for r in rows], dtype=bool)
        paths = tuple(r["path"] for r in rows) if rows and "path" in rows[0] else None
        found = SetAside(str(summary["rule"]), int(summary["bank_images_screened"]), ids, scores, heldout)
    except FileNotFoundError:
        raise OddeyeError(
            f"{path}: expected the run's list of set-aside images, found nothing there"
        ) from None
    except (OSError, csv.Error, KeyError, TypeError, ValueError) as e:
        raise OddeyeError(
            f"{path}: expected the run's list of set-aside images, found a problem: {e}"
        ) from None
    sample_path = Path(run_dir) / SET_ASIDE_SAMPLE
    try:
        sample = np.load(sample_path, allow_pickle=False) if sample_path.exists() else None
    except (OSError, ValueError) as e:
        raise OddeyeError(f"{sample_path}: expected set-aside images, found unreadable data ({e})") from None
    return found, paths, sample


def all_histories(record: RunRecord) -> dict[str, list[EpochRecord]]:
    """Training histories by model: an ensemble's members, then the detector's own loop."""
    out = dict(record.member_histories)
    if record.history or not out:
        out[record.detector] = record.history
    return out


def history_csv(record: RunRecord) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for model, history in all_histories(record).items():
        for r in history:
            row = [r.epoch, repr(r.train_loss), repr(r.val_loss), f"{r.seconds:.3f}", f"{r.images_per_s:.1f}"]
            w.writerow([model, *row, int(r.improved)])
    return buf.getvalue()


def read_history(run_dir: str | Path, detector: str) -> dict[str, list[EpochRecord]]:
    """The per-model histories in a run's history.csv (older runs have no ``model`` column)."""
    path = Path(run_dir) / HISTORY
    out: dict[str, list[EpochRecord]] = {}
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        for r in rows:
            record = EpochRecord(
                int(r["epoch"]),
                float(r["train_loss"]),
                float(r["val_loss"]),
                float(r["seconds"]),
                float(r["images_per_s"]),
                bool(int(r["improved"])),
            )
            out.setdefault(r.get("model") or detector, []).append(record)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise OddeyeError(f"{path}: expected the run's training history, found a problem: {e}") from None
    return out


def save_threshold(run_dir: str | Path, threshold: Threshold) -> Path:
    """Record ``threshold`` in the run's model.json (atomically): as the operating threshold, or
    as ``analysis_threshold`` when it was chosen with labels. Older formats are rewritten in the
    current one (the same meaning, see :mod:`oddeye.migrate`)."""
    meta = read_metadata(run_dir)
    meta["analysis_threshold" if threshold.uses_labels else "threshold"] = threshold.to_dict()
    return write_text(Path(run_dir) / META, json_text(meta))


def write_run(
    record: RunRecord, state: dict[str, torch.Tensor], run_dir: str | Path, force: bool = False
) -> Path:
    """Write the record and weights to ``run_dir`` atomically (complete or not there at all)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_dir(run_dir, force=force) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        os.chmod(tmp / WEIGHTS, 0o666 & ~UMASK)
        (tmp / META).write_text(json_text(metadata(record)))
        (tmp / HISTORY).write_text(history_csv(record))
        if record.heldout_scores is not None:
            np.save(tmp / HELDOUT_SCORES, np.asarray(record.heldout_scores, dtype=np.float64))
        if record.heldout_sample is not None:
            np.save(tmp / HELDOUT_SAMPLE, np.ascontiguousarray(record.heldout_sample))
        write_set_aside(record, tmp)
        from oddeye.reports.plots import plot_training_curve  # here: loading never imports matplotlib

        plot_training_curve(all_histories(record), tmp / CURVE, title=f"{record.detector} training")
    return Path(run_dir)


def read_metadata(run_dir: str | Path) -> dict[str, Any]:
    """model.json in the current format (older formats upgraded in memory; the file is untouched)."""
    path = Path(run_dir) / META
    if not Path(run_dir).is_dir():
        found = "a file" if Path(run_dir).exists() else "nothing there"
        raise OddeyeError(f"{run_dir}: expected a run folder (made by oddeye train), found {found}")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise OddeyeError(f"{path}: expected the run's metadata file, found nothing there") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OddeyeError(f"{path}: expected JSON metadata, found unreadable data ({e})") from None
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    known = (*UPGRADES, FORMAT)
    if not isinstance(meta, dict) or found not in known:
        raise OddeyeError(f"{path}: expected format {' or '.join(map(repr, known))}, found {found!r}")
    try:
        while meta["format"] != FORMAT:
            meta = UPGRADES[meta["format"]](meta)
    except (KeyError, TypeError, ValueError) as e:
        raise OddeyeError(f"{path}: expected complete {found} metadata, found a problem: {e}") from None
    return meta


KNOWN_KEYS = {
    "format", "detector", "params", "derived", "epoch_cap", "config", "input_shape", "normalisation",
    "n_parameters", "training", "heldout_scores", "threshold", "versions", "updates",
}  # fmt: skip


def read_run(run_dir: str | Path, device: str = "auto", progress: bool = True) -> tuple[RunRecord, dict]:
    """The record and the weights of a run folder; ``device`` and ``progress`` replace the saved
    settings of the same names (where it is used now, not where it was trained)."""
    meta = read_metadata(run_dir)
    weights = Path(run_dir) / WEIGHTS
    source = Path(run_dir) / META
    try:
        build = Build.from_dict(meta)
        config = TrainConfig.from_dict({**meta["config"], "device": device, "progress": progress})
        shape = tuple(int(s) for s in meta["input_shape"])
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C), found {meta['input_shape']!r}")
        norm = Normalisation(**meta["normalisation"])
        training = TrainingInfo(**meta["training"])
        held = dict(meta.get("heldout_scores") or {})
        basis = str(held.pop("basis", HELDOUT))
        threshold = Threshold.from_dict(meta["threshold"], str(source)) if meta.get("threshold") else None
        n_parameters = int(meta["n_parameters"])
        saved_versions = dict(meta.get("versions") or {})
        updates = read_updates(meta.get("updates") or [])
    except (KeyError, TypeError, ValueError, OddeyeError) as e:
        raise OddeyeError(f"{source}: expected complete metadata, found a problem: {e}") from None
    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise OddeyeError(f"{weights}: expected the run's weights, found nothing there") from None
    except (SafetensorError, OSError) as e:
        raise OddeyeError(f"{weights}: expected safetensors weights, found unreadable data ({e})") from None
    histories = read_history(run_dir, build.detector)
    set_aside, set_aside_paths, set_aside_sample = read_set_aside(run_dir, meta.get("screening"))
    record = RunRecord(
        build=build,
        config=config,
        input_shape=shape,  # type: ignore[arg-type]
        normalisation=norm,
        n_parameters=n_parameters,
        training=training,
        history=histories.pop(build.detector, []),
        member_histories=histories,
        heldout_scores=read_heldout_scores(run_dir),
        heldout_sample=read_heldout_sample(run_dir, shape),
        heldout_stats=held,
        heldout_basis=basis,
        threshold=threshold,
        versions=saved_versions,
        updates=updates,
        extra={k: v for k, v in meta.items() if k not in KNOWN_KEYS},
        set_aside=set_aside,
        set_aside_paths=set_aside_paths,
        set_aside_sample=set_aside_sample,
    )
    return record, state


def read_updates(value: Any) -> list[dict[str, Any]]:
    """model.json's ``updates``: one record per ``oddeye update``, each with its ``added`` and
    ``absorbed`` image counts (a ValueError otherwise)."""
    if not isinstance(value, list) or not all(isinstance(u, dict) for u in value):
        raise ValueError(f"updates must be a list of records, found {value!r:.60}")
    for u in value:
        counts = [u.get("added"), u.get("absorbed")]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ValueError(f"an update must count its added and absorbed images, found {u!r:.60}")
    return [dict(u) for u in value]


def read_heldout_scores(run_dir: str | Path) -> np.ndarray | None:
    """The saved held-out scores (None for runs made before they were saved); never unpickles."""
    path = Path(run_dir) / HELDOUT_SCORES
    if not path.exists():
        return None
    try:
        scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise OddeyeError(f"{path}: expected a .npy array of scores, found unreadable data ({e})") from None
    if scores.ndim != 1 or scores.dtype.kind != "f" or not np.isfinite(scores).all():
        found = f"{scores.dtype} {scores.shape}"
        raise OddeyeError(f"{path}: expected a 1-D array of finite scores, found {found}")
    return scores.astype(np.float64)


def read_heldout_sample(run_dir: str | Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The saved held-out images (None for runs made before they were kept); never unpickles."""
    path = Path(run_dir) / HELDOUT_SAMPLE
    if not path.exists():
        return None
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise OddeyeError(f"{path}: expected a .npy array of images, found unreadable data ({e})") from None
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or images.dtype.kind not in "uif":
        raise OddeyeError(
            f"{path}: expected images of shape (N, {', '.join(map(str, shape))}), found {images.shape}"
        )
    return images


def prepare_run_dir(run_dir: str | Path, force: bool = False, resume: bool = False) -> Path:
    """The checkpoint file for training into ``run_dir``, after checking what is there.

    A run folder is finished (model.json), interrupted (only checkpoint.safetensors) or new. Nothing
    is overwritten silently: ``resume`` continues an interrupted one, ``force`` discards what is
    there and starts over. The folder itself appears with the first checkpoint.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise OddeyeError(f"{path}: expected a folder for the run, found a file")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    finished, interrupted = META in entries, entries == [CHECKPOINT]
    if resume:
        if finished:
            raise OddeyeError(f"{path}: expected an interrupted training to resume, found a finished run")
        if not interrupted:
            found = "nothing to resume" if not entries else f"other files ({', '.join(entries[:3])})"
            raise OddeyeError(f"{path}: expected an interrupted training ({CHECKPOINT}), found {found}")
        return path / CHECKPOINT
    if entries and not force:
        what = "a finished run" if finished else "an interrupted training" if interrupted else "other files"
        hint = "--resume to continue it or --force to start over" if interrupted else "--force to replace it"
        raise OddeyeError(f"{path}: expected a new or empty run folder, found {what} (pass {hint})")
    if entries:
        try:
            shutil.rmtree(path)
        except OSError as e:
            raise unwritable(path, e) from None
    return path / CHECKPOINT
