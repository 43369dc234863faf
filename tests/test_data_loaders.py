"""Loading images and labels from every supported source, and the built-in digits data set."""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from oddeye.data import (
    ImageSet,
    Normalisation,
    as_imageset,
    digits_one_class,
    load_images,
    load_labels,
    write_homework_digits,
)
from oddeye.errors import InputError

pytestmark = pytest.mark.filterwarnings("error")  # e.g. torch on read-only (memory-mapped) arrays

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B}
IDX_CODES |= {np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def write_idx(path: Path, arr: np.ndarray, dims: tuple[int, ...] | None = None) -> Path:
    """An idx file holding ``arr`` (big-endian); ``dims`` overrides the declared shape."""
    big = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    dims = arr.shape if dims is None else dims
    header = bytes([0, 0, IDX_CODES[big.dtype], len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    payload = header + big.tobytes()
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


def images(n: int = 4, h: int = 5, w: int = 6, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def save_npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def as_nhwc(s: ImageSet) -> np.ndarray:
    return s.batch(slice(None)).permute(0, 2, 3, 1).numpy()


# ------------------------------------------------------------------------------------------ npy
def test_npy_is_memory_mapped_not_copied(tmp_path: Path) -> None:
    arr = images()
    s = load_images(save_npy(tmp_path / "x.npy", arr))
    assert isinstance(s.array, np.memmap)
    assert (len(s), s.shape, s.layout, s.source) == (4, (5, 6, 3), "NHWC", str(tmp_path / "x.npy"))
    assert s.normalisation == Normalisation(0.0, 255.0)
    np.testing.assert_array_equal(as_nhwc(s), arr)


@pytest.mark.parametrize(
    ("stored", "layout"),
    [
        (lambda a: a[..., 0], "NHWC"),  # (N, H, W)
        (lambda a: a[..., :1], "NHWC"),  # (N, H, W, 1)
        (lambda a: a, "NHWC"),  # (N, H, W, 3)
        (lambda a: a[..., :1].transpose(0, 3, 1, 2), "NCHW"),  # (N, 1, H, W)
        (lambda a: a.transpose(0, 3, 1, 2), "NCHW"),  # (N, 3, H, W)
    ],
)
def test_npy_layouts_give_the_same_images(tmp_path: Path, stored, layout: str) -> None:
    arr = images()
    s = load_images(save_npy(tmp_path / "x.npy", np.ascontiguousarray(stored(arr))))
    c = s.shape[2]
    assert s.layout == layout and s.shape == (5, 6, c)
    np.testing.assert_array_equal(as_nhwc(s), arr[..., :c])


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_batch_is_exact_and_in_index_order(tmp_path: Path, layout: str) -> None:
    arr = images()
    stored = arr if layout == "NHWC" else arr.transpose(0, 3, 1, 2)
    s = load_images(save_npy(tmp_path / "x.npy", np.ascontiguousarray(stored)))
    b = s.batch(np.array([2, 0]))
    expected = torch.from_numpy(arr[[2, 0]].transpose(0, 3, 1, 2).copy())  # in the order asked
    assert b.shape == (2, 3, 5, 6) and b.dtype == torch.uint8
    assert torch.equal(b, expected)


def test_batch_of_a_memmap_slice(tmp_path: Path) -> None:
    s = load_images(save_npy(tmp_path / "x.npy", images()))
    assert s.batch(slice(0, 2)).shape == (2, 3, 5, 6)  # torch would warn on a read-only array


def test_batch_of_big_endian_npy(tmp_path: Path) -> None:
    arr = np.linspace(0, 1, 4 * 5 * 6).reshape(4, 5, 6).astype(">f4")
    s = load_images(save_npy(tmp_path / "x.npy", arr))
    b = s.batch(np.array([1]))
    assert b.dtype == torch.float32
    np.testing.assert_array_equal(b[0, 0].numpy(), arr[1])


@pytest.mark.parametrize(
    ("values", "norm"),
    [
        (np.array([0.0, 0.25, 1.0], np.float32), Normalisation(0.0, 1.0)),
        (np.array([0.0, 17.5, 255.0], np.float32), Normalisation(0.0, 255.0)),
        (np.array([0.0, 17.5, 255.0], np.float64), Normalisation(0.0, 255.0)),
    ],
)
def test_float_ranges_pick_the_normalisation(tmp_path: Path, values, norm) -> None:
    arr = np.resize(values, (3, 4, 4, 1)).astype(values.dtype)
    s = load_images(save_npy(tmp_path / "x.npy", arr))
    assert s.normalisation == norm
    assert s.batch(slice(None)).dtype == torch.from_numpy(values).dtype


@pytest.mark.parametrize(
    "values",
    [
        np.array([-1e308, 0.0, 1e308]),  # the range overflows float64 itself
        np.array([-3.4e38, 1.0, 3.4e38], np.float32),  # x - lo overflows float32
        np.array([1e20, 1e20 + 2e10, 1e20 + 4e10]),  # far from 0: float32 cannot resolve it
        np.array([-6.8e-230, -3.4e-230, 0.0]),  # a span float32 underflows
        np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max]),
        np.array([0, 2**63, 2**64 - 1], np.uint64),
        np.array([1e20, 1e20, 1e20]),  # constant sets map to -1 or +1, never divide by zero
        np.array([-6.8e-230] * 3),
        np.array([300] * 3, np.int16),
    ],
)
def test_extreme_value_ranges_normalise_into_minus_one_to_one(values: np.ndarray) -> None:
    """Found by tests/test_fuzz.py: these once gave NaN, inf or a ZeroDivisionError."""
    s = as_imageset(np.resize(values, (3, 1, 1, 1)).astype(values.dtype))
    x = s.normalisation.apply(s.batch(slice(None))).flatten()
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    assert (x[1:] >= x[:-1]).all()  # order kept
    if values[0] != values[-1]:
        assert x[0] == -1.0 and x[-1] == 1.0


def test_normalising_never_writes_into_the_callers_array() -> None:
    """Found by tests/test_fuzz.py: float32 batches were views, and were normalised in place."""
    arr = np.linspace(0, 255, 3 * 4 * 4).reshape(3, 4, 4, 1).astype(np.float32)
    before = arr.copy()
    s = as_imageset(arr)
    s.normalisation.apply(s.batch(slice(None)))
    np.testing.assert_array_equal(arr, before)


def test_arrays_and_imagesets_pass_through() -> None:
    arr = images()
    s = load_images(arr)
    assert s.array is arr and s.source == "<array>"
    assert load_images(s) is s
    assert load_images(as_imageset(arr, "x")).source == "x"


# ------------------------------------------------------------------------------------------ npz
def test_npz_single_and_named(tmp_path: Path) -> None:
    a, b = images(seed=1), images(n=2, seed=2)
    np.savez(tmp_path / "one.npz", only=a)
    np.savez_compressed(tmp_path / "two.npz", train=a, test=b)
    np.testing.assert_array_equal(as_nhwc(load_images(tmp_path / "one.npz")), a)
    s = load_images(f"{tmp_path / 'two.npz'}:test")
    assert s.source == f"{tmp_path / 'two.npz'}:test"
    np.testing.assert_array_equal(as_nhwc(s), b)


def test_npz_ambiguous_lists_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", train=images(), test=images())
    with pytest.raises(InputError, match=r"two\.npz:NAME.*2 arrays \(train, test\)"):
        load_images(tmp_path / "two.npz")


def test_npz_unknown_name_lists_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", train=images(), test=images())
    with pytest.raises(InputError, match=r"arrays train, test, found no array named 'val'"):
        load_images(f"{tmp_path / 'two.npz'}:val")


# --------------------------------------------------------------------------------------- folder
def save_image(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(path)


def test_folder_is_recursive_and_sorted(tmp_path: Path) -> None:
    flat = [np.full((5, 6, 3), v, np.uint8) for v in (10, 60, 110, 160, 210)]
    names = ["b/1.jpg", "a/2.png", "9.PNG", "10.png", "a/c/0.jpeg"]
    for name, arr in zip(names, flat, strict=True):
        save_image(tmp_path / name, arr)
    (tmp_path / "notes.txt").write_text("not an image")
    s = load_images(tmp_path, progress=False)
    assert (len(s), s.shape, s.layout, s.source) == (5, (5, 6, 3), "NHWC", str(tmp_path))
    assert s.paths == ("10.png", "9.PNG", "a/2.png", "a/c/0.jpeg", "b/1.jpg")  # relative, POSIX
    order = sorted(range(5), key=lambda i: names[i])  # 10.png, 9.PNG, a/2.png, a/c/0.jpeg, b/1.jpg
    got = as_nhwc(s).astype(int)
    for k, i in enumerate(order):
        assert np.abs(got[k] - flat[i].astype(int)).max() <= 2  # JPEG is nearly exact on flat


def test_a_lazily_decoded_folder_names_its_files_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oddeye.data import loaders

    for name, arr in zip(["x/b.png", "é.png", "a.png"], images(n=3), strict=True):
        save_image(tmp_path / name, arr)
    monkeypatch.setattr(loaders, "EAGER_SHARE", 0.0)  # as if the folder were larger than memory
    s = load_images(tmp_path, progress=False)
    assert isinstance(s.array, loaders.FolderImages) and s.paths == ("a.png", "x/b.png", "é.png")


def test_only_folders_have_paths_and_they_must_match_the_images(tmp_path: Path) -> None:
    assert load_images(images()).paths is None
    assert load_images(save_npy(tmp_path / "x.npy", images())).paths is None
    s = as_imageset(images(n=2))
    with pytest.raises(ValueError, match="2 images but 1 paths"):
        ImageSet(s.array, s.layout, s.source, s.normalisation, ("a.png",))


def test_grayscale_folder_has_one_channel(tmp_path: Path) -> None:
    arrs = [images(n=1, c=1, seed=i)[0] for i in range(3)]
    for i, arr in enumerate(arrs):
        save_image(tmp_path / f"{i}.png", arr)
    s = load_images(tmp_path, progress=False)
    assert s.shape == (5, 6, 1) and s.array.dtype == np.uint8
    np.testing.assert_array_equal(as_nhwc(s), np.stack(arrs))


def test_gray_and_colour_mixed_become_rgb(tmp_path: Path) -> None:
    gray, colour = images(n=1, c=1)[0], images(n=1, seed=3)[0]
    save_image(tmp_path / "a.png", gray)
    save_image(tmp_path / "b.png", colour)
    got = as_nhwc(load_images(tmp_path, progress=False))
    np.testing.assert_array_equal(got[0], np.repeat(gray, 3, axis=-1))
    np.testing.assert_array_equal(got[1], colour)


def test_mixed_sizes_need_a_size(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", images(n=1, h=8, w=8)[0])
    save_image(tmp_path / "b.png", images(n=1, h=8, w=8)[0])
    save_image(tmp_path / "c.png", images(n=1, h=4, w=6)[0])
    with pytest.raises(InputError) as err:
        load_images(tmp_path, progress=False)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "c.png"))
    assert "images of 8x8 (HxW) like most images here (2 of 3); the size option (--size HxW)" in msg
    assert msg.endswith("4x6")
    s = load_images(tmp_path, size=(3, 7), progress=False)
    assert (len(s), s.shape) == (3, (3, 7, 3))


def test_the_file_of_another_size_is_named_even_when_it_sorts_first(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", images(n=1, h=4, w=6)[0])
    for name in "bcd":
        save_image(tmp_path / f"{name}.png", images(n=1, h=8, w=8)[0])
    with pytest.raises(InputError) as err:
        load_images(tmp_path, progress=False)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "a.png")) and "8x8 (HxW) like most images here (3 of 4)" in msg


def test_hidden_files_and_folders_are_not_read(tmp_path: Path) -> None:
    """macOS's resource forks (``._x.png``, ``__MACOSX/``) and Jupyter's checkpoints are not images
    of the set: they are neither read nor listed."""
    save_image(tmp_path / "a.png", images(n=1)[0])
    for hidden in ("__MACOSX", ".ipynb_checkpoints", "sub/.cache"):
        (tmp_path / hidden).mkdir(parents=True)
        save_image(tmp_path / hidden / "a-checkpoint.png", images(n=1)[0])
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 not an image")
    save_image(tmp_path / "sub" / "b.png", images(n=1, seed=2)[0])
    s = load_images(tmp_path, progress=False)
    assert s.paths == ("a.png", "sub/b.png")


def test_images_of_more_than_8_bits_come_to_8_on_one_scale(tmp_path: Path) -> None:
    """Pillow's own conversion clips at 255: 16-bit files came out white and float files black."""
    rng = np.random.default_rng(0)
    wide = rng.normal(30000, 3000, (2, 6, 5)).astype(np.uint16)
    for i, a in enumerate(wide):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    got = load_images(tmp_path, progress=False).array[..., 0]
    np.testing.assert_array_equal(got, np.rint(wide / 257).astype(np.uint8))
    floats = tmp_path / "floats"
    floats.mkdir()
    unit = rng.random((6, 5)).astype(np.float32)
    Image.fromarray(unit, "F").save(floats / "unit.tif")
    Image.fromarray(unit * 255, "F").save(floats / "bytes.tif")
    got = load_images(floats, progress=False).array[..., 0]
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_array_equal(got[0], np.rint(unit * 255).astype(np.uint8))
    bytes32 = tmp_path / "bytes32"  # 32-bit integers within 0..255: as Pillow read them before
    bytes32.mkdir()
    small = rng.integers(0, 256, (6, 5)).astype(np.int32)
    Image.fromarray(small, "I").save(bytes32 / "a.tif")
    np.testing.assert_array_equal(load_images(bytes32, progress=False).array[0, ..., 0], small)
    over = unit.copy()
    over[0, 0] = 1.0002
    Image.fromarray(over, "F").save(floats / "over.tif")
    with pytest.raises(
        InputError, match=r"over.tif: .* up to 1.0002.*: within \[0, 1\] overshooting or a dark"
    ):
        load_images(floats, progress=False)  # [0, 1] overshooting, or a nearly black [0, 255]?
    (floats / "over.tif").unlink()
    Image.fromarray(unit * 1000, "F").save(floats / "wide.tif")
    with pytest.raises(InputError) as err:
        load_images(floats, progress=False)
    assert str(err.value).startswith(str(floats / "wide.tif")) and "not within [0, 1] or [0, 255]" in str(
        err.value
    )


def test_resize_keeps_flat_images_flat(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", np.full((4, 4, 1), 77, np.uint8))
    s = load_images(tmp_path, size=(9, 2), progress=True)
    np.testing.assert_array_equal(as_nhwc(s), np.full((1, 9, 2, 1), 77, np.uint8))


# ------------------------------------------------------------------------------------------ idx
@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "x.idx"])
def test_idx_roundtrip(tmp_path: Path, name: str) -> None:
    arr = images(c=1)[..., 0]
    s = load_images(write_idx(tmp_path / name, arr))
    assert s.shape == (5, 6, 1) and s.source == str(tmp_path / name)
    assert isinstance(s.array, np.memmap) != name.endswith(".gz")
    np.testing.assert_array_equal(as_nhwc(s)[..., 0], arr)


