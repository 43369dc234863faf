"""Detector families. Importing this package registers every built-in detector."""

from oddeye.detectors import (  # noqa: F401  (registers the families)
    boss,
    denoising,
    descriptors,
    ensemble,
    ladder,
    localnet,
    memory,
    patches,
    svdd,
    transforms,
)
from oddeye.detectors.base import AnomalyModel, InferenceBatch, ReconstructionModel
from oddeye.detectors.registry import DetectorSpec, available, get_spec, register

DEFAULT_DETECTOR = "default"

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
