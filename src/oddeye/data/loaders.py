"""Reading images and labels from files, and writing the built-in digits data set.

Every problem with the user's files is raised as an :class:`InputError` naming the file, what was
expected and what was found; no NumPy, Pillow, gzip or zip exception escapes for bad input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from oddeye.data.decode import decode, is_gray, reason, warnings_as_errors
from oddeye.data.imageset import ImageSet, Normalisation, Unreadable, as_imageset
from oddeye.errors import InputError
from oddeye.progress import Task, track

PathArg = str | os.PathLike
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
RESIZE_HINT = "the size option (--size HxW) resizes every image"
OTHER_SIZES = 0.1  # share of a folder's images that may be of other sizes (one always), skipped
HIDDEN = ("__MACOSX", ".ipynb_checkpoints")  # folders (and any name starting with ".") never read
EAGER_SHARE = 0.25  # a folder is decoded whole when it takes at most this share of free memory
EAGER_MAX = 4_000_000_000  # and at most this many bytes (the homework set is 1.7 GB)
READ_CHUNK = 1 << 20  # bytes per read when decompressing an idx.gz file
CHECK_CHUNK = 256  # files per step when checking that a folder read lazily decodes
# what np.load raises on a bad file; zipfile adds NotImplementedError (unknown compression) and
# RuntimeError (encrypted member)
NPY_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)
NPY_ERRORS += (RuntimeError, OverflowError, MemoryError)
NPY_HEADER_MAX = 10_000  # bytes; numpy's own default limit for a .npy header
LABELS_EXPECTED = "labels 0 (normal) or 1 (anomaly)"
CLASS_ID_MAX = 2**53  # class ids are whole numbers up to this size, exact in float64 and int64
HOMEWORK_FILES = {
    "train": "trainingset.npy",
    "test": "testingset.npy",
    "labels": "testing_labels.npy",
    "digits": "testing_digits.npy",
}


# --------------------------------------------------------------------------------------- images
def load_images(
    path: PathArg | np.ndarray | ImageSet,
    *,
    size: tuple[int, int] | None = None,
    progress: bool = True,
    skip_unreadable: bool = False,
) -> ImageSet:
    """Images from a .npy/.npz(:NAME)/idx(.gz) file or a folder of image files (or an array).

    ``size`` = (height, width) resizes the images of a folder; arrays are used at their own size
    (one of another size is refused, rather than the option silently ignored); ``progress``
    shows a progress bar while a folder is decoded. ``skip_unreadable``: a folder's files that
    cannot be decoded, and without ``size`` those of another size than most, are left out and
    listed in the set's ``unreadable`` (path and reason) instead of stopping with an error (a
    folder too large to decode at once is then decoded once more, to check every file).
    """
    if not isinstance(path, str | os.PathLike | np.ndarray | ImageSet):
        kind = type(path).__name__
        stack = " (np.stack a list of images)" if isinstance(path, list | tuple) else ""
        raise InputError(
            "images", "a path (.npy, .npz, idx, folder) or an array of images", f"a {kind}{stack}"
        )
    if size is not None and not _is_folder(path):  # a folder resizes; an array must fit
        return _fits(load_images(path, progress=progress), size)
    if isinstance(path, ImageSet):
        return path
    if isinstance(path, np.ndarray):
        return as_imageset(path, "<array>")
    p, name = _resolve(path)
    if p.is_dir() and name is None:
        return _load_folder(p, size, progress, skip_unreadable)
    if name is not None or _suffix(p) == ".npz":
        return as_imageset(_read_npz(p, name), str(path))
    if _suffix(p) == ".npy":
        return as_imageset(_read_npy(p, mmap=True), str(p))
    if _is_idx(p):
        arr = _read_idx(p)
        if arr.ndim != 3:
            raise InputError(p, "idx images with 3 dimensions (N, H, W)", f"shape {arr.shape}")
        return as_imageset(arr, str(p))
    expected = "a .npy, .npz or idx(.gz) file, or a folder of images"
    raise InputError(p, expected, f"a '{_suffix(p)}' file")


def _is_folder(path: PathArg | np.ndarray | ImageSet) -> bool:
    if isinstance(path, np.ndarray | ImageSet):
        return False
    p, name = _resolve(path)
    return p.is_dir() and name is None


def _fits(data: ImageSet, size: tuple[int, int]) -> ImageSet:
    """An array file's images, which the size option cannot resize, at that size or refused."""
    h, w = _check_size(size)
    if data.shape[:2] != (h, w):
        expected = f"images of {h}x{w} (HxW) as --size asks (it resizes a folder's image files, not an array)"
        raise InputError(data.source, expected, f"{data.shape[0]}x{data.shape[1]}")
    return data


