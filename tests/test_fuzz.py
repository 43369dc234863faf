"""Hypothesis fuzzing of every file oddeye reads: images, labels, classes and score CSVs.

Each case writes a file (or a folder) that hypothesis builds: arrays of random shapes and dtypes,
valid files that are then truncated or have bytes flipped, inserted or deleted, headers that
declare huge sizes, and plain garbage. The file is then read the way ``oddeye`` reads it. The
property is the brief's: either a one-line ``InputError`` naming the file, or a correct result.
A correct result is the array that was written, or, for mutated bytes, an image set whose every
batch normalises to finite values in [-1, 1].

Every case runs under a time limit, so a hang fails the test. It also runs under an address-space
limit 2 GiB above the process's size, so an allocation sized by a lying header fails the test with
MemoryError instead of passing by luck on a big machine.

``ODDEYE_FUZZ=N`` multiplies the number of cases. CI runs the default number, derandomised. The
counts are printed in pytest's terminal summary.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import resource
import signal
import struct
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import oddeye
from helpers import FAST, FUZZ_CASES, blobs
from oddeye.cli import main
from oddeye.data import ImageSet, load_images, load_labels
from oddeye.data.loaders import load_classes
from oddeye.errors import InputError
from oddeye.evaluation import read_scores_csv

T = TypeVar("T")
SCALE = max(1, int(os.environ.get("ODDEYE_FUZZ", "1")))
settings.register_profile(
    "oddeye-fuzz",
    deadline=None,  # the time limit below catches hangs; deadlines flake on a busy 2-core machine
    derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
FUZZ = settings(settings.get_profile("oddeye-fuzz"), max_examples=150 * SCALE)
# cases that run the CLI end to end; the trained run is a module fixture, shared on purpose
FUZZ_SLOW = settings(
    FUZZ,
    max_examples=25 * SCALE,
    suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture],
)
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses Linux address-space limits")

SECONDS = 20.0  # per case; the slowest legitimate case takes well under a second
HEADROOM = 2 << 30  # address space a case may add to the process


# ---------------------------------------------------------------------------------- the guards
class Hang(Exception):
    """A case ran past its time limit."""


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _hang(signum: int, frame: object) -> None:
    raise Hang(f"case ran over {SECONDS:.0f} s")


@contextlib.contextmanager
def bounded() -> Iterator[None]:
    """Run the block with a time limit and an address-space limit of the current size + HEADROOM."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    previous = signal.signal(signal.SIGALRM, _hang)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="oddeye-fuzz-") as d:
        yield Path(d)


def count(test: str, outcome: str) -> None:
    FUZZ_CASES[test, outcome] += 1


def assert_one_line(e: InputError, path: Path) -> None:
    text = str(e)
    assert "\n" not in text and "\r" not in text, text
    assert e.source.startswith(str(path)), (e.source, path)  # the file, or a file in the folder
    assert e.expected and e.found, text


# ---------------------------------------------------------------------------------- the oracles
def images_ok(arr: np.ndarray) -> bool:
    """Whether ``arr`` is a valid image array by the documented rules (InputError otherwise)."""
    if arr.dtype.kind not in "uif" or arr.dtype.itemsize > 8 or arr.ndim not in (3, 4):
        return False
    a = arr if arr.ndim == 4 else arr[..., None]
    if a.shape[0] == 0:
        return False
    if a.shape[-1] in (1, 3):
        hw = a.shape[1:3]
    elif a.shape[1] in (1, 3):
        hw = a.shape[2:4]
    else:
        return False
    return min(hw) >= 1 and (arr.dtype.kind != "f" or bool(np.isfinite(arr).all()))


def attempt(read: Callable[[Path], T], path: Path, valid: bool | None) -> T | None:
    """``read(path)`` under the guards, or None after checking that its InputError is one line.

    ``valid``: whether the input is known to be valid (True), invalid (False) or unknown (None).
    """
    try:
        with bounded():
            got = read(path)
    except InputError as e:
        assert valid is not True, f"valid input refused: {e}"
        assert_one_line(e, path)
        return None
    assert valid is not False, f"invalid input accepted: {got!r:.200}"
    return got


def _load_and_normalise(path: Path) -> tuple[ImageSet, list[torch.Tensor]]:
    data = load_images(path, progress=False)
    return data, [data.normalisation.apply(data.batch(slice(i, i + 64))) for i in range(0, len(data), 64)]


