"""oddeye: unsupervised image anomaly detection, trained from scratch on normal images.

Scores follow one convention everywhere: higher = more anomalous.
"""

from oddeye._version import __version__
from oddeye.api import ScoreResult, create, evaluate, load, report, score, train
from oddeye.config import TrainConfig
from oddeye.detectors import DEFAULT_DETECTOR, available
from oddeye.errors import InputError, OddeyeError
from oddeye.estimator import Detector
from oddeye.evaluation import Evaluation
from oddeye.scoring import InferenceResult
from oddeye.settings import Settings, resolve_settings
from oddeye.thresholds import Threshold

__all__ = [
    "DEFAULT_DETECTOR",
    "Detector",
    "Evaluation",
    "InferenceResult",
    "InputError",
    "OddeyeError",
    "ScoreResult",
    "Settings",
    "Threshold",
    "TrainConfig",
    "__version__",
    "available",
    "create",
    "evaluate",
    "load",
    "report",
    "resolve_settings",
    "score",
    "train",
]
