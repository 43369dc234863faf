"""Loading images and labels: validated :class:`ImageSet` objects and 0/1 label arrays."""

from oddeye.data.imageset import ImageSet, Normalisation, as_imageset
from oddeye.data.loaders import (
    digits_classes,
    digits_one_class,
    load_images,
    load_labels,
    read_idx,
    write_homework_digits,
)

__all__ = [
    "ImageSet",
    "Normalisation",
    "as_imageset",
    "digits_classes",
    "digits_one_class",
    "load_images",
    "load_labels",
    "read_idx",
    "write_homework_digits",
]