def _resolve(path: PathArg) -> tuple[Path, str | None]:
    """The existing file or folder meant by ``path``, and the array name of ``FILE.npz:NAME``."""
    text = os.fspath(path)
    p, name = Path(text), None
    head, sep, tail = text.rpartition(":")
    if not p.exists() and sep and head.lower().endswith(".npz"):
        p, name = Path(head), tail
    if not p.exists():
        raise InputError(p, "an existing file or folder", "nothing there")
    if not (p.is_file() or p.is_dir()):  # reading a FIFO or a device could block or never end
        raise InputError(p, "a regular file or a folder", "a pipe, socket or device")
    return p, name


def _suffix(p: Path) -> str:
    return p.suffix.lower()


def _is_idx(p: Path) -> bool:
    name = p.name.lower().removesuffix(".gz")
    return "idx" in name and p.is_file()


_reason = reason


# ------------------------------------------------------------------------------------ npy / npz
def _read_npy(p: Path, *, mmap: bool) -> np.ndarray:
    """A .npy array, memory-mapped (read-only) when ``mmap``; never unpickled.

    The header is checked against the file's size first, so a header declaring more data than
    the file holds is refused before anything is mapped or allocated.
    """
    try:
        with p.open("rb") as f:
            shape, dtype = _npy_header(p, f)
            found = p.stat().st_size - f.tell()
        _check_data_size(p, shape, dtype, found)
        if not mmap:
            _check_fits(p, math.prod(shape) * dtype.itemsize)
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except NPY_ERRORS as e:
        reason = _reason(e)
    raise InputError(p, "a NumPy .npy array", f"unreadable data ({reason})")