def check_images(path: Path, expected: Expected = None, valid: bool | None = None) -> str:
    """Load ``path``; an InputError must be one line, a result must normalise cleanly.

    ``expected``: the array that must come back when the file is valid (``valid`` says whether
    it is; None means unknown, as for mutated bytes). Returns "error" or "loaded".
    """
    got = attempt(_load_and_normalise, path, valid)
    if got is None:
        return "error"
    data, arrays = got
    h, w, c = data.shape
    assert c in (1, 3) and h >= 1 and w >= 1 and len(data) >= 1
    for x in arrays:
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == (c, h, w)
        assert torch.isfinite(x).all(), "normalised pixels are not finite"
        assert x.abs().max() <= 1.0 + 1e-5, f"normalised pixels reach {x.abs().max()}"
    if expected is not None:
        raw = np.asarray(data.array)
        np.testing.assert_array_equal(raw.reshape(expected.shape), expected)
        assert raw.dtype in (expected.dtype, expected.dtype.newbyteorder("="))
    return "loaded"


# ------------------------------------------------------------------------------ file builders
def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npz_bytes(members: dict[str, bytes], compress: bool) -> bytes:
    """A zip of ``name.npy`` members, as np.savez writes it."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return buf.getvalue()


def npy_header(descr: str, shape: tuple[int, ...], fortran: bool = False) -> bytes:
    """A version 1.0 .npy header declaring ``shape`` whatever data follows."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    text += " " * pad + "\n"
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode()


IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    code = IDX_CODES[arr.dtype.str.lstrip("|")]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def idx_header(code: int, dims: list[int]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def image_bytes(pixels: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    im = Image.fromarray(pixels)
    if mode is not None:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _seed_pixels(h: int = 6, w: int = 5, c: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, c), dtype=np.uint8)


def _seeds() -> dict[str, bytes]:
    """Valid files of every format oddeye reads, small enough that mutations often hit headers."""
    px = _seed_pixels()
    images = np.random.default_rng(1).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    gray = images[..., 0]
    seeds = {
        ".npy": npy_bytes(images),
        ".npy/float": npy_bytes(images.astype(">f4") / 255),
        ".npz": npz_bytes({"x": npy_bytes(images)}, compress=False),
        ".npz/deflated": npz_bytes({"x": npy_bytes(images)}, compress=True),
        "-idx3-ubyte": idx_bytes(gray),
        "-idx3-ubyte.gz": gzip.compress(idx_bytes(gray), mtime=0),
        ".png": image_bytes(px, "PNG"),
        ".png/L": image_bytes(px[..., 0], "PNG"),
        ".png/P": image_bytes(px, "PNG", "P"),
        ".png/RGBA": image_bytes(px, "PNG", "RGBA"),
        ".png/I;16": image_bytes(px[..., 0].astype(np.uint16) * 257, "PNG"),
        ".jpg": image_bytes(px, "JPEG"),
        ".bmp": image_bytes(px, "BMP"),
        ".gif": image_bytes(px, "GIF"),
        ".tif": image_bytes(px, "TIFF"),
        ".webp": image_bytes(px, "WEBP"),
    }
    return seeds


SEEDS = _seeds()
SUFFIXES = [".png", ".jpg", ".bmp", ".gif", ".tif", ".webp"]  # of image files, read from a folder


def write_case(folder: Path, key: str, data: bytes) -> Path:
    """Write ``data`` for seed ``key``: array formats as one file, image formats inside a folder."""
    suffix = key.split("/")[0]
    if suffix in SUFFIXES:
        (folder / "images").mkdir()
        path = folder / "images" / f"a{suffix}"
        path.write_bytes(data)
        return folder / "images"
    path = folder / f"data{suffix}"
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------ the strategies
@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with 1-4 edits: truncation, byte overwrites, insertions, deletions, duplication."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        near_head = st.integers(0, min(len(out), 180))  # most format damage is in the header
        pos = draw(st.one_of(near_head, st.integers(0, len(out))))
        op = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete", "repeat"]))
        if op == "truncate":
            del out[pos:]
        elif op == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=8))
            out[pos : pos + len(patch)] = patch
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 64))]
        else:
            out += out[pos:]
    return bytes(out)


