"""Loading images and labels: validated :class:`ImageSet` objects and 0/1 label arrays.

Loaded on first use, so that :mod:`oddeye.data.decode` (Pillow and NumPy only) can be imported
without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "GroundTruth": "oddeye.data.masks",
    "ImageSet": "oddeye.data.imageset",
    "Normalisation": "oddeye.data.imageset",
    "as_imageset": "oddeye.data.imageset",
    "digits_classes": "oddeye.data.loaders",
    "digits_one_class": "oddeye.data.loaders",
    "ground_truth": "oddeye.data.masks",
    "image_files": "oddeye.data.loaders",
    "load_images": "oddeye.data.loaders",
    "load_labels": "oddeye.data.loaders",
    "mvtec_category": "oddeye.data.masks",
    "read_idx": "oddeye.data.loaders",
    "write_homework_digits": "oddeye.data.loaders",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from oddeye.data.imageset import ImageSet, Normalisation, as_imageset  # noqa: F401
    from oddeye.data.loaders import (  # noqa: F401
        digits_classes,
        digits_one_class,
        image_files,
        load_images,
        load_labels,
        read_idx,
        write_homework_digits,
    )
    from oddeye.data.masks import GroundTruth, ground_truth, mvtec_category  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oddeye.data' has no attribute {name!r}")
