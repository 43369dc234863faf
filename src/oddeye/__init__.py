"""oddeye: unsupervised image anomaly detection, trained from scratch on normal images.

Scores follow one convention everywhere: higher = more anomalous.

The names below are loaded on first use, so ``import oddeye`` (and the command line, and a server
running an exported ONNX model) do not import PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from oddeye._version import __version__

_LAZY = {
    "ScoreResult": "oddeye.api",
    "create": "oddeye.api",
    "evaluate": "oddeye.api",
    "load": "oddeye.api",
    "outliers": "oddeye.api",
    "report": "oddeye.api",
    "score": "oddeye.api",
    "train": "oddeye.api",
    "update": "oddeye.api",
    "TrainConfig": "oddeye.config",
    "DEFAULT_DETECTOR": "oddeye.detectors",
    "available": "oddeye.detectors",
    "InputError": "oddeye.errors",
    "OddeyeError": "oddeye.errors",
    "Detector": "oddeye.estimator",
    "Evaluation": "oddeye.evaluation",
    "OutlierResult": "oddeye.ranking",
    "InferenceResult": "oddeye.scoring",
    "Settings": "oddeye.settings",
    "resolve_settings": "oddeye.settings",
    "Threshold": "oddeye.thresholds",
}
_SUBMODULES = ("data", "detectors", "training", "reports", "bench")

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from oddeye.api import (  # noqa: F401
        ScoreResult,
        create,
        evaluate,
        load,
        outliers,
        report,
        score,
        train,
        update,
    )
    from oddeye.config import TrainConfig  # noqa: F401
    from oddeye.detectors import DEFAULT_DETECTOR, available  # noqa: F401
    from oddeye.errors import InputError, OddeyeError  # noqa: F401
    from oddeye.estimator import Detector  # noqa: F401
    from oddeye.evaluation import Evaluation  # noqa: F401
    from oddeye.ranking import OutlierResult  # noqa: F401
    from oddeye.scoring import InferenceResult  # noqa: F401
    from oddeye.settings import Settings, resolve_settings  # noqa: F401
    from oddeye.thresholds import Threshold  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"oddeye.{name}")
    raise AttributeError(f"module 'oddeye' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])