def dtypes() -> st.SearchStrategy[np.dtype]:
    """Every kind of dtype a .npy can hold without pickles, both byte orders, plus structures."""
    return st.one_of(
        hnp.integer_dtypes(endianness="?"),
        hnp.unsigned_integer_dtypes(endianness="?"),
        hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64, 128)),
        hnp.complex_number_dtypes(endianness="?"),
        hnp.boolean_dtypes(),
        hnp.datetime64_dtypes(endianness="?"),
        hnp.timedelta64_dtypes(endianness="?"),
        hnp.byte_string_dtypes(endianness="?"),
        hnp.unicode_string_dtypes(endianness="?"),
        st.just(np.dtype([("a", "u1"), ("b", "<f4")])),
    )


IMAGE_SIDES = st.sampled_from([1, 3, 1, 3, 0, 2, 4, 5, 8])  # channel-like sides often


NUMERIC = st.one_of(
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
)
LABEL_DTYPES = ["<i8", "|b1", "<f4", ">u2", "<f8"]
Expected = np.ndarray | None


def arrays(dtype: st.SearchStrategy[np.dtype] | None = None) -> st.SearchStrategy[np.ndarray]:
    """Any dtype and 0-5 dimensions; half of them image-like (numeric, 3-4 dimensions)."""
    shapes = st.lists(IMAGE_SIDES, min_size=0, max_size=5).map(tuple)
    anything = hnp.arrays(dtype if dtype is not None else dtypes(), shapes)
    if dtype is not None:
        return anything
    image_shapes = st.lists(IMAGE_SIDES, min_size=3, max_size=4).map(tuple)
    return st.one_of(anything, hnp.arrays(NUMERIC, image_shapes))


# -------------------------------------------------------------------------------------- images
@FUZZ
@given(arr=arrays(), container=st.sampled_from(["npy", "npz", "npz/deflated", "npy/fortran"]))
def test_random_arrays_load_exactly_or_fail_in_one_line(arr: np.ndarray, container: str) -> None:
    """Any array in a .npy/.npz: the same array back when it is a valid image set, else one line."""
    if container == "npy/fortran":
        arr = np.asfortranarray(arr)
    data = npy_bytes(arr)
    if container.startswith("npz"):
        data = npz_bytes({"images": data}, compress=container.endswith("deflated"))
    with scratch() as d:
        path = d / ("x.npz" if container.startswith("npz") else "x.npy")
        path.write_bytes(data)
        valid = images_ok(arr)
        count("array files", check_images(path, arr if valid else None, valid))


@FUZZ
@given(
    arr=arrays(st.sampled_from([np.dtype(k) for k in IDX_CODES])),
    gz=st.booleans(),
)
def test_random_idx_files_load_exactly_or_fail_in_one_line(arr: np.ndarray, gz: bool) -> None:
    """idx (MNIST format) of any idx dtype and shape: a 3-D (N, H, W) set loads exactly."""
    data = idx_bytes(arr)
    with scratch() as d:
        path = d / ("x-idx-ubyte.gz" if gz else "x-idx-ubyte")
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        valid = arr.ndim == 3 and images_ok(arr)
        count("idx files", check_images(path, arr if valid else None, valid))


@FUZZ
@given(data=st.data(), key=st.sampled_from(sorted(SEEDS)))
def test_mutated_files_load_or_fail_in_one_line(data: st.DataObject, key: str) -> None:
    """Valid files of every format, truncated or with bytes overwritten, inserted or deleted."""
    raw = data.draw(mutated(SEEDS[key]))
    with scratch() as d:
        count(f"mutated {key.split('/')[0]}", check_images(write_case(d, key, raw)))


@FUZZ
@given(raw=st.binary(max_size=600), suffix=st.sampled_from([".npy", ".npz", "-idx3-ubyte", ".gz", *SUFFIXES]))
def test_garbage_bytes_fail_in_one_line(raw: bytes, suffix: str) -> None:
    with scratch() as d:
        count("garbage bytes", check_images(write_case(d, suffix if suffix != ".gz" else "-idx.gz", raw)))


HUGE = st.one_of(st.integers(0, 6), st.integers(1 << 16, (1 << 63) - 1))
HUGE_IDX = st.one_of(st.integers(0, 6), st.integers(1 << 16, (1 << 32) - 1))
HUGE_SIDE = st.one_of(st.integers(1, 16), st.integers(1 << 12, (1 << 31) - 1))


