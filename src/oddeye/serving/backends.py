"""What a server scores with: an exported ONNX model (onnxruntime; PyTorch never imported) or a
run folder (the detector itself, on PyTorch). Both answer the same questions the same way."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oddeye._version import __version__
from oddeye.errors import OddeyeError, first_line
from oddeye.onnx_session import input_dtype, open_session
from oddeye.thresholds import Threshold, calibrate


@dataclass
class Backend:
    """A model to serve: its input, its threshold and calibration (never in the graph), and
    ``infer`` (raw images in, scores and maps out). Inference is serialised per process (one model,
    one set of threads: steadier latency than requests fighting for the same cores)."""

    name: str
    platform: str  # "onnxruntime_onnx" | "pytorch"
    source: str
    shape: tuple[int, int, int]  # (H, W, C)
    dtype: str  # "uint8" | "float32"
    threshold: Threshold | None  # the model's saved one
    heldout_scores: np.ndarray  # sorted; the calibrated scale
    map_meaning: str
    detector: str
    versions: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def infer(self, images: np.ndarray, maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def calibrated(self, scores: np.ndarray) -> np.ndarray | None:
        """The calibrated scale (:func:`oddeye.thresholds.calibrate`) of ``scores``; None without
        held-out scores."""
        return calibrate(scores, self.heldout_scores) if len(self.heldout_scores) else None


@dataclass
class OnnxBackend(Backend):
    session: Any = None

    def infer(self, images: np.ndarray, maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        with self._lock:
            score, amap = self.session.run(["score", "anomaly_map"], {"images": images})
        return score.astype(np.float64), (amap if maps else None)


@dataclass
class RunBackend(Backend):
    detector_obj: Any = None

    def infer(self, images: np.ndarray, maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        with self._lock:
            result = self.detector_obj.infer(images, maps=maps)
        return result.scores, result.anomaly_maps


def open_backend(path: str | Path, name: str | None = None) -> Backend:
    """The model at ``path``: an exported ``.onnx`` file or a run folder."""
    p = Path(path)
    if p.is_dir():
        return _run_backend(p, name)
    if p.is_file() and p.suffix.lower() == ".onnx":
        return _onnx_backend(p, name)
    raise OddeyeError(
        f"{p}: expected a run folder (oddeye train) or an .onnx file (oddeye export), found nothing usable"
    )


def _onnx_backend(path: Path, name: str | None) -> OnnxBackend:
    session = open_session(path)
    import onnxruntime  # open_session has found it

    try:
        meta = json.loads(session.get_modelmeta().custom_metadata_map["oddeye"])
    except KeyError:
        raise OddeyeError(
            f"{path}: expected a model made by oddeye export, found no oddeye metadata"
        ) from None
    except ValueError as e:
        raise OddeyeError(
            f"{path}: expected a model made by oddeye export, found unreadable metadata ({first_line(e)})"
        ) from None
    shape = tuple(int(v) for v in meta["input"]["shape"][1:])
    return OnnxBackend(
        name=name or path.stem,
        platform="onnxruntime_onnx",
        source=str(path),
        shape=shape,  # type: ignore[arg-type]
        dtype=meta["input"]["dtype"],
        threshold=Threshold.from_dict(meta["threshold"], str(path)) if meta.get("threshold") else None,
        heldout_scores=np.asarray(meta["calibration"]["heldout_scores"], dtype=np.float64),
        map_meaning=meta["outputs"][1].get("meaning", ""),
        detector=meta["detector"],
        versions={
            "oddeye": __version__,
            "exported_with": meta.get("versions", {}).get("oddeye"),
            "onnxruntime": onnxruntime.__version__,
        },  # fmt: skip
        session=session,
    )


def _run_backend(path: Path, name: str | None) -> RunBackend:
    from oddeye.estimator import Detector

    det = Detector.load(path, progress=False)
    norm = det.normalisation_
    held = det.heldout_scores_
    return RunBackend(
        name=name or path.resolve().name,
        platform="pytorch",
        source=str(path),
        shape=det.input_shape_,
        dtype=input_dtype(norm.lo, norm.hi),
        threshold=det.threshold_,
        heldout_scores=np.sort(held) if held is not None else np.zeros(0),
        map_meaning=det.model_.map_meaning,
        detector=det.detector,
        versions={"oddeye": __version__, **det.record_.versions},
        detector_obj=det,
    )