@pytest.mark.parametrize("dtype", ["i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_dtypes_become_native(tmp_path: Path, dtype: str) -> None:
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype)
    s = load_images(write_idx(tmp_path / "x.idx.gz", arr))
    assert s.array.dtype.isnative and s.array.dtype == arr.dtype.newbyteorder("=")
    np.testing.assert_array_equal(as_nhwc(s)[..., 0], arr)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_truncated(tmp_path: Path, name: str) -> None:
    path = write_idx(tmp_path / name, images(c=1)[..., 0][:, :, :5], dims=(4, 5, 6))
    expected = r"expected 120 bytes of data for shape \(4, 5, 6\), found 100 bytes$"
    with pytest.raises(InputError, match=expected):
        load_images(path)


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("x-idx3-ubyte", "found 120 bytes"),  # compared with the file's size
        ("x-idx3-ubyte.gz", r"expected data that fits in memory \(.* available\), found 7.92e\+28 bytes"),
    ],
)
def test_idx_huge_declared_size_fails_fast(tmp_path: Path, name: str, found: str) -> None:
    huge = (2**32 - 1,) * 3
    path = write_idx(tmp_path / name, images(c=1)[..., 0], dims=huge)
    start = time.perf_counter()
    with pytest.raises(InputError, match=found):
        load_images(path)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------------------- labels