@st.composite
def huge_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """Headers declaring a huge array or image, followed by a few bytes of data (or none)."""
    kind = draw(st.sampled_from(["npy", "npz", "idx", "idx.gz", "png", "bmp", "gif", "jpg"]))
    tail = draw(st.binary(max_size=64))
    if kind in ("npy", "npz"):
        shape = tuple(draw(st.lists(HUGE, min_size=1, max_size=4)))
        descr = draw(st.sampled_from(["|u1", "<f4", ">f8", "<i2", "<u8"]))
        raw = npy_header(descr, shape, draw(st.booleans())) + tail
        return (".npy", raw) if kind == "npy" else (".npz", npz_bytes({"x": raw}, draw(st.booleans())))
    if kind.startswith("idx"):
        dims = draw(st.lists(HUGE_IDX, min_size=1, max_size=5))
        raw = idx_header(draw(st.sampled_from(list(IDX_CODES.values()))), dims) + tail
        return ("-idx3-ubyte.gz", gzip.compress(raw, mtime=0)) if kind == "idx.gz" else ("-idx3-ubyte", raw)
    w, h = draw(HUGE_SIDE), draw(HUGE_SIDE)
    if kind == "png":
        depth, colour = draw(st.sampled_from([(8, 0), (8, 2), (16, 2), (8, 3), (8, 6), (1, 0), (16, 0)]))
        ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
        idat = png_chunk(b"IDAT", zlib.compress(tail)) if draw(st.booleans()) else b""
        return ".png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + idat + png_chunk(b"IEND", b"")
    raw = bytearray(SEEDS[f".{kind}"])
    if kind == "bmp":  # BITMAPINFOHEADER width and height (signed 32-bit; negative height = top-down)
        raw[18:26] = struct.pack("<ii", w, draw(st.sampled_from([h, -h])))
    elif kind == "gif":  # logical screen and first image descriptor (16-bit)
        w, h = w & 0xFFFF, h & 0xFFFF
        raw[6:10] = struct.pack("<HH", w, h)
        at = raw.find(b"\x2c", 13)
        raw[at + 5 : at + 9] = struct.pack("<HH", w, h)
    else:  # JPEG start-of-frame: height, width (16-bit)
        at = raw.find(b"\xff\xc0")
        raw[at + 5 : at + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    cut = draw(st.integers(0, len(raw)))
    return f".{kind}", bytes(raw[: max(cut, 30)])


@FUZZ
@given(case=huge_files())
def test_huge_declared_sizes_fail_fast_without_allocating(case: tuple[str, bytes]) -> None:
    """A header that declares terabytes never makes oddeye allocate them or hang."""
    suffix, raw = case
    with scratch() as d:
        count("huge declared sizes", check_images(write_case(d, suffix, raw)))


FORMAT_SUFFIXES = {
    "PNG": ".png",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "WEBP-lossless": ".webp",
    "JPEG": ".jpg",
    "GIF": ".gif",
}


@st.composite
def folders(draw: st.DrawFn) -> tuple[dict[str, bytes], Expected]:
    """1-5 image files of random formats, modes and sizes; the array expected when all are exact."""
    n = draw(st.integers(1, 5))
    same = draw(st.booleans())
    h0, w0 = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    gray = draw(st.booleans())
    files, pixels = {}, []
    for i in range(n):
        h, w = (h0, w0) if same else (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
        px = draw(hnp.arrays(np.uint8, (h, w) if gray else (h, w, 3)))
        fmt = draw(st.sampled_from(["PNG", "BMP", "TIFF", "WEBP-lossless", "JPEG", "GIF"]))
        suffix = FORMAT_SUFFIXES[fmt]
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, "WEBP" if fmt.startswith("WEBP") else fmt, lossless=True)
        raw = buf.getvalue()
        if draw(st.integers(0, 9)) == 0:
            raw = draw(mutated(raw))
        files[f"{i:02d}{suffix}"] = raw
        exact = fmt in ("PNG", "BMP", "TIFF") or (fmt.startswith("WEBP") and not gray)
        pixels.append(px if exact and raw == buf.getvalue() else None)
    if not same or any(p is None for p in pixels):
        return files, None
    return files, np.stack(pixels)


@FUZZ
@given(case=folders())
def test_image_folders_load_exactly_or_fail_in_one_line(case: tuple[dict[str, bytes], Expected]) -> None:
    """Folders mixing formats, modes, sizes and the odd damaged file."""
    files, expected = case
    with scratch() as d:
        for name, raw in files.items():
            (d / name).write_bytes(raw)
        if expected is not None:
            expected = expected if expected.ndim == 4 else expected[..., None]
        count("image folders", check_images(d, expected, True if expected is not None else None))


# ---------------------------------------------------------------------- labels, classes, scores
def labels_ok(arr: np.ndarray, binary: bool) -> bool:
    a = arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr
    if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "buif" or a.dtype.itemsize > 8:
        return False
    v = a.astype(np.float64)
    if binary:
        return bool(np.isin(a, [0, 1]).all())
    return bool((np.isfinite(v) & (v == np.round(v)) & (np.abs(v) <= 2**53)).all())


def check_labels(path: Path, expected: Expected, binary: bool) -> str:
    got = attempt(load_labels if binary else load_classes, path, True if expected is not None else None)
    if got is None:
        return "error"
    assert got.dtype == np.int64 and got.ndim == 1 and len(got) >= 1
    if binary:
        assert set(np.unique(got)) <= {0, 1}
    if expected is not None:
        np.testing.assert_array_equal(got, expected)
    return "loaded"


@FUZZ
@given(
    arr=st.one_of(
        arrays(),
        hnp.arrays(st.sampled_from(LABEL_DTYPES), st.integers(0, 6), elements=st.sampled_from([0, 1])),
    ),
    binary=st.booleans(),
    suffix=st.sampled_from([".npy", ".npz"]),
)
def test_label_arrays_load_exactly_or_fail_in_one_line(arr: np.ndarray, binary: bool, suffix: str) -> None:
    data = npy_bytes(arr)
    with scratch() as d:
        path = d / f"labels{suffix}"
        path.write_bytes(npz_bytes({"y": data}, False) if suffix == ".npz" else data)
        ok = labels_ok(arr, binary)
        expected = arr.reshape(-1).astype(np.int64) if ok else None
        count("label arrays", check_labels(path, expected, binary))


CELLS = st.one_of(
    st.sampled_from(["0", "1", " 1 ", '"0"', "1.0", "-0", "0e0", "2", "-1", "0.5", "nan", "inf", "-inf"]),
    st.sampled_from(
        ["", "x", "٣", "1_0", "0x1", "True", "9" * 400, "1e308", "1e400", "-9223372036854775809"]
    ),
    st.text(max_size=6),
)


@st.composite
def label_texts(draw: st.DrawFn) -> tuple[str, Expected, bool]:
    """Label CSV/text: clean (with its expected labels) or with random cells spliced in."""
    binary = draw(st.booleans())
    n = draw(st.integers(1, 12))
    values = draw(st.lists(st.integers(0, 1) if binary else st.integers(-5, 9), min_size=n, max_size=n))
    with_ids = draw(st.booleans())
    order = draw(st.permutations(range(n))) if with_ids else list(range(n))
    sep = draw(st.sampled_from([",", ", ", "\t", " "]))
    lines = [draw(st.sampled_from(["Id,label", "id label", "label"]))] if draw(st.booleans()) else []
    lines += [sep.join([str(i), str(values[i])]) if with_ids else str(values[i]) for i in order]
    expected: Expected = np.array(values, np.int64)
    if with_ids and sep == " " and lines and lines[0] == "Id,label":
        expected = None  # a comma header over space-separated rows: column counts differ
    if draw(st.booleans()):  # damage: splice random cells or lines in
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(lines)))
            lines.insert(at, sep.join(draw(st.lists(CELLS, min_size=1, max_size=3))))
        expected = None
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + newline, expected, binary


