"""``oddeye outliers``: planted outliers rank first, duplicates are grouped, a broken file is skipped
and reported, outputs are whole or absent, bad input is one line (exit 2)."""

from __future__ import annotations

import csv as csv_module
import functools
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oddeye
from helpers import stripes
from oddeye.data import loaders
from oddeye.data.duplicates import find_duplicates
from oddeye.data.imageset import as_imageset
from oddeye.data.loaders import FolderImages, load_images
from oddeye.errors import InputError

PLANTED = np.arange(90, 95)  # where the other digits sit among the zeros


@functools.cache
def zeros_and_others() -> np.ndarray:
    """scikit-learn's 178 zeros with five other digits (1, 2, 4, 6, 8...) planted at ``PLANTED``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    zeros = images[digits.target == 0]
    others = images[digits.target != 0][[0, 50, 300, 700, 1200]]
    return np.concatenate([zeros[:90], others, zeros[90:]])


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv_module.reader(f))


def test_planted_outliers_rank_first_one_score_per_image_in_order() -> None:
    images = zeros_and_others()
    result = oddeye.outliers(images, progress=False)
    assert result.scores.shape == (len(images),) and np.isfinite(result.scores).all()
    assert set(result.oddest(5)) == set(PLANTED)  # precision 1 among the top 5
    normal = np.delete(result.scores, PLANTED)
    assert result.scores[PLANTED].min() > np.percentile(normal, 99)  # higher = odder
    assert abs(np.median(normal)) < 0.5  # the typical image scores about 0
    assert result.maps.shape == (32, 8, 8)
    assert (result.maps.reshape(32, -1).max(1) > 0).all()  # each compared with the others, not itself
    shuffled = np.random.default_rng(0).permutation(len(images))
    again = oddeye.outliers(images[shuffled], progress=False)  # still callable: a row per image, in order
    assert set(np.flatnonzero(np.isin(shuffled, PLANTED))) == set(again.oddest(5))


def test_images_a_bank_leaves_out_are_measured_against_its_core() -> None:
    images = zeros_and_others()
    result = oddeye.outliers(images, detector="pixel-knn", max_bank=60, progress=False)
    assert set(result.oddest(5)) == set(PLANTED)  # most of them are not in the bank of 60
    assert np.isfinite(result.scores).all() and result.detector == "pixel-knn"


def test_an_image_typical_as_a_whole_with_one_odd_spot_ranks_among_the_first_by_the_local_view() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    zeros = np.round(digits.images[digits.target == 0] * (255 / 16)).astype(np.uint8)
    images = np.kron(zeros, np.ones((1, 4, 4), np.uint8))[..., None].copy()  # 178 zeros, 32x32
    images[40, 1:4, 1:4] = 255  # a 3x3 spot in a corner that is dark in every zero
    found = oddeye.outliers(images, progress=False)
    whole = oddeye.create("default", local_members=[], large_local_members=[])  # no local view
    without = oddeye.outliers(images, detector=whole, progress=False)
    assert list(found.oddest()).index(40) < 3 and list(without.oddest()).index(40) > 10
    assert found.local and not without.local
    spot = found.maps[list(found.gallery).index(40)]  # the local view's map, the image left out
    y, x = np.unravel_index(np.argmax(spot), spot.shape)
    assert y < 6 and x < 6 and "local view" in found.map_meaning


def test_every_bank_image_left_out_in_turn_scores_as_the_references_do() -> None:
    from oddeye.detectors.patches import PatchKNN

    images = zeros_and_others()
    det = oddeye.create("patch-knn", radius=0, references=1000, val_fraction=0.0, progress=False).fit(images)
    model = det.model_
    assert isinstance(model, PatchKNN)
    every = model.leave_one_out_scores(batch=16)
    np.testing.assert_allclose(every.numpy(), model.reference_scores().numpy(), rtol=1e-5, atol=1e-5)
    model.leave_one_out_scores(batch=50, refit=True)  # the same scales: refitted from the same distances
    np.testing.assert_allclose(model.leave_one_out_scores().numpy(), every.numpy(), rtol=1e-5, atol=1e-5)


def test_a_texture_bank_of_patches_leaves_each_image_out_as_its_references_were_and_finds_a_spot() -> None:
    import torch

    from oddeye.detectors import get_spec
    from oddeye.detectors.base import Batches

    images = stripes(60)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    model = get_spec("patch-knn").build(
        (32, 32, 3), {"match": "auto", "references": 1000, "max_patches": 4000}
    )
    batches = Batches(lambda: iter(x.split(16)), len(x))
    model.fit_start(batches)
    model.fit_end(batches, lambda: iter(()))
    assert model.matching == "anywhere"
    assert model.leave_one_out_scores() is None  # a bank of patches: it needs the images
    every = model.leave_one_out_scores(images=lambda: iter(x.split(7)))  # described anew, in float32:
    # the references' raw descriptors were kept in float16 while the axes were fitted
    np.testing.assert_allclose(every.numpy(), model.reference_scores().numpy(), rtol=0.03, atol=0.03)
    # outliers: a spot in one stripe image, found by the local view, its map at the spot
    images[17, 20:23, 5:8] = (255, 0, 255)
    found = oddeye.outliers(images, progress=False)
    assert found.local and found.oddest()[0] == 17
    spot = found.maps[list(found.gallery).index(17)]
    y, x0 = np.unravel_index(np.argmax(spot), spot.shape)
    assert 17 <= y <= 25 and 2 <= x0 <= 10


def _folder(root: Path, n: int = 30, side: int = 16) -> Path:
    images = zeros_and_others()
    root.mkdir()
    for i in range(n):
        name = root / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.png"
        name.parent.mkdir(exist_ok=True)
        Image.fromarray(np.kron(images[i, ..., 0], np.ones((side // 8, side // 8), np.uint8))).save(name)
    return root


def test_a_folder_names_each_file_and_a_broken_one_is_skipped_and_reported(cli, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs")
    (folder / "bad.png").write_bytes(b"not a png at all")
    out, table = tmp_path / "o.html", tmp_path / "o.csv"
    r = cli("outliers", folder, "--out", out, "--csv", table, "--quiet")
    assert r.code == 0, r.err
    assert "1 unreadable file skipped: bad.png (not an image format Pillow recognises)" in r.out
    head, *rows = _rows(table)
    assert head == ["Id", "path", "score", "duplicate_group", "duplicate"]
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("img*.png"))
    assert [row[1] for row in rows] == expected and [int(row[0]) for row in rows] == list(range(30))
    assert all(np.isfinite(float(row[2])) for row in rows)
    page = out.read_text(encoding="utf-8")
    assert "Unreadable files" in page and "bad.png" in page and "Oddest images" in page
    assert page.count('<figure class="card">') >= 30  # the gallery: every image of a set this small
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched


def test_truncated_and_odd_sized_files_are_counted_and_train_still_refuses(cli, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs", n=24)
    whole = (folder / "img01.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])  # its header reads; its pixels do not
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(folder / "wide.png")
    r = cli("outliers", folder, "--out", tmp_path / "o.html", "--quiet")
    assert r.code == 0, r.err
    assert "2 unreadable files skipped: cut.png (" in r.out
    assert "wide.png (expected 16x16 (HxW) like most images here, found 10x12" in r.out
    assert "ranked 24 images of 16x16x1" in r.out
    with pytest.raises(InputError, match="cut.png: expected a readable image"):
        load_images(folder, size=(16, 16))  # without the mode: as before
    run = tmp_path / "run"
    r = cli("train", folder, "--detector", "pixel-knn", "--out", run, "--size", "16x16", "--quiet")
    assert r.code == 2 and "cut.png" in r.err and len(r.err.strip().splitlines()) == 1


def test_a_folder_of_many_sizes_is_refused_not_half_skipped(cli, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs", n=24)
    (tmp_path / "small").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small" / f"s{i}.png")
        (tmp_path / "small" / f"s{i}.png").rename(folder / f"zz{i}.png")
    r = cli("outliers", folder, "--out", tmp_path / "o.html", "--csv", tmp_path / "o.csv", "--quiet")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert (
        f"{folder}: expected images of one size (the size option (--size HxW) resizes every image)" in r.err
    )
    assert "found 4 of 28 not at the 16x16 (HxW) of most, e.g. zz0.png at 8x8" in r.err
    assert not (tmp_path / "o.html").exists() and not (tmp_path / "o.csv").exists()
    r = cli("outliers", folder, "--out", tmp_path / "o.html", "--size", "16x16", "--quiet")
    assert r.code == 0 and "ranked 28 images" in r.out, r.err
    small = _folder(tmp_path / "small8", n=8)  # one stray size among 9: skipped, however small the set
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small / "odd.png")
    r = cli("outliers", small, "--out", tmp_path / "s.html", "--quiet")
    assert r.code != 2 or "one size" not in r.err, r.err
    (folder / "zz0.png").unlink(), (folder / "zz1.png").unlink()  # 2 of 26: strays, skipped and listed
    r = cli("outliers", folder, "--out", tmp_path / "o.html", "--quiet")
    assert r.code == 0 and "2 unreadable files skipped: zz2.png (expected 16x16" in r.out, r.err


def test_a_folder_read_lazily_checks_every_file_first(tmp_path: Path, monkeypatch) -> None:
    folder = _folder(tmp_path / "imgs", n=22)
    whole = (folder / "img01.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    monkeypatch.setattr(loaders, "EAGER_MAX", 0)  # as for a folder too large to decode at once
    data = load_images(folder, progress=False, skip_unreadable=True)
    assert isinstance(data.array, FolderImages) and len(data) == 22
    assert [u.path for u in data.unreadable] == ["cut.png"] and "cut.png" not in data.paths
    assert data.batch(np.arange(22)).shape == (22, 1, 16, 16)  # every file kept decodes


def _jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _resized(image: np.ndarray) -> np.ndarray:
    half = Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR)
    return np.asarray(half.resize((64, 64), Image.Resampling.BILINEAR))


@functools.cache
def photos() -> np.ndarray:
    """30 distinct 64x64 crops of scikit-learn's two photographs (textured ones: no plain sky)."""
    from sklearn.datasets import load_sample_images

    crops = [
        im[y : y + 64, x : x + 64]
        for im in load_sample_images().images
        for y in range(0, im.shape[0] - 64, 64)
        for x in range(0, im.shape[1] - 64, 64)
    ]
    return np.stack([c for c in crops if c.std() > 40][:30])