def test_labels_from_npy_npz_idx(tmp_path: Path) -> None:
    y = np.array([0, 1, 1, 0])
    for arr in (y, y.astype(bool), y.astype(np.float32), y.astype(np.uint8)[:, None]):
        got = load_labels(save_npy(tmp_path / "y.npy", arr), n=4)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, y)
    np.savez(tmp_path / "y.npz", labels=y, other=y)
    np.testing.assert_array_equal(load_labels(f"{tmp_path / 'y.npz'}:labels"), y)
    idx = write_idx(tmp_path / "y-idx1-ubyte.gz", y.astype("u1"))
    np.testing.assert_array_equal(load_labels(idx), y)
    np.testing.assert_array_equal(load_labels(y.astype(bool)), y)


@pytest.mark.parametrize(
    "text",
    [
        "Id,label\n2,1\n0,0\n3,0\n1,1\n",  # unsorted ids
        "ID,score,label\n0,0.3,0\n1,0.2,1\n2,9,1\n3,1,0\n",  # last column is the label
        "label\n0\n1\n1\n0\n",
        "0\n1\n1.0\n0\n\n",  # headerless, a blank line at the end
        '"id" "label"\n0 0\n1 1\n2 1\n3 0\n',  # whitespace-separated, quoted header
    ],
)
def test_labels_from_text(tmp_path: Path, text: str) -> None:
    (tmp_path / "y.csv").write_text(text)
    np.testing.assert_array_equal(load_labels(tmp_path / "y.csv"), [0, 1, 1, 0])