@FUZZ
@given(case=label_texts(), suffix=st.sampled_from([".csv", ".txt"]))
def test_label_text_loads_exactly_or_fails_in_one_line(case: tuple[str, Expected, bool], suffix: str) -> None:
    text, expected, binary = case
    with scratch() as d:
        path = d / f"labels{suffix}"
        path.write_text(text, encoding="utf-8")
        count("label text", check_labels(path, expected, binary))


@FUZZ
@given(
    raw=st.binary(max_size=400),
    binary=st.booleans(),
    suffix=st.sampled_from([".csv", ".txt", ".npy", "-idx1"]),
)
def test_label_garbage_fails_in_one_line(raw: bytes, binary: bool, suffix: str) -> None:
    with scratch() as d:
        path = d / f"labels{suffix}"
        path.write_bytes(raw)
        count("label garbage", check_labels(path, None, binary))


@st.composite
def score_csvs(draw: st.DrawFn) -> tuple[str, Expected]:
    n = draw(st.integers(1, 10))
    scores = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    order = draw(st.permutations(range(n)))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(draw(st.sampled_from([["Id", "Predicted"], ["ID", "score"]])))
    writer.writerows([[i, repr(scores[i])] for i in order])
    text, expected = buf.getvalue(), np.array(scores, np.float64)
    if draw(st.booleans()):
        lines = text.splitlines(keepends=True)
        junk = draw(st.one_of(st.text(max_size=20), st.lists(CELLS, min_size=1, max_size=3).map(",".join)))
        lines.insert(draw(st.integers(1, len(lines))), junk + "\n")
        text, expected = "".join(lines), None
    return text, expected