def test_exact_and_near_duplicates_are_grouped_and_distinct_images_are_not() -> None:
    base = photos()
    copies = np.stack(
        [
            base[3],  # exact
            _jpeg(base[5]),  # re-encoded
            _resized(base[7]),  # halved and enlarged again
            np.round(base[9] * 0.9 + 16).astype(np.uint8),  # brighter, less contrast
        ]
    )
    found = find_duplicates(as_imageset(np.concatenate([base, copies])), progress=False)
    assert [g.tolist() for g in found.groups()] == [[3, 30], [5, 31], [7, 32], [9, 33]]
    assert [found.kind(i) for i in (3, 30, 5, 31, 0)] == ["exact", "exact", "near", "near", ""]
    assert found.group[33] == 9 and found.group[0] == -1 and found.n_groups == 4


def test_the_csv_names_each_duplicate_group_by_its_smallest_id(cli, tmp_path: Path) -> None:
    images = zeros_and_others()
    path = tmp_path / "x.npy"
    np.save(path, np.concatenate([images, images[[7, 7]]]))  # two exact copies of image 7
    table = tmp_path / "o.csv"
    r = cli("outliers", path, "--out", tmp_path / "o.html", "--csv", table, "--top", "5", "--quiet")
    assert r.code == 0, r.err
    head, *rows = _rows(table)
    assert head == ["Id", "score", "duplicate_group", "duplicate"] and len(rows) == len(images) + 2
    n = len(images)
    assert [rows[i][2:] for i in (7, n, n + 1)] == [["7", "exact"]] * 3
    assert rows[0][2:] == ["", ""]
    assert "duplicates: 1 group holding 3 images (3 with an exact copy)" in r.out
    assert (tmp_path / "o.html").read_text(encoding="utf-8").count("<figcaption>1. #") == 1


def test_outputs_are_whole_or_absent(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, zeros_and_others())
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")
    table, page = tmp_path / "o.csv", tmp_path / "o.html"
    r = cli("outliers", path, "--out", blocked / "o.html", "--csv", table, "--quiet")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    r = cli("outliers", path, "--out", page, "--csv", blocked / "o.csv", "--quiet")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert not table.exists() and not page.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "x.npy"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["missing.npy"], "nothing there"),
        (["labels.txt"], "expected a .npy, .npz or idx(.gz) file"),
        (["x.npy", "--detector", "cnn-bn"], "expected a memory-bank detector"),
        (["few.npy"], "expected at least 20 readable images"),
        (["x.npy", "--top", "0"], "top: expected a positive number"),
        (["x.npy", "--detector", "pixel-knm"], "pixel-knn"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path, args: list[str], says: str) -> None:
    np.save(tmp_path / "x.npy", zeros_and_others())
    np.save(tmp_path / "few.npy", zeros_and_others()[:5])
    (tmp_path / "labels.txt").write_text("0\n1\n")
    first, *rest = args
    r = cli("outliers", tmp_path / first, *rest, "--out", tmp_path / "o.html", "--quiet")
    assert r.code == 2 and says in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "o.html").exists()
