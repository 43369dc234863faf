"""Data with masks: the MVTec AD layout (train on train/good, score test/, ground truth from the
folders), anomalib's Folder convention (masks matched by name, or one .npy), and bad masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oddeye
from helpers import make_mvtec
from oddeye.data.masks import ground_truth, images_of, mvtec_category
from oddeye.errors import InputError

TEST_PATHS = tuple(
    [f"good/{i:03d}.png" for i in range(4)]
    + [f"hole/{i:03d}.png" for i in range(2)]
    + [f"scratch/{i:03d}.png" for i in range(3)]
)


@pytest.fixture
def category(tmp_path: Path) -> Path:
    return make_mvtec(tmp_path / "data")


def test_a_category_folder_is_detected_and_resolved_per_split(category: Path, tmp_path: Path) -> None:
    assert mvtec_category(category) == category
    assert mvtec_category(category / "test") is None and mvtec_category(tmp_path / "nothing") is None
    assert mvtec_category("x.npz:images") is None
    assert images_of(category, "train") == category / "train" / "good"
    assert images_of(category, "test") == category / "test"
    array = np.zeros((2, 4, 4), np.uint8)
    assert images_of(array, "test") is array


def test_a_folder_of_categories_or_a_category_without_train_good_is_not_read_as_images(
    category: Path, tmp_path: Path, cli
) -> None:
    """Read as a folder of images, its test defects and masks would be trained on as normal."""
    root = category.parent
    shutil.copytree(category, root / "cable")
    for command in (
        ("train", root, "--out", tmp_path / "run"),
        ("outliers", root, "--out", tmp_path / "o.html"),
    ):
        r = cli(*command, "--quiet")
        assert r.code == 2 and r.err.count("\n") == 1, r.err
        assert f"{root}: expected a folder of images or one MVTec AD category (train/good/, test/)" in r.err
        assert (
            f"found a folder of 2 categories (cable, {category.name}): give one, e.g. {root / 'cable'}"
            in r.err
        )
    (category / "train" / "good").rename(category / "train" / "normal")
    with pytest.raises(InputError, match="train/ and test/ or ground_truth/ but no train/good/"):
        images_of(category, "train")
    assert not (tmp_path / "run").exists() and not (tmp_path / "o.html").exists()


def test_a_folder_that_cannot_be_listed_is_left_to_the_reader(tmp_path: Path, monkeypatch) -> None:
    import os

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", refuse)
    assert images_of(tmp_path, "train") == tmp_path  # reading it says what is wrong, in one line


def test_outliers_of_a_category_ranks_its_training_images(category: Path, cli, tmp_path: Path) -> None:
    r = cli("outliers", category, "--out", tmp_path / "o.html", "--csv", tmp_path / "o.csv", "--quiet")
    assert r.code == 0, r.err
    rows = (tmp_path / "o.csv").read_text().splitlines()
    assert len(rows) == 25 and rows[1].split(",")[1] == "000.png"  # train/good's 24, no masks


def test_ground_truth_from_the_layout(category: Path) -> None:
    truth = ground_truth(category)
    assert truth.paths == TEST_PATHS
    assert truth.labels.tolist() == [0] * 4 + [1] * 5 and truth.labels.dtype == np.int64
    assert truth.defects == ("good",) * 4 + ("hole",) * 2 + ("scratch",) * 3
    assert truth.images[0] == category / "test" / "good" / "000.png"
    assert len(truth.masks) == 9 and truth.masks.shape(0) == (16, 16)
    assert not truth.masks.mask(0).any()
    assert [int(truth.masks.mask(i).sum()) for i in range(4, 9)] == [20] * 5
    assert truth.masks.mask(4).dtype == bool


def test_train_and_score_a_category(category: Path, tmp_path: Path, cli) -> None:
    run, csv = tmp_path / "run", tmp_path / "p.csv"
    r = cli("train", category, "--detector", "pixel-knn", "--out", run, "--quiet")
    assert r.code == 0, r.err
    assert "on 24 images" in r.out  # train/good only
    r = cli("score", run, category, "--out", csv, "--quiet")
    assert r.code == 0, r.err
    rows = csv.read_text().splitlines()
    assert rows[0] == "Id,path,Predicted" and len(rows) == 10
    assert tuple(line.split(",")[1] for line in rows[1:]) == TEST_PATHS
    # the API resolves the same way, and update takes a category's train/good
    det = oddeye.load(run, progress=False)
    assert len(det.prepare(category)) == 9 and len(det.prepare(category, split="train")) == 24


def test_scored_paths_are_checked_against_the_layout(category: Path) -> None:
    assert ground_truth(category, paths=TEST_PATHS).paths == TEST_PATHS
    swapped = (TEST_PATHS[1], TEST_PATHS[0], *TEST_PATHS[2:])
    with pytest.raises(InputError, match=r"in order \('good/000.png' on row 0\), found 'good/001.png'"):
        ground_truth(category, paths=swapped, scores_source="p.csv")
    with pytest.raises(InputError, match="9 scores"):
        ground_truth(category, paths=TEST_PATHS[:5])
    with pytest.raises(InputError, match="9 scores"):
        ground_truth(category, n=8)
    with pytest.raises(InputError, match="MVTec AD category"):
        ground_truth(category / "test")


def test_masks_matched_by_name_in_a_folder(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:5] = 1  # 0/1 masks are binary too
    Image.fromarray(mask).save(masks / "b.png")  # the same name
    Image.fromarray(mask * 255).save(masks / "c_mask.bmp")  # the stem with _mask, another suffix
    paths = ["normal/a.png", "abnormal/b.png", "abnormal/c.jpg"]
    truth = ground_truth(n=3, paths=paths, labels=np.array([0, 1, 1]), masks=masks)
    assert truth.defects == ("good", "abnormal", "abnormal")
    assert [int(truth.masks.mask(i).sum()) for i in range(3)] == [0, 6, 6]
    assert truth.masks.shape(0) == (8, 8)  # a normal image's empty mask takes the masks' size
    with pytest.raises(InputError, match="a mask for the anomalous image abnormal/d.png"):
        ground_truth(paths=[*paths, "abnormal/d.png"], labels=np.array([0, 1, 1, 1]), masks=masks)
    with pytest.raises(InputError, match="path column"):
        ground_truth(n=3, labels=np.array([0, 1, 1]), masks=masks)


def test_masks_as_npy(tmp_path: Path) -> None:
    masks = np.zeros((3, 6, 6), np.uint8)
    masks[1, :2, :2] = 255
    np.save(tmp_path / "masks.npy", masks)
    truth = ground_truth(labels=np.array([0, 1, 1]), masks=tmp_path / "masks.npy")
    assert [int(truth.masks.mask(i).sum()) for i in range(3)] == [0, 4, 0]
    bad = ground_truth(labels=np.array([1, 0, 1]), masks=tmp_path / "masks.npy")
    with pytest.raises(InputError, match="all-zero masks for normal images"):
        bad.masks.mask(1)
    with pytest.raises(InputError, match=r"2 masks \(one per scored image\), found 3"):
        ground_truth(labels=np.array([0, 1]), masks=tmp_path / "masks.npy")


def test_bad_masks_are_one_line_errors(category: Path) -> None:
    gt = category / "ground_truth"
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(gt / "hole" / "001_mask.png")
    with pytest.raises(InputError, match=r"a mask of 16x16 \(HxW\), the size of its image .*found 8x16"):
        ground_truth(category)
    mask = np.zeros((16, 16), np.uint8)
    mask[:3, :3], mask[5:7, 5:7] = 255, 128  # two values besides 0
    Image.fromarray(mask).save(gt / "hole" / "001_mask.png")
    truth = ground_truth(category)
    with pytest.raises(InputError, match=r"a binary mask .*found 3 values \(0, 128, 255\)"):
        truth.masks.mask(5)
    (gt / "hole" / "001_mask.png").unlink()
    with pytest.raises(InputError, match=r"a mask for the anomalous image hole/001.png: hole/001_mask.png"):
        ground_truth(category)
    shutil.rmtree(gt)  # no ground_truth/ at all: the image labels and defect types alone
    truth = ground_truth(category)
    assert truth.masks is None and truth.labels.sum() == 5 and truth.defects[-1] == "scratch"
    gt.write_text("a file")
    with pytest.raises(InputError, match="ground_truth: expected a folder of masks, found a file"):
        ground_truth(category)