@FUZZ
@given(case=st.one_of(score_csvs(), st.binary(max_size=300).map(lambda b: (b, None))))
def test_score_csvs_read_exactly_or_fail_in_one_line(case: tuple[str | bytes, Expected]) -> None:
    content, expected = case
    with scratch() as d:
        path = d / "scores.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        got = attempt(read_scores_csv, path, True if expected is not None else None)
        if got is None:
            count("score CSVs", "error")
            return
        assert got.dtype == np.float64 and got.ndim == 1 and np.isfinite(got).all()
        if expected is not None:
            np.testing.assert_array_equal(got, expected)
        count("score CSVs", "loaded")


# ----------------------------------------------------------------------------- the whole CLI
SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, oddeye.Detector]:
    folder = tmp_path_factory.mktemp("fuzz-run")
    train = folder / "train.npy"
    np.save(train, blobs(64, SHAPE, seed=3))
    det = oddeye.create("cnn", **FAST).fit(train)
    det.save(folder / "run")
    return folder / "run", det


def run_cli(*args: object) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), bounded():
        code = main([str(a) for a in args])
    return code, err.getvalue()


@st.composite
def cli_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """Files for `oddeye score`: valid sets of the model's shape in random dtypes, or damaged ones."""
    choice = draw(st.sampled_from(["valid", "mutated", "huge", "garbage"]))
    if choice == "huge":
        return draw(huge_files())
    if choice == "garbage":
        return draw(st.sampled_from([".npy", ".npz", "-idx3-ubyte"])), draw(st.binary(max_size=300))
    n = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(["|u1", "<u2", ">i4", "<f4", ">f8", "<f2"]))
    arr = draw(hnp.arrays(np.dtype(dtype), (n, *SHAPE), elements=st.integers(0, 255)))
    kind = draw(st.sampled_from([".npy", ".npz", "-idx3-ubyte"]))
    if kind == "-idx3-ubyte":
        raw = idx_bytes(arr[..., 0].astype(np.uint8))
    else:
        raw = npy_bytes(arr) if kind == ".npy" else npz_bytes({"x": npy_bytes(arr)}, draw(st.booleans()))
    return kind, draw(mutated(raw)) if choice == "mutated" else raw


@FUZZ_SLOW
@given(case=cli_inputs())
def test_cli_score_writes_correct_csv_or_one_line(case: tuple[str, bytes], scored_run) -> None:
    """`oddeye score RUN FILE --out p.csv`: exit 0 and the right scores in order, or exit 2, one
    line and no output file."""
    run, det = scored_run
    suffix, raw = case
    with scratch() as d:
        path = write_case(d, suffix, raw)
        out = d / "out" / "p.csv"
        out.parent.mkdir()
        code, err = run_cli("score", run, path, "--out", out, "--quiet")
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("oddeye: error: "), err
            assert not list(out.parent.iterdir()), "a failed score left files behind"
            count("CLI score", "error")
            return
        assert code == 0, err
        got = read_scores_csv(out)
        np.testing.assert_allclose(got, det.score(path), rtol=1e-6)
        count("CLI score", "scored")


@FUZZ_SLOW
@given(case=cli_inputs())
def test_cli_train_builds_a_run_or_one_line(case: tuple[str, bytes]) -> None:
    """`oddeye train FILE --out RUN` on the same inputs: a complete run folder, or exit 2, one
    line and no run folder."""
    suffix, raw = case
    with scratch() as d:
        path = write_case(d, suffix, raw)
        code, err = run_cli("train", path, "--detector", "pixel-knn", "--out", d / "run", "--quiet")
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("oddeye: error: "), err
            assert not (d / "run").exists(), "a failed training left a run folder"
            count("CLI train", "error")
            return
        assert code == 0, err
        assert (d / "run" / "model.json").is_file()
        count("CLI train", "trained")
