"""A validated set of images that is never converted to float as a whole.

The raw array (often a read-only memory map) stays in its own dtype; batches are gathered by index
and normalised on the device, so a 1.7 GB uint8 training set never becomes a 6.9 GB float32 copy.
"""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from oddeye.errors import InputError

Layout = Literal["NHWC", "NCHW"]
SCAN_CHUNK = 4096  # images per chunk when scanning for NaN/inf and the value range
FLOAT32_SPAN = (1e-30, 1e30)  # value ranges normalised in float32; others overflow or underflow it


@dataclass(frozen=True)
class Normalisation:
    """Affine map from the raw value range [lo, hi] to [-1, 1] (the course's ``2*x/255 - 1``)."""

    lo: float = 0.0
    hi: float = 255.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` mapped to [-1, 1] as float32; never written in place (it may share the caller's
        array). Ranges float32 cannot resolve (huge, tiny or far from 0) are mapped in float64."""
        span = self.hi - self.lo
        if FLOAT32_SPAN[0] < span < FLOAT32_SPAN[1] and max(abs(self.lo), abs(self.hi)) <= 1e4 * span:
            return (x.float() - self.lo).mul_(2.0 / span).sub_(1.0)
        mid, half = self.lo / 2 + self.hi / 2, self.hi / 2 - self.lo / 2  # finite, unlike span
        return (x.double() - mid).div_(half).clamp_(-1.0, 1.0).float()  # clamp: rounding only

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        mid, half = self.lo / 2 + self.hi / 2, self.hi / 2 - self.lo / 2
        return x * half + mid

    def to_dict(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class Unreadable:
    """A file of a folder that was skipped: its path relative to the folder, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ImageSet:
    """N images of shape (H, W, C), C in {1, 3}, backed by a (possibly memory-mapped) array.

    ``paths``: for a folder, each image's file relative to it (POSIX separators), in image order,
    which CSVs about the images name; None for arrays and array files. ``unreadable``: the folder's
    files that were skipped (``load_images(..., skip_unreadable=True)``), sorted by path.
    """

    array: np.ndarray  # (N, H, W, C) or (N, C, H, W), numeric, finite
    layout: Layout
    source: str
    normalisation: Normalisation
    paths: tuple[str, ...] | None = None
    unreadable: tuple[Unreadable, ...] = ()

    def __post_init__(self) -> None:
        if self.paths is not None and len(self.paths) != len(self):
            raise ValueError(f"{self.source}: {len(self)} images but {len(self.paths)} paths")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape as (H, W, C)."""
        _, a, b, c = self.array.shape
        return (a, b, c) if self.layout == "NHWC" else (b, c, a)

    def batch(self, indices: np.ndarray | slice) -> torch.Tensor:
        """Raw images at ``indices``, in that order, as a (B, C, H, W) tensor in the array's dtype."""
        native = self.array.dtype.newbyteorder("=")  # torch rejects big-endian arrays
        chunk = np.ascontiguousarray(self.array[indices], dtype=native)
        if not chunk.flags.writeable:  # a slice of a read-only memory map: torch warns on those
            chunk = chunk.copy()
        t = torch.from_numpy(chunk)
        return t.permute(0, 3, 1, 2) if self.layout == "NHWC" else t  # (B, C, H, W)

    def display(self, indices: np.ndarray | slice) -> np.ndarray:
        """(B, H, W, C) float images in [0, 1] for display, on the scaling the detector uses."""
        x = self.normalisation.apply(self.batch(indices)).float()  # (B, C, H, W) in [-1, 1]
        return ((x.permute(0, 2, 3, 1).numpy() + 1) / 2).clip(0, 1)

    def release(self, indices: np.ndarray | slice) -> None:
        """Unmap the pages holding the images at ``indices`` (sorted, already used) when the array
        is a memory-mapped file; the page cache keeps them, so a later read costs only a page
        fault. A pass over a file far larger than memory then holds a bounded resident set. No-op
        for other arrays and unsorted index sets."""
        release_pages(self.array, indices)


def release_pages(array: np.ndarray, indices: np.ndarray | slice) -> None:
    """See :meth:`ImageSet.release`; whole pages only, so no image still to be read is touched
    (a page shared with the next image is dropped with a later call)."""
    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not array.flags.c_contiguous or len(array) == 0:
        return
    if isinstance(indices, slice):
        lo, hi, step = indices.indices(len(array))
    else:  # sorted indices: the pages from the first to the last (a pass in order rereads others)
        idx = np.asarray(indices)
        lo, hi, step = (int(idx[0]), int(idx[-1]) + 1, 1) if len(idx) else (0, 0, 1)
        if len(idx) > 1 and not (np.diff(idx) > 0).all():
            return
    if step != 1 or hi <= lo:
        return
    base = np.frombuffer(mm, np.uint8).ctypes.data  # where the mapping starts
    start, row = array.ctypes.data - base, array.strides[0]
    first = (start + lo * row) // mmap.PAGESIZE * mmap.PAGESIZE
    last = (start + hi * row) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        with contextlib.suppress(OSError, ValueError):  # advice only: never fail a read for it
            mm.madvise(mmap.MADV_DONTNEED, first, last - first)


BATCH_BYTES = 64 * 2**20  # at most this much float32 per inference batch, whatever the image size


def batch_images(requested: int, shape: tuple[int, int, int], max_bytes: int = BATCH_BYTES) -> int:
    """Images per inference batch: ``requested``, fewer when images are so large that a batch would
    pass ``max_bytes`` of float32 (1024 images of 64x64x3 are 48 MiB; of 256x256x3, 768 MiB)."""
    per_image = 4 * shape[0] * shape[1] * shape[2]
    return max(1, min(requested, max_bytes // per_image))


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def as_imageset(array: np.ndarray, source: str = "<array>") -> ImageSet:
    """Validate ``array`` as images and wrap it; raises :class:`InputError` with a one-line reason.

    Accepted: (N, H, W) grayscale, (N, H, W, C) and (N, C, H, W) with C = 1 or 3; any real numeric
    dtype; finite values. The array is not copied (a memory map stays a memory map).
    """
    if not isinstance(array, np.ndarray):
        raise InputError(source, "an array of images", type(array).__name__)
    if array.dtype.kind not in "uif" or array.dtype.itemsize > 8:
        expected = "a numeric image array (uint8, int or float of up to 64 bits)"
        raise InputError(source, expected, f"dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise InputError(
            source,
            "images as (N, H, W), (N, H, W, C) or (N, C, H, W)",
            f"{array.ndim} dimension(s), shape {array.shape}",
        )
    if array.shape[0] == 0:
        raise InputError(source, "at least one image", "0 images")
    if array.ndim == 3 and array.shape[-1] in (3, 4) and min(array.shape[:2]) >= 8:  # not N gray HxW
        found = f"one image of shape {array.shape} (give a set of one: x[None], shape (1, H, W, C))"
        raise InputError(source, "images as (N, H, W, C), (N, C, H, W) or (N, H, W)", found)
    if array.ndim == 3:
        array = array.reshape(*array.shape, 1)
    layout = _layout(array.shape, source)
    h, w = (array.shape[1:3]) if layout == "NHWC" else array.shape[2:4]
    if h < 1 or w < 1:
        raise InputError(source, "images at least 1x1 pixel", f"shape {array.shape}")
    return ImageSet(array, layout, source, _normalisation(array, source))


def _layout(shape: tuple[int, ...], source: str) -> Layout:
    if shape[-1] in (1, 3):
        return "NHWC"
    if shape[1] in (1, 3):
        return "NCHW"
    found = shape[-1] if shape[-1] <= 4 else shape[1] if shape[1] <= 4 else None
    what = f"{found} channels (shape {shape})" if found is not None else f"shape {shape}"
    raise InputError(source, "1 (grayscale) or 3 (RGB) channels, as (N,H,W,C) or (N,C,H,W)", what)


def _normalisation(array: np.ndarray, source: str) -> Normalisation:
    """Raw value range mapped to [-1, 1]; floats and wide ints are scanned in chunks, not whole."""
    if array.dtype == np.uint8:
        return Normalisation(0.0, 255.0)
    lo, hi = np.inf, -np.inf
    for start in range(0, array.shape[0], SCAN_CHUNK):
        chunk = np.asarray(array[start : start + SCAN_CHUNK])
        if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            bad = start + int(np.argwhere(~np.isfinite(chunk).reshape(len(chunk), -1).all(1))[0, 0])
            raise InputError(source, "finite pixel values", f"NaN or inf in image {bad}")
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        release_pages(array, slice(start, start + SCAN_CHUNK))
    if lo >= 0.0 and hi <= 1.0 and array.dtype.kind == "f":
        return Normalisation(0.0, 1.0)
    if lo >= 0.0 and hi <= 255.0:
        return Normalisation(0.0, 255.0)
    if hi == lo:  # a constant set: its value maps to -1 (below 0) or +1 (above 255)
        return Normalisation(lo, 0.0) if lo < 0 else Normalisation(0.0, hi)
    return Normalisation(lo, hi)
