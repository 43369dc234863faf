"""Bad input gives one InputError line naming the file, what was expected and what was found."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oddeye.data import load_images, load_labels, write_homework_digits
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


FLOATS = np.zeros((3, 4, 4, 1), np.float32)
NAN, INF = FLOATS.copy(), FLOATS.copy()
NAN[1, 2, 2, 0], INF[2, 0, 0, 0] = np.nan, -np.inf

IMAGE_CASES = {
    "missing": (lambda tmp: tmp / "nope.npy", "nope.npy", "nothing there"),
    "missing npz name": (lambda tmp: Path(f"{tmp / 'no.npz'}:a"), "no.npz", "nothing there"),
    "text as npy": (raw("x.npy", b"hello,world\n1,2\n"), "x.npy", "unreadable data (not a .npy"),
    "empty npy": (raw("x.npy", b""), "x.npy", "a NumPy .npy array, found unreadable"),
    "truncated npy": (truncated_npy, "x.npy", "unreadable data"),
    "zero images": (npy(np.zeros((0, 8, 8, 3), np.uint8)), "x.npy", "found 0 images"),
    "1-D": (npy(np.zeros(10, np.uint8)), "x.npy", "found 1 dimension(s)"),
    "5-D": (npy(np.zeros((2, 1, 4, 4, 1), np.uint8)), "x.npy", "found 5 dimension(s)"),
    "strings": (npy(np.full((2, 4, 4), "a")), "x.npy", "found dtype <U1"),
    "object": (
        npy(np.empty((2, 4, 4), object), allow_pickle=True),
        "x.npy",
        "unreadable data (Array can't be memory-mapped: Python objects",
    ),
    "bool": (npy(np.zeros((2, 4, 4), bool)), "x.npy", "found dtype bool"),
    "nan": (npy(NAN), "x.npy", "finite pixel values, found NaN or inf in image 1"),
    "inf": (npy(INF), "x.npy", "found NaN or inf in image 2"),
    "2 channels": (npy(np.zeros((3, 4, 4, 2), np.uint8)), "x.npy", "found 2 channels"),
    "npz not zip": (raw("x.npz", b"PK not really"), "x.npz", "not a zip archive"),
    "npz object": (
        lambda tmp: np.savez(tmp / "x.npz", a=np.empty(3, object)) or tmp / "x.npz",
        "x.npz",
        "unreadable data (Object arrays",
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
    "idx bad magic": (raw("x-idx3-ubyte", b"\x01\x02\x03\x04"), "x-idx3-ubyte", "00 00 TYPE"),
    "idx empty": (raw("x.idx", b""), "x.idx", "(empty file)"),
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
