"""Decoding image files into arrays, with Pillow and NumPy only (no torch: a server running an
exported model uses this too, so it reads uploads exactly as training read the folder)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from oddeye.errors import first_line

GRAY_MODES = ("1", "L", "LA", "La", "I", "F")  # plus every "I;16..." mode
BACKGROUND = 255  # transparent pixels are composited on white (as a viewer shows them)


def reason(e: BaseException) -> str:
    """A short, one-line reason taken from an exception, for a message about a file: an OSError's
    own words without the errno and path, Pillow's "cannot identify" in plain words, at most 100
    characters (:func:`oddeye.errors.first_line` otherwise)."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image format Pillow recognises"
    strerror = getattr(e, "strerror", None)
    line = strerror.strip() if isinstance(strerror, str) and strerror.strip() else first_line(e)
    return line if len(line) <= 100 else line[:97] + "..."


@contextlib.contextmanager
def warnings_as_errors() -> Iterator[None]:
    """Pillow warns (not raises) on damaged files and decompression bombs: make those errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def is_gray(mode: str) -> bool:
    return mode in GRAY_MODES or mode.startswith("I;16")


def on_white(im: Image.Image) -> Image.Image:
    """``im`` with any transparency composited on a white background (RGBA, LA, P with a
    transparent colour); images without transparency are returned as they are."""
    if im.mode not in ("RGBA", "LA", "La", "RGBa", "PA") and "transparency" not in im.info:
        return im
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (BACKGROUND,) * 3 + (255,))
    return Image.alpha_composite(background, rgba)


def decode(source: str | BinaryIO, mode: str, wh: tuple[int, int] | None = None) -> np.ndarray:
    """The image in ``source`` (a path or a binary file) as uint8 (H, W) or (H, W, 3), converted to
    ``mode`` ("L" or "RGB") on white, resized to ``wh`` (width, height) when given. Raises the
    image library's own errors (callers say which file)."""
    with warnings_as_errors(), Image.open(source) as im:
        im = on_white(im).convert(mode)
        if wh is not None and im.size != wh:
            im = im.resize(wh, Image.Resampling.BILINEAR)
        return np.asarray(im)