def _npy_header(p: Path | str, f: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header (format 1.0 or 2.0), leaving ``f`` at the data.

    numpy's own header readers do the parsing (a literal, never code); any exception they raise
    on a malformed header becomes one InputError line.
    """
    fmt = np.lib.format
    what = "a NumPy .npy array"
    head = f.read(len(fmt.MAGIC_PREFIX) + 2)
    if len(head) < len(fmt.MAGIC_PREFIX) + 2 or not head.startswith(fmt.MAGIC_PREFIX):
        raise InputError(p, what, "unreadable data (not a .npy file)")
    version = tuple(head[-2:])
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:  # 3.0 only holds structured dtypes with non-Latin-1 field names
        raise InputError(p, f"{what} (format 1.0 or 2.0)", f"format {version[0]}.{version[1]}")
    try:
        shape, _, dtype = readers[version](f, max_header_size=NPY_HEADER_MAX)
    except Exception as e:  # noqa: BLE001 - numpy's header parsing raises many kinds on junk
        raise InputError(p, what, f"a malformed header ({_reason(e)})") from None
    if dtype.hasobject:
        raise InputError(p, "an array of numbers (Python objects are never unpickled)", f"dtype {dtype}")
    return tuple(shape), dtype


def _check_data_size(p: Path | str, shape: tuple[int, ...], dtype: np.dtype, found: int) -> None:
    """The header's ``shape`` x ``dtype`` must account for exactly ``found`` bytes of data, and
    be addressable (numpy's sizes are int64: a zero-size shape with huge other sides overflows)."""
    _check_addressable(p, shape, dtype)
    expected = math.prod(shape) * dtype.itemsize
    if found != expected:
        raise InputError(p, f"{expected} bytes of data for shape {shape} ({dtype})", f"{found} bytes")


def _check_addressable(p: Path | str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A zero-size shape whose other sides overflow int64 (other shapes fail on their size)."""
    if 0 in shape and math.prod(d for d in shape if d) * max(dtype.itemsize, 1) >= 2**63:
        raise InputError(p, "an array shape numpy can address (under 2^63 bytes)", f"shape {shape}")


def _check_fits(p: Path | str, nbytes: int) -> None:
    """Refuse data that cannot fit in the memory this process may still use."""
    free = available_memory()
    if nbytes > free:
        raise InputError(p, f"data that fits in memory ({_size(free)} available)", f"{_size(nbytes)} of data")


def available_memory() -> int:
    """Bytes this process can still allocate: MemAvailable, capped by an address-space limit."""
    free = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    if free is None:
        try:
            free = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):  # not on this platform
            return 1 << 62
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource  # POSIX only

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            free = min(free, soft - _address_space_used())
    return max(free, 0)


def _address_space_used() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _size(nbytes: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}" if nbytes < 1e18 else f"{nbytes:.3g} bytes"
    return f"{nbytes} bytes"


def _read_npz(p: Path, name: str | None) -> np.ndarray:
    """The only array of a .npz archive, or the one called ``name``.

    The member's header is checked against its size in the archive, and that size against the
    free memory, before numpy allocates the array.
    """
    if not zipfile.is_zipfile(p):
        raise InputError(p, "a NumPy .npz archive", "unreadable data (not a zip archive)")
    try:
        with zipfile.ZipFile(p) as archive:
            members = {m.filename.removesuffix(".npy"): m for m in archive.infolist()}
            names = list(members)
            if name is None and len(names) == 1:
                name = names[0]
            if name is not None and name in members:
                info = members[name]
                with archive.open(info) as f:
                    shape, dtype = _npy_header(f"{p}:{name}", f)
                    _check_data_size(f"{p}:{name}", shape, dtype, info.file_size - f.tell())
                _check_fits(f"{p}:{name}", info.file_size)
                with np.load(p, allow_pickle=False) as npz:
                    return npz[name]
    except NPY_ERRORS as e:
        raise InputError(p, "a NumPy .npz archive", f"unreadable data ({_reason(e)})") from None
    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    if name is None:
        expected = f"exactly one array (or pick one as {p}:NAME)"
        raise InputError(p, expected, f"{len(names)} arrays ({listed or 'none'})")
    raise InputError(p, f"one of the arrays {listed or '(none)'}", f"no array named {name!r}")


# ------------------------------------------------------------------------------------------ idx
def _read_idx(p: Path) -> np.ndarray:
    """An idx (MNIST format) array, memory-mapped when uncompressed; big-endian made native."""
    gz = p.name.lower().endswith(".gz")
    try:
        with gzip.open(p, "rb") if gz else p.open("rb") as f:
            dtype, dims = _idx_header(p, f)
            _check_addressable(p, dims, dtype)
            expected = math.prod(dims) * dtype.itemsize
            offset = 4 + 4 * len(dims)
            if gz:
                _check_fits(p, expected)
            data = _read_capped(f, expected + 1) if gz else None
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(p, "an idx file (MNIST format)", f"unreadable data ({_reason(e)})") from None
    found = len(data) if data is not None else p.stat().st_size - offset
    if found != expected:
        raise InputError(p, f"{expected} bytes of data for shape {dims}", f"{found} bytes")
    if expected == 0:  # nothing to read: images and labels both need at least one
        raise InputError(p, "an idx file holding at least one value", f"shape {dims}")
    if data is not None:
        arr = np.frombuffer(data, dtype).reshape(dims)
    else:
        arr = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=dims)
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _idx_header(p: Path, f: BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_DTYPES:
        found = f"header bytes {head.hex(' ') or '(empty file)'}"
        raise InputError(p, "an idx file (MNIST format: 00 00 TYPE NDIM)", found)
    ndim = head[3]
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise InputError(p, f"an idx header with {ndim} dimension sizes", "a truncated header")
    return np.dtype(IDX_DTYPES[head[2]]), struct.unpack(f">{ndim}I", raw)


def _read_capped(f: BinaryIO, cap: int) -> bytearray:
    """At most ``cap`` bytes, read in chunks so a lying header never triggers a huge allocation."""
    data = bytearray()
    while len(data) < cap:
        chunk = f.read(min(READ_CHUNK, cap - len(data)))
        if not chunk:
            break
        data += chunk
    return data


# --------------------------------------------------------------------------------------- folder
def _load_folder(
    folder: Path, size: tuple[int, int] | None, progress: bool, skip_unreadable: bool = False
) -> ImageSet:
    """Every image file under ``folder`` (sorted by relative path) as one uint8 (N, H, W, C), with
    those relative paths as ``paths``. ``skip_unreadable``: files that cannot be decoded (and,
    without ``size``, files of another size than most) are listed in ``unreadable`` and left out,
    instead of stopping with an error."""
    files = _image_files(folder)
    if not files:
        expected = f"at least one image file ({', '.join(IMAGE_SUFFIXES)})"
        raise InputError(folder, expected, "none")
    skipped: list[Unreadable] | None = [] if skip_unreadable else None
    files, infos = _headers(folder, files, skipped)  # pass 1: sizes and modes, no pixels decoded
    if size is None:
        w, h = _common_size(folder, files, [s for s, _ in infos], skipped)
        files, infos = _of_size(folder, files, infos, (w, h), skipped)
    else:
        h, w = _check_size(size)
    _check_any(folder, files, skipped)
    gray = all(is_gray(mode) for _, mode in infos)
    mode, channels = ("L", 1) if gray else ("RGB", 3)
    if len(files) * h * w * channels > min(EAGER_MAX, EAGER_SHARE * available_memory()):  # decode when used
        if skipped is not None:
            files = _decodable(folder, files, mode, (w, h), skipped, progress)
        lazy = FolderImages(files, mode, (w, h), channels)
        paths = _relative(folder, files)
        return ImageSet(lazy, "NHWC", str(folder), Normalisation(), paths, _sorted(skipped))
    array = np.empty((len(files), h, w, channels), np.uint8)
    kept: list[Path] = []
    for f in track(files, f"reading {folder}", len(files), "images", progress):  # pass 2: decode
        try:
            array[len(kept)] = _decode(f, mode, (w, h)).reshape(array.shape[1:])
        except UnreadableImage as e:  # a truncated file fails only here
            if skipped is None:
                raise
            skipped.append(Unreadable(_name(folder, f), e.reason))
            continue
        kept.append(f)
    _check_any(folder, kept, skipped)
    data = as_imageset(array[: len(kept)], str(folder))
    return dataclasses.replace(data, paths=_relative(folder, kept), unreadable=_sorted(skipped))


def _name(folder: Path, f: Path) -> str:
    return f.relative_to(folder).as_posix()


def _relative(folder: Path, files: list[Path]) -> tuple[str, ...]:
    return tuple(_name(folder, f) for f in files)


def _sorted(skipped: list[Unreadable] | None) -> tuple[Unreadable, ...]:
    return tuple(sorted(skipped or (), key=lambda u: u.path))


def _headers(
    folder: Path, files: list[Path], skipped: list[Unreadable] | None
) -> tuple[list[Path], list[tuple[tuple[int, int], str]]]:
    """The files whose headers read, with their (width, height) and mode; an unreadable one
    raises, or joins ``skipped`` when there is such a list."""
    kept, infos = [], []
    for f in files:
        try:
            infos.append(_peek(f))
        except UnreadableImage as e:
            if skipped is None:
                raise
            skipped.append(Unreadable(_name(folder, f), e.reason))
            continue
        kept.append(f)
    return kept, infos


def _of_size(
    folder: Path,
    files: list[Path],
    infos: list[tuple[tuple[int, int], str]],
    wh: tuple[int, int],
    skipped: list[Unreadable] | None,
) -> tuple[list[Path], list[tuple[tuple[int, int], str]]]:
    """The files of size ``wh`` (every file, unless ``skipped`` collects the others). More than
    :data:`OTHER_SIZES` of the files at other sizes is a set of many sizes, not a few strays: an
    error, not half the set skipped."""
    if skipped is None:
        return files, infos
    kept = [i for i, (found, _) in enumerate(infos) if found == wh]
    others = len(files) - len(kept)
    if others > max(1, OTHER_SIZES * len(files)):
        odd = next(i for i, (found, _) in enumerate(infos) if found != wh)
        (fw, fh), name = infos[odd][0], _name(folder, files[odd])
        expected = f"images of one size ({RESIZE_HINT})"
        found = f"{others} of {len(files)} not at the {wh[1]}x{wh[0]} (HxW) of most, e.g. {name} at {fh}x{fw}"
        raise InputError(folder, expected, found)
    for f, ((fw, fh), _) in zip(files, infos, strict=True):
        if (fw, fh) != wh:
            sizes = f"expected {wh[1]}x{wh[0]} (HxW) like most images here, found {fh}x{fw}"
            skipped.append(Unreadable(_name(folder, f), f"{sizes}; {RESIZE_HINT}"))
    return [files[i] for i in kept], [infos[i] for i in kept]


def _check_any(folder: Path, files: list[Path], skipped: list[Unreadable] | None) -> None:
    """At least one readable image must remain once the unreadable ones are skipped."""
    if files or not skipped:
        return
    first = min(skipped, key=lambda u: u.path)
    found = f"none ({len(skipped)} unreadable, e.g. {first.path}: {first.reason})"
    raise InputError(folder, "at least one readable image file", found)


def _decodable(
    folder: Path,
    files: list[Path],
    mode: str,
    wh: tuple[int, int],
    skipped: list[Unreadable],
    progress: bool,
) -> list[Path]:
    """The files that decode (a full pass, in parallel threads, pixels dropped): a folder read
    lazily must fail on no file later; the others join ``skipped``."""

    def check(f: Path) -> str | None:
        try:
            _decode(f, mode, wh)
        except UnreadableImage as e:
            return e.reason
        return None

    kept = []
    with Task(f"checking {folder}", len(files), "images", progress) as task:
        for start in range(0, len(files), CHECK_CHUNK):
            chunk = files[start : start + CHECK_CHUNK]
            for f, reason in zip(chunk, _decoder_pool().map(check, chunk), strict=True):
                if reason is None:
                    kept.append(f)
                else:
                    skipped.append(Unreadable(_name(folder, f), reason))
            task.update(len(chunk))
    _check_any(folder, kept, skipped)
    return kept


class FolderImages:
    """A folder's images as a read-only uint8 (N, H, W, C) array that decodes on indexing.

    For folders too large to decode into memory at once (more than ``EAGER_MAX`` bytes or
    ``EAGER_SHARE`` of the free memory): ``ImageSet.batch`` indexes it one batch at a time, and
    the files of a batch are decoded in parallel threads (Pillow releases the GIL meanwhile).
    """

    def __init__(self, files: list[Path], mode: str, wh: tuple[int, int], channels: int) -> None:
        self.files, self.mode, self.wh = files, mode, wh
        self.shape = (len(files), wh[1], wh[0], channels)
        self.dtype, self.ndim = np.dtype(np.uint8), 4
        self.nbytes = math.prod(self.shape)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        picked = np.arange(len(self.files))[index]
        out = np.empty((len(picked), *self.shape[1:]), np.uint8)

        def decode(k: int) -> None:
            out[k] = _decode(self.files[picked[k]], self.mode, self.wh).reshape(self.shape[1:])

        list(_decoder_pool().map(decode, range(len(picked))))
        return out


@functools.cache
def _decoder_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="oddeye-decode")


def colour_file(data: ImageSet) -> str | None:
    """The first colour file of a folder read as colour because of it (some files are gray: a path
    to it), or None (not a folder, or every file colour)."""
    if data.paths is None or not Path(data.source).is_dir():
        return None
    first, gray = None, False
    for rel in data.paths:
        with contextlib.suppress(UnreadableImage):
            if is_gray(_peek(Path(data.source) / rel)[1]):
                gray = True
            elif first is None:
                first = str(Path(data.source) / rel)
        if gray and first is not None:
            return first
    return None


def image_files(folder: PathArg) -> list[Path]:
    """The image files a folder is read from, in the order of the images (sorted by path)."""
    return _image_files(Path(folder))


def _image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, less hidden ones: a name (of the file or a folder on its
    way) starting with "." (macOS's "._" resource forks, Jupyter's checkpoints) or ``__MACOSX``."""
    found = [
        f
        for f in folder.rglob("*")
        if _suffix(f) in IMAGE_SUFFIXES and not _hidden(f.relative_to(folder)) and f.is_file()
    ]
    return sorted(found, key=lambda f: f.relative_to(folder).as_posix())


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part in HIDDEN for part in relative.parts)


class UnreadableImage(InputError):
    """An image file the image library cannot read; ``reason`` says why, in its own words."""

    def __init__(self, f: Path, reason: str) -> None:
        self.reason = reason
        super().__init__(f, "a readable image", f"unreadable image data ({reason})")


def _peek(f: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and Pillow mode of an image file, read from its header only."""
    try:
        with warnings_as_errors(), Image.open(f) as im:
            return im.size, im.mode
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many kinds on malformed files
        raise UnreadableImage(f, _reason(e)) from None


def _decode(f: Path, mode: str, wh: tuple[int, int]) -> np.ndarray:
    try:
        return decode(f, mode, wh)
    except Exception as e:  # noqa: BLE001 - as in _peek; a truncated file fails only here
        raise UnreadableImage(f, _reason(e)) from None


def _common_size(
    folder: Path, files: list[Path], sizes: list[tuple[int, int]], skipped: list[Unreadable] | None = None
) -> tuple[int, int]:
    """The (width, height) shared by all images: the size of most of them (a tie: the first
    file's), and an error naming the first file of another size; with ``skipped`` (files of
    other sizes are skipped, not refused) that size alone."""
    if not sizes:
        return 1, 1  # no readable file: the caller says so
    (w, h), count = Counter(sizes).most_common(1)[0]
    if skipped is not None:
        return w, h
    for f, (fw, fh) in zip(files, sizes, strict=True):
        if (fw, fh) != (w, h):
            first = _name(folder, files[0])
            like = f"like most images here ({count} of {len(sizes)})" if count > 1 else f"like {first}"
            expected = f"images of {h}x{w} (HxW) {like}; {RESIZE_HINT}"
            raise InputError(f, expected, f"{fh}x{fw}")
    return w, h


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    pair = isinstance(size, tuple | list) and len(size) == 2
    if not pair or not all(isinstance(v, int | np.integer) and v > 0 for v in size):
        raise InputError("size", "two positive integers (height, width)", repr(size))
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------------------- labels
def load_labels(path: PathArg | np.ndarray, n: int | None = None) -> np.ndarray:
    """0/1 labels (1 = anomaly) as int64 from .npy/.npz(:NAME)/.csv/.txt/idx(.gz) or an array.

    CSV/text: an optional header line; with two or more columns the first is an id 0..N-1 (rows
    may be in any order) and the last the label. ``n``: the number of labels required.
    """
    arr, source = _label_array(path)
    return _check_labels(arr, source, n)


def load_classes(path: PathArg | np.ndarray, n: int | None = None) -> np.ndarray:
    """Integer class ids per image (e.g. Fashion-MNIST's 0-9), read like labels, any values."""
    arr, source = _label_array(path, binary=False)
    return _check_labels(arr, source, n, binary=False)


def _label_array(path: PathArg | np.ndarray, binary: bool = True) -> tuple[np.ndarray, str]:
    if isinstance(path, np.ndarray):
        return path, "<labels>"
    p, name = _resolve(path)
    if p.is_dir():
        raise InputError(p, "a file of labels", "a folder")
    if name is not None or _suffix(p) == ".npz":
        arr = _read_npz(p, name)
    elif _suffix(p) == ".npy":
        arr = _read_npy(p, mmap=False)
    elif _suffix(p) in (".csv", ".txt"):
        arr = _read_label_text(p, binary)
    elif _is_idx(p):
        arr = _read_idx(p)
    else:
        expected = "a .npy, .npz, .csv, .txt or idx(.gz) file of labels"
        raise InputError(p, expected, f"a '{_suffix(p)}' file")
    return arr, str(path)


def _check_labels(arr: np.ndarray, source: str, n: int | None, binary: bool = True) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(source, "a 1-D array of labels", f"shape {arr.shape}")
    if arr.size == 0:
        raise InputError(source, "at least one label", "none")
    expected = LABELS_EXPECTED if binary else "integer class ids"
    if arr.dtype.kind not in "buif":
        raise InputError(source, expected, f"non-numeric dtype {arr.dtype}")
    bad = np.flatnonzero((arr != 0) & (arr != 1) if binary else ~_is_class_id(arr.astype(np.float64)))
    if bad.size:
        i = int(bad[0])
        raise InputError(source, expected, f"value {arr[i].item()!r} at row {i}")
    if n is not None and len(arr) != n:
        raise InputError(source, f"{n} labels (one per score)", f"{len(arr)} labels")
    return arr.astype(np.int64)


def _read_label_text(p: Path, binary: bool = True) -> np.ndarray:
    """Labels from CSV/whitespace text: optional header, then ``label`` or ``id, ..., label``."""
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(p, "a text file of labels", f"unreadable data ({_reason(e)})") from None
    rows = [(i + 1, _cells(line)) for i, line in enumerate(lines) if line.strip()]
    if rows and not all(_is_number(c) for c in rows[0][1]):
        rows = rows[1:]  # a header line
    if not rows:
        raise InputError(p, "at least one label", "none")
    width = len(rows[0][1])
    ids, labels = [], []
    for lineno, cells in rows:
        if len(cells) != width:
            raise InputError(p, f"{width} columns on every line", f"{len(cells)} on line {lineno}")
        labels.append(_label_value(p, cells[-1], lineno, binary))
        if width > 1:
            ids.append(_id_value(p, cells[0], lineno))
    return np.array(labels if width == 1 else _order_by_id(p, ids, labels), np.int64)


def _is_class_id(value: float | np.ndarray) -> bool | np.ndarray:
    """Whether ``value`` is a whole number that float64 and int64 hold exactly."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(value) & (value == np.round(value)) & (np.abs(value) <= CLASS_ID_MAX)


def _cells(line: str) -> list[str]:
    parts = line.split(",") if "," in line else line.split()
    return [c.strip().strip('"').strip() for c in parts]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_value(p: Path, cell: str, lineno: int, binary: bool = True) -> int:
    value = float(cell) if _is_number(cell) else math.nan
    if not (value in (0.0, 1.0) if binary else _is_class_id(value)):
        expected = LABELS_EXPECTED if binary else "integer class ids"
        raise InputError(p, expected, f"value {cell!r} at line {lineno}")
    return int(value)


def _id_value(p: Path, cell: str, lineno: int) -> int:
    try:
        return int(cell)
    except ValueError:
        raise InputError(p, "integer ids in the first column", f"{cell!r} on line {lineno}") from None


def _order_by_id(p: Path, ids: list[int], labels: list[int]) -> list[int]:
    """Labels sorted by id; the ids must be exactly 0..N-1."""
    by_id = dict(zip(ids, labels, strict=True))
    expected = f"ids 0..{len(ids) - 1}, each once"
    if len(by_id) != len(ids):
        dup = next(i for i, count in Counter(ids).items() if count > 1)
        raise InputError(p, expected, f"id {dup} more than once")
    missing = next((i for i in range(len(ids)) if i not in by_id), None)
    if missing is not None:
        raise InputError(p, expected, f"no row for id {missing}")
    return [by_id[i] for i in range(len(ids))]


# --------------------------------------------------------------------------------------- digits
def digits_one_class(normal_digit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (train, test, test_labels); train holds ``normal_digit`` only.

    Images are uint8 (N, 8, 8, 1); a label is 1 (anomaly) for every other digit.
    """
    train, test, labels, _ = _digits_split(normal_digit, seed)
    return train, test, labels


def write_homework_digits(out_dir: PathArg, normal_digit: int = 0, seed: int = 0) -> dict[str, Path]:
    """Write the digits as trainingset.npy, testingset.npy, testing_labels.npy, testing_digits.npy.

    Each file is written atomically. Returns their paths under "train", "test", "labels", "digits".
    """
    arrays = dict(zip(HOMEWORK_FILES, _digits_split(normal_digit, seed), strict=True))
    out = Path(out_dir)
    paths = {key: out / name for key, name in HOMEWORK_FILES.items()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for key, arr in arrays.items():
            _save_atomic(paths[key], arr)
    except OSError as e:
        raise InputError(out, "a writable folder", f"an error writing there ({_reason(e)})") from None
    return paths


def _digits_split(normal_digit: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train, test, test_labels, test_digits): each class halved at random, test shuffled."""
    if not isinstance(normal_digit, int | np.integer) or not 0 <= normal_digit <= 9:
        raise InputError("normal_digit", "a digit 0..9", repr(normal_digit))
    train, train_digits, test, test_digits = digits_classes(seed)
    labels = (test_digits != normal_digit).astype(np.int64)
    return train[train_digits == normal_digit], test, labels, test_digits


def digits_classes(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits split in half per class: (train, train_digits, test, test_digits).

    Images are uint8 (N, 8, 8, 1) scaled from 0..16 to 0..255; the test half is shuffled.
    """
    from sklearn.datasets import load_digits  # slow import, only needed here

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == d))
        train_idx.append(idx[: len(idx) // 2])
        test_idx.append(idx[len(idx) // 2 :])
    train = np.concatenate(train_idx)
    test = rng.permutation(np.concatenate(test_idx))
    return (
        images[train],
        digits.target[train].astype(np.int64),
        images[test],
        digits.target[test].astype(np.int64),
    )


def read_idx(path: PathArg) -> np.ndarray:
    """The raw array of an idx (MNIST format) file, .gz or not, in native byte order."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "an idx file (MNIST format)", "nothing there")
    return _read_idx(p)


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    """np.save via a temporary file in the same folder, then os.replace: never half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
