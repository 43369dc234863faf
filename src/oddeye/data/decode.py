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
FLOAT_UNSURE = 2.0  # a float image whose maximum is above 1 and at most this: [0, 1] or [0, 255]?


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


def eight_bit(im: Image.Image) -> Image.Image:
    """A gray image of more than 8 bits as an 8-bit "L" one, on a scale that is the same for every
    file of its kind (Pillow's own conversion clips at 255, so 16-bit images came out white and
    float ones black): 16-bit integers (modes "I;16...", and "I" read from a 16-bit PNG, PNM or
    TIFF) divided by 257, so 65535 is 255; other 32-bit integers ("I") as they are within 0..255
    (as Pillow read them before); floats within [0, 1] times 255, within [0, 255] as they are, and
    refused with a maximum in (1, 2], where the two cannot be told apart. Other values raise
    ValueError (the caller names the file); 8-bit images are returned as they are."""
    if im.mode != "F" and im.mode != "I" and not im.mode.startswith("I;16"):
        return im
    values = np.asarray(im)
    if values.size == 0:
        return im.convert("L")
    if im.mode == "F":
        if not np.isfinite(values).all():
            raise ValueError("floating-point pixels that are NaN or infinite")
        lo, hi = float(values.min()), float(values.max())
        if 1 < hi <= FLOAT_UNSURE and lo >= 0:
            raise ValueError(
                f"floating-point pixels up to {hi:.9g}: within [0, 1] overshooting or a dark [0, 255] "
                "image, which cannot be told apart (clip [0, 1] images to 1)"
            )
        if lo < 0 or hi > 255:
            raise ValueError(
                f"floating-point pixels from {lo:.9g} to {hi:.9g}, not within [0, 1] or [0, 255]"
            )
        scaled = values * 255.0 if hi <= 1 else values
    else:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"integer pixels from {lo} to {hi}, not within 16 bits (0 to 65535)")
        scaled = values if im.mode == "I" and not _sixteen_bits(im) and hi <= 255 else values / 257.0
    return Image.fromarray(np.rint(scaled).clip(0, 255).astype(np.uint8), "L")


def _sixteen_bits(im: Image.Image) -> bool:
    """Whether a mode "I" image was stored with 16 bits a pixel (every PNG and PNM that Pillow
    reads as "I" is; a TIFF says so in its BitsPerSample tag)."""
    if im.format in ("PNG", "PPM"):
        return True
    tags = getattr(im, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) else bits
    return bits == 16


def decode(source: str | BinaryIO, mode: str, wh: tuple[int, int] | None = None) -> np.ndarray:
    """The image in ``source`` (a path or a binary file) as uint8 (H, W) or (H, W, 3), converted to
    ``mode`` ("L" or "RGB") on white, resized to ``wh`` (width, height) when given; images of more
    than 8 bits a pixel are brought to 8 on a fixed scale (:func:`eight_bit`). Raises the image
    library's own errors, and ValueError for pixel values out of range (callers say which file)."""
    with warnings_as_errors(), Image.open(source) as im:
        im = on_white(eight_bit(im)).convert(mode)
        if wh is not None and im.size != wh:
            im = im.resize(wh, Image.Resampling.BILINEAR)
        return np.asarray(im)
