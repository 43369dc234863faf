"""Bad input gives one InputError line naming the file, what was expected and what was found."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oddeye.data import load_images, load_labels, write_homework_digits
from oddeye.data.loaders import load_classes
from oddeye.errors import InputError, OddeyeError

pytestmark = pytest.mark.filterwarnings("error")


def npy(arr: np.ndarray, name: str = "x.npy", **kw: bool) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / name, arr, **kw)
        return tmp / name

    return make


def raw(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def png_bytes(h: int = 8, w: int = 8) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)  # incompressible
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def folder(files: dict[str, bytes]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "imgs").mkdir()
        for name, data in files.items():
            (tmp / "imgs" / name).write_bytes(data)
        return tmp / "imgs"

    return make


def truncated_npy(tmp: Path) -> Path:
    np.save(tmp / "x.npy", np.zeros((10, 8, 8, 3), np.uint8))
    data = (tmp / "x.npy").read_bytes()
    (tmp / "x.npy").write_bytes(data[: len(data) - 100])
    return tmp / "x.npy"


def idx_header(dims: tuple[int, ...], code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A .npy header declaring ``shape``, whatever data follows it."""
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def npz_member(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}.npy", data)
    return buf.getvalue()


def png_header(w: int, h: int) -> bytes:
    """A PNG declaring a w x h RGB image and holding no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


FLOATS = np.zeros((3, 4, 4, 1), np.float32)
NAN, INF = FLOATS.copy(), FLOATS.copy()
NAN[1, 2, 2, 0], INF[2, 0, 0, 0] = np.nan, -np.inf

IMAGE_CASES = {
    "missing": (lambda tmp: tmp / "nope.npy", "nope.npy", "nothing there"),
    "missing npz name": (lambda tmp: Path(f"{tmp / 'no.npz'}:a"), "no.npz", "nothing there"),
    "text as npy": (raw("x.npy", b"hello,world\n1,2\n"), "x.npy", "unreadable data (not a .npy"),
    "empty npy": (raw("x.npy", b""), "x.npy", "a NumPy .npy array, found unreadable"),
    "truncated npy": (
        truncated_npy,
        "x.npy",
        "1920 bytes of data for shape (10, 8, 8, 3) (uint8), found 1820 bytes",
    ),
    "npy declares terabytes": (
        raw("x.npy", npy_header("<f8", (10**12, 64, 64, 3)) + bytes(64)),
        "x.npy",
        "98304000000000000 bytes of data for shape (1000000000000, 64, 64, 3) (float64), found 64 bytes",
    ),
    "npz declares terabytes": (
        raw("x.npz", npz_member("a", npy_header("|u1", (10**12, 8, 8)) + bytes(10))),
        "x.npz:a",
        "64000000000000 bytes of data for shape (1000000000000, 8, 8) (uint8), found 10 bytes",
    ),
    "npy junk header": (
        raw("x.npy", npy_header("<f8", (2, 4, 4)).replace(b"'shape'", b"[shape'")),
        "x.npy",
        "found a malformed header",
    ),
    "float128": (npy(np.zeros((2, 4, 4), np.longdouble)), "x.npy", "found dtype float128"),
    "png bomb": (
        folder({"a.png": png_header(10_000, 9_000)}),
        "a.png",
        "unreadable image data (Image size (90000000 pixels) exceeds limit",
    ),
    "zero images": (npy(np.zeros((0, 8, 8, 3), np.uint8)), "x.npy", "found 0 images"),
    "1-D": (npy(np.zeros(10, np.uint8)), "x.npy", "found 1 dimension(s)"),
    "5-D": (npy(np.zeros((2, 1, 4, 4, 1), np.uint8)), "x.npy", "found 5 dimension(s)"),
    "strings": (npy(np.full((2, 4, 4), "a")), "x.npy", "found dtype <U1"),
    "object": (
        npy(np.empty((2, 4, 4), object), allow_pickle=True),
        "x.npy",
        "an array of numbers (Python objects are never unpickled), found dtype object",
    ),
    "bool": (npy(np.zeros((2, 4, 4), bool)), "x.npy", "found dtype bool"),
    "nan": (npy(NAN), "x.npy", "finite pixel values, found NaN or inf in image 1"),
    "inf": (npy(INF), "x.npy", "found NaN or inf in image 2"),
    "2 channels": (npy(np.zeros((3, 4, 4, 2), np.uint8)), "x.npy", "found 2 channels"),
    "npz not zip": (raw("x.npz", b"PK not really"), "x.npz", "not a zip archive"),
    "npz object": (
        lambda tmp: np.savez(tmp / "x.npz", a=np.empty(3, object)) or tmp / "x.npz",
        "x.npz",
        "Python objects are never unpickled), found dtype object",
    ),
    "npz empty": (lambda tmp: np.savez(tmp / "x.npz") or tmp / "x.npz", "x.npz", "0 arrays (none)"),
    "garbage png": (
        folder({"a.png": png_bytes(), "x.png": b"\x00garbage" * 20}),
        "x.png",
        "a readable image, found unreadable image data (not an image format",
    ),
    "truncated png": (
        folder({"a.png": png_bytes(64, 64), "b.png": png_bytes(64, 64)[:3000]}),
        "b.png",
        "found unreadable image data",
    ),
    "empty folder": (folder({}), "imgs", "at least one image file (.png, .jpg, .jpeg"),
    "no images in folder": (folder({"notes.txt": b"hi"}), "imgs", "image file (.png"),
    "mixed sizes": (
        folder({"a.png": png_bytes(8, 8), "b.png": png_bytes(8, 4)}),
        "b.png",
        "images of 8x8 (HxW) like a.png",
    ),
    "unknown suffix": (raw("x.txt", b"1"), "x.txt", "or a folder of images, found a '.txt' file"),
    "fifo": (
        lambda tmp: os.mkfifo(tmp / "x.npy") or tmp / "x.npy",
        "x.npy",
        "found a pipe, socket or device",
    ),
    "device": (lambda tmp: Path("/dev/zero"), "/dev/zero", "a regular file or a folder, found a pipe"),
    "idx bad magic": (raw("x-idx3-ubyte", b"\x01\x02\x03\x04"), "x-idx3-ubyte", "00 00 TYPE"),
    "idx empty": (raw("x.idx", b""), "x.idx", "(empty file)"),
    "idx zero images, huge sides": (
        raw("x.idx", idx_header((0, 65536, 16, 3360000000))),
        "x.idx",
        "an idx file holding at least one value, found shape (0, 65536, 16, 3360000000)",
    ),
    "idx short header": (raw("x.idx", idx_header((2, 3, 4))[:9]), "x.idx", "truncated header"),
    "idx truncated": (raw("x.idx", idx_header((2, 3, 4)) + bytes(20)), "x.idx", "found 20 bytes"),
    "idx too long": (raw("x.idx", idx_header((2, 3, 4)) + bytes(25)), "x.idx", "found 25 bytes"),
    "idx not gzip": (raw("x.idx.gz", b"plain bytes"), "x.idx.gz", "unreadable data"),
    "idx 2-D": (raw("x.idx", idx_header((3, 4)) + bytes(12)), "x.idx", "3 dimensions (N, H, W)"),
}


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_image_errors(tmp_path: Path, case: str) -> None:
    make, name, phrase = IMAGE_CASES[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        load_images(path, progress=False)
    assert_one_line(str(err.value), name, phrase)


def assert_one_line(msg: str, name: str, phrase: str) -> None:
    assert "\n" not in msg and ": expected " in msg and ", found " in msg, msg
    assert name in msg.split(": expected ")[0], msg
    assert phrase in msg, msg


def labels_text(text: str, name: str = "y.csv") -> Callable[[Path], Path]:
    return raw(name, text.encode())


LABEL_CASES = {
    "missing": (lambda tmp: tmp / "y.npy", "y.npy", "nothing there"),
    "value 2": (npy(np.array([0, 2, 1]), "y.npy"), "y.npy", "(anomaly), found value 2 at row 1"),
    "value 0.5": (npy(np.array([0.0, 1.0, 0.5]), "y.npy"), "y.npy", "value 0.5 at row 2"),
    "nan": (npy(np.array([0.0, np.nan]), "y.npy"), "y.npy", "value nan at row 1"),
    "csv nan": (labels_text("0\nnan\n"), "y.csv", "value 'nan' at line 2"),
    "strings": (npy(np.array(["0", "1"]), "y.npy"), "y.npy", "non-numeric dtype <U1"),
    "2-D": (npy(np.zeros((3, 2), int), "y.npy"), "y.npy", "a 1-D array of labels, found shape"),
    "empty": (npy(np.zeros(0, int), "y.npy"), "y.npy", "at least one label, found none"),
    "text as npy": (raw("y.npy", b"0\n1\n"), "y.npy", "not a .npy file"),
    "csv word": (labels_text("id,label\n0,1\n1,yes\n"), "y.csv", "value 'yes' at line 3"),
    "csv value 3": (labels_text("0\n3\n"), "y.csv", "value '3' at line 2"),
    "csv empty": (labels_text("id,label\n\n"), "y.csv", "at least one label, found none"),
    "csv duplicate id": (labels_text("id,y\n0,1\n1,0\n0,0\n"), "y.csv", "id 0 more than once"),
    "csv id gap": (labels_text("id,y\n0,1\n2,0\n"), "y.csv", "ids 0..1, each once, found no row"),
    "csv bad id": (labels_text("id,y\n0,1\nb,0\n"), "y.csv", "integer ids in the first column"),
    "csv columns": (labels_text("id,y\n0,1\n1\n"), "y.csv", "2 columns on every line, found 1"),
    "csv binary": (raw("y.csv", b"\xff\xfe\x00\x81"), "y.csv", "a text file of labels"),
    "folder": (folder({}), "imgs", "a file of labels, found a folder"),
    "unknown suffix": (raw("y.json", b"[0, 1]"), "y.json", "found a '.json' file"),
    "idx labels 2-D": (raw("y.idx", idx_header((2, 2)) + bytes(4)), "y.idx", "1-D array"),
}


@pytest.mark.parametrize("case", LABEL_CASES)
def test_label_errors(tmp_path: Path, case: str) -> None:
    make, name, phrase = LABEL_CASES[case]
    with pytest.raises(InputError) as err:
        load_labels(make(tmp_path))
    assert_one_line(str(err.value), name, phrase)


def test_label_count(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_labels(labels_text("0\n1\n")(tmp_path), n=3)
    assert_one_line(str(err.value), "y.csv", "expected 3 labels (one per score), found 2 labels")


@pytest.mark.parametrize("size", [(0, 4), (4,), (4.0, 4), "4x4"])
def test_bad_size(tmp_path: Path, size: object) -> None:
    path = folder({"a.png": png_bytes()})(tmp_path)
    with pytest.raises(InputError, match=r"^size: expected two positive integers"):
        load_images(path, size=size, progress=False)  # type: ignore[arg-type]


def test_digits_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^normal_digit: expected a digit 0\.\.9, found 10$"):
        write_homework_digits(tmp_path, normal_digit=10)
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(InputError) as err:
        write_homework_digits(tmp_path / "file" / "out")
    assert_one_line(str(err.value), "file", "a writable folder")


def test_errors_are_oddeye_errors() -> None:
    assert issubclass(InputError, OddeyeError)


@pytest.mark.parametrize(
    "case",
    [
        ("y.csv", "0\ninf\n", "value 'inf' at line 2"),
        ("y.csv", "0\n1e300\n", "value '1e300' at line 2"),
        ("y.npy", np.array([0.0, np.nan]), "value nan at row 1"),
        ("y.npy", np.array([0, 2**63 - 1], np.int64), "value 9223372036854775807 at row 1"),
    ],
)
def test_class_ids_must_be_exact_whole_numbers(tmp_path: Path, case: tuple) -> None:
    name, content, phrase = case
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)
    with pytest.raises(InputError) as err:
        load_classes(path)
    assert_one_line(str(err.value), name, f"expected integer class ids, found {phrase}")


@pytest.mark.parametrize("suffix", [".npy", "-idx3-ubyte"])
def test_a_zero_size_shape_with_huge_sides_is_refused_without_a_warning(tmp_path: Path, suffix: str) -> None:
    """numpy's memmap overflows (a RuntimeWarning on stderr) on such a header: refused first."""
    import warnings

    from numpy.lib import format as npy_format

    path = tmp_path / f"x{suffix}"
    with path.open("wb") as f:
        if suffix == ".npy":
            header = {"descr": "|u1", "fortran_order": False, "shape": (0, 2**40, 2**40, 3)}
            npy_format.write_array_header_1_0(f, header)
        else:
            f.write(b"\0\0\x08\x03" + struct.pack(">III", 0, 2**31, 2**31))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"an array shape numpy can address|holding at least one"):
            load_images(path)