def test_labels_count_must_match(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"y\.npy: expected 5 labels \(one per score\), found 4"):
        load_labels(save_npy(tmp_path / "y.npy", np.array([0, 1, 1, 0])), n=5)


# --------------------------------------------------------------------------------------- digits
def test_digits_one_class() -> None:
    train, test, labels = digits_one_class(3, seed=1)
    assert train.dtype == test.dtype == np.uint8 and labels.dtype == np.int64
    assert train.shape[1:] == test.shape[1:] == (8, 8, 1)
    halves = np.bincount(load_digits().target) // 2
    assert train.max() == 255 and len(train) == halves[3] and len(test) == 1797 - halves.sum()
    assert labels.shape == (len(test),) and 0 < labels.mean() < 1
    again = digits_one_class(3, seed=1)
    np.testing.assert_array_equal(again[1], test)
    assert not np.array_equal(digits_one_class(3, seed=2)[1], test)


def test_write_homework_digits(tmp_path: Path) -> None:
    paths = write_homework_digits(tmp_path / "hw", normal_digit=5, seed=4)
    assert sorted(p.name for p in (tmp_path / "hw").iterdir()) == [
        "testing_digits.npy",
        "testing_labels.npy",
        "testingset.npy",
        "trainingset.npy",
    ]
    train, test, labels = digits_one_class(5, seed=4)
    digits = np.load(paths["digits"])
    np.testing.assert_array_equal(np.load(paths["train"]), train)
    np.testing.assert_array_equal(np.load(paths["test"]), test)
    np.testing.assert_array_equal(load_labels(paths["labels"], n=len(test)), labels)
    np.testing.assert_array_equal(labels, digits != 5)
    assert load_images(paths["train"]).shape == (8, 8, 1)
    # training images are the normal digit: each one occurs among no test image of another digit
    assert len(train) + (digits == 5).sum() == 182


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_save(f, arr, allow_pickle=False) -> None:
        f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(InputError, match="a writable folder, found .*No space left on device"):
        write_homework_digits(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_transparent_pixels_are_composited_on_white(tmp_path: Path) -> None:
    (tmp_path / "colour").mkdir()
    (tmp_path / "gray").mkdir()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, opaque only in the top row, half transparent in the next
    rgba[0, :, 3], rgba[1, :, 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "colour" / "a.png")
    la = np.zeros((4, 4, 2), np.uint8)
    la[0, :, 1] = 255  # black, opaque only in the top row
    Image.fromarray(la, "LA").save(tmp_path / "gray" / "b.png")
    colour = load_images(tmp_path / "colour", progress=False)
    first = colour.array[0]
    assert colour.shape == (4, 4, 3)
    assert first[0, 0].tolist() == [200, 0, 0] and first[3, 3].tolist() == [255, 255, 255]
    assert 120 < first[1, 0, 1] < 135  # half way between the red's 0 and white
    gray = load_images(tmp_path / "gray", progress=False)
    assert gray.shape == (4, 4, 1) and gray.array[0, 0, 0, 0] == 0 and gray.array[0, 3, 3, 0] == 255


def test_what_cannot_be_a_set_of_images_is_said_in_one_line(tmp_path: Path) -> None:
    one = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(
        InputError, match=r"found one image of shape \(64, 64, 3\) \(give a set of one: x\[None\]"
    ):
        load_images(one)
    assert load_images(one[None]).shape == (64, 64, 3)
    assert load_images(np.zeros((5, 8, 3), np.uint8)).shape == (8, 3, 1)  # five gray 8x3 images
    with pytest.raises(
        InputError, match=r"images: expected a path .* found a list \(np.stack a list of images\)"
    ):
        load_images([one, one])
    np.save(tmp_path / "a.npy", one[None])
    assert load_images(tmp_path / "a.npy", size=(64, 64)).shape == (64, 64, 3)
    with pytest.raises(
        InputError, match=r"a.npy: expected images of 32x32 \(HxW\) as --size asks .* found 64x64"
    ):
        load_images(tmp_path / "a.npy", size=(32, 32))


def test_a_16_bit_pgm_is_read_on_the_16_bit_scale_however_dark(tmp_path: Path) -> None:
    """Pillow reads 16-bit PNM files as mode "I": a dark frame of a camera must not read 257 times
    brighter than a bright one."""
    for name, values in (("bright", [[200, 40000]]), ("dark", [[200, 100]])):
        arr = np.array(values, ">u2")
        (tmp_path / f"{name}.pgm").write_bytes(b"P5\n2 1\n65535\n" + arr.tobytes())
    from oddeye.data.decode import decode  # what a server reads uploads with, any Pillow format

    got = [decode(tmp_path / f"{name}.pgm", "L").tolist() for name in ("bright", "dark")]
    assert got == [[[1, 156]], [[1, 0]]]  # both divided by 257
