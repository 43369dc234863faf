"""Run folders: weights as safetensors + JSON metadata; loading never unpickles anything.

Layout of a run folder::

    model.safetensors   state dict (tensors only)
    model.json          detector, params, config, input shape, normalisation, versions, statistics,
                        the operating threshold and how it was chosen
    heldout_scores.npy  the held-out normal training images' scores (thresholds, calibration)
    history.csv         one row per epoch (per member, for ensembles)
    training_curve.png  train and held-out loss per epoch
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oddeye.config import TrainConfig
from oddeye.data.imageset import Normalisation
from oddeye.errors import OddeyeError
from oddeye.io import atomic_dir, unwritable, write_text
from oddeye.thresholds import Threshold
from oddeye.training.checkpoint import CHECKPOINT
from oddeye.training.loop import EpochRecord

if TYPE_CHECKING:
    from oddeye.estimator import Detector

FORMAT = "oddeye-run/1"
WEIGHTS, META, HISTORY, CURVE = "model.safetensors", "model.json", "history.csv", "training_curve.png"
HELDOUT_SCORES = "heldout_scores.npy"
HISTORY_COLUMNS = ["model", "epoch", "train_loss", "val_loss", "seconds", "images_per_s", "improved"]


def metadata(det: Detector) -> dict[str, Any]:
    """Everything needed to rebuild and describe a fitted detector, as plain JSON."""
    from oddeye import __version__

    return {
        "format": FORMAT,
        "detector": det.detector,
        "params": det.params,
        "config": det.config.to_dict(),
        "input_shape": list(det.input_shape_),
        "normalisation": det.normalisation_.to_dict(),
        "n_parameters": sum(p.numel() for p in det.model_.parameters()),
        "training": {
            "n_images": det.n_train_images_,
            "device": str(det.device_),
            "precision": det.precision_,
            "seconds": round(det.fit_seconds_, 3),
            "epochs_run": len(det.history_),
            "best_epoch": det.best_epoch_,
            "stopped_early": det.stopped_early_,
        },
        "heldout_scores": {**det.heldout_stats_, "basis": det.heldout_basis_},
        "threshold": det.threshold_.to_dict() if det.threshold_ is not None else None,
        "versions": {"oddeye": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def all_histories(det: Detector) -> dict[str, list[EpochRecord]]:
    """Training histories by model: an ensemble's members, then the detector's own loop."""
    out = dict(getattr(det, "member_histories_", {}))
    if det.history_ or not out:
        out[det.detector] = det.history_
    return out


def history_csv(det: Detector) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for model, history in all_histories(det).items():
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
    as ``analysis_threshold`` when it was chosen with labels."""
    meta = read_metadata(run_dir)
    meta["analysis_threshold" if threshold.uses_labels else "threshold"] = threshold.to_dict()
    return write_text(Path(run_dir) / META, json.dumps(meta, indent=2) + "\n")


def save_run(det: Detector, run_dir: str | Path, force: bool = False) -> Path:
    """Write ``det`` to ``run_dir`` atomically (the folder appears complete or not at all)."""
    from oddeye.reports.plots import plot_training_curve

    state = {k: v.detach().cpu().contiguous() for k, v in det.model_.state_dict().items()}
    with atomic_dir(run_dir, force=force) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / META).write_text(json.dumps(metadata(det), indent=2) + "\n")
        (tmp / HISTORY).write_text(history_csv(det))
        if det.heldout_scores_ is not None:
            np.save(tmp / HELDOUT_SCORES, np.asarray(det.heldout_scores_, dtype=np.float64))
        plot_training_curve(all_histories(det), tmp / CURVE, title=f"{det.detector} training")
    return Path(run_dir)


def read_metadata(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / META
    if not Path(run_dir).is_dir():
        raise OddeyeError(f"{run_dir}: expected a run folder (made by oddeye train), found nothing there")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise OddeyeError(f"{path}: expected the run's metadata file, found nothing there") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OddeyeError(f"{path}: expected JSON metadata, found unreadable data ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise OddeyeError(f"{path}: expected format {FORMAT!r}, found {found!r}")
    return meta


def load_run(run_dir: str | Path, device: str = "auto", progress: bool = True) -> Detector:
    """Rebuild a fitted :class:`Detector` from a run folder, on ``device``."""
    from oddeye.estimator import Detector

    meta = read_metadata(run_dir)
    weights = Path(run_dir) / WEIGHTS
    try:
        config = TrainConfig().replace(**{**meta["config"], "device": device, "progress": progress})
        det = Detector(meta["detector"], config, meta["params"])
        shape = tuple(int(s) for s in meta["input_shape"])
        norm = Normalisation(**meta["normalisation"])
        state = load_file(str(weights))
    except FileNotFoundError:
        raise OddeyeError(f"{weights}: expected the run's weights, found nothing there") from None
    except (SafetensorError, OSError) as e:
        raise OddeyeError(f"{weights}: expected safetensors weights, found unreadable data ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise OddeyeError(
            f"{Path(run_dir) / META}: expected complete metadata, found a problem: {e}"
        ) from None
    try:
        det.restore(state, shape, norm)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise OddeyeError(
            f"{weights}: expected weights matching {meta['detector']}, found: {first}"
        ) from None
    det.heldout_stats_ = meta.get("heldout_scores", {})
    det.heldout_basis_ = det.heldout_stats_.get("basis", "held-out normal training images")
    det.heldout_scores_ = read_heldout_scores(run_dir)
    histories = read_history(run_dir, det.detector)
    det.history_ = histories.pop(det.detector, [])
    det.member_histories_ = histories
    det.threshold_ = _threshold_of(meta, det, Path(run_dir) / META)
    det.metadata_ = meta
    return det


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


def _threshold_of(meta: dict[str, Any], det: Detector, source: Path) -> Threshold | None:
    if meta.get("threshold"):
        return Threshold.from_dict(meta["threshold"], str(source))
    if det.heldout_scores_ is not None:  # runs from before thresholds were saved
        return det.choose_threshold(det.config.threshold)
    return None


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
