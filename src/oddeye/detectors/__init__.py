"""Detector families. Importing this package registers every built-in detector."""

from oddeye.detectors import ladder, memory, transforms  # noqa: F401  (registers the families)
from oddeye.detectors.base import AnomalyModel, InferenceBatch, ReconstructionModel
from oddeye.detectors.registry import DetectorSpec, available, get_spec, register

DEFAULT_DETECTOR = "cnn-bn"

__all__ = [
    "DEFAULT_DETECTOR",
    "AnomalyModel",
    "DetectorSpec",
    "InferenceBatch",
    "ReconstructionModel",
    "available",
    "get_spec",
    "register",
]
