"""Anomaly maps on disk (``score --maps``), the pixel threshold from held-out maps, overlays, and
``evaluate --maps``: pixel AUROC and AUPRO against masks, maps resized to the masks' size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oddeye
from helpers import blobs, make_mvtec
from oddeye.data.masks import ground_truth
from oddeye.maps import read_maps, resize_map
from oddeye.pixel_metrics import PixelEvaluator


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("maps")
    category = make_mvtec(root, n_train=40)
    run = root / "run"
    oddeye.train(category, "pixel-knn", run, progress=False, val_fraction=0.25)
    return {"root": root, "category": category, "run": run}


def test_score_writes_one_map_per_image_mirroring_the_folder(mvtec, cli, tmp_path: Path) -> None:
    maps, csv = tmp_path / "maps", tmp_path / "p.csv"
    r = cli("score", mvtec["run"], mvtec["category"], "--out", csv, "--maps", maps, "--quiet")
    assert r.code == 0, r.err
    assert f"wrote 9 anomaly maps (16x16, float32 .npy) to {maps}" in r.out
    det = oddeye.load(mvtec["run"], progress=False)
    expected = det.infer(mvtec["category"], maps=True).anomaly_maps
    found = read_maps(maps)
    assert found.paths == ground_truth(mvtec["category"]).paths
    assert found.files[4] == (maps / "hole" / "000.npy").resolve()
    for i in range(9):
        m = np.load(found.files[i])
        assert m.dtype == np.float32 and m.shape == (16, 16)
        np.testing.assert_allclose(m, expected[i], rtol=1e-6, atol=1e-6)
    about = json.loads((maps / "maps.json").read_text())
    assert about["shape"] == [16, 16] and about["n_maps"] == 9 and about["detector"] == "pixel-knn"
    # the pixel threshold: the value a share 0.01 of the held-out maps' pixels exceed
    held = det.infer(det.record_.heldout_sample, maps=True).anomaly_maps
    value = about["pixel_threshold"]["value"]
    assert (held > value).mean() <= 0.01 < (held >= value).mean() + 0.01
    assert f"pixel threshold fpr:0.01 = {value:.5g} from {len(held)} held-out maps" in r.out


def test_array_inputs_name_maps_by_id_and_overlays_are_pictures(tmp_path: Path) -> None:
    det = oddeye.create("pixel-knn", progress=False).fit(blobs(30, (8, 8, 3)))
    images = blobs(3, (8, 8, 3), seed=5, anomalous=True)
    result = oddeye.score(
        det, images, maps=tmp_path / "maps", maps_png=True, pixel_rule="0.5", progress=False
    )
    assert result.pixel_threshold.value == 0.5 and result.pixel_threshold.n_maps == 0
    rows = (tmp_path / "maps" / "maps.csv").read_text().splitlines()
    assert rows == [
        "Id,map,overlay",
        "0,0.npy,0_overlay.png",
        "1,1.npy,1_overlay.png",
        "2,2.npy,2_overlay.png",
    ]
    with Image.open(tmp_path / "maps" / "2_overlay.png") as im:
        assert im.size == (256, 256) and im.mode == "RGB"
    # the one loop: maps streamed batch by batch are the maps infer() gathers
    parts = list(det.iter_infer(det.prepare(images), maps=True))
    np.testing.assert_array_equal(
        np.concatenate([p.anomaly_maps for p in parts]), det.infer(images, maps=True).anomaly_maps
    )


def test_a_folder_with_other_files_is_refused_and_nothing_written(mvtec, cli, tmp_path: Path) -> None:
    maps = tmp_path / "mine"
    maps.mkdir()
    (maps / "notes.txt").write_text("keep me")
    r = cli("score", mvtec["run"], mvtec["category"], "--out", tmp_path / "p.csv", "--maps", maps, "--quiet")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "other files" in r.err
    assert not (tmp_path / "p.csv").exists() and sorted(p.name for p in maps.iterdir()) == ["notes.txt"]
    done = tmp_path / "maps"
    for _ in range(2):  # maps written before are replaced
        r = cli(
            "score", mvtec["run"], mvtec["category"], "--out", tmp_path / "p.csv", "--maps", done, "--quiet"
        )
        assert r.code == 0, r.err


def test_evaluate_with_maps(mvtec, cli, tmp_path: Path) -> None:
    maps, csv = tmp_path / "maps", tmp_path / "p.csv"
    assert cli("score", mvtec["run"], mvtec["category"], "--out", csv, "--maps", maps, "--quiet").code == 0
    r = cli("evaluate", csv, "--dataset", mvtec["category"], "--maps", maps, "--json")
    assert r.code == 0, r.err
    pixel = json.loads(r.out)["pixel"]
    truth = ground_truth(mvtec["category"])
    found = read_maps(maps)
    all_maps = np.stack([found.map(i) for i in range(9)])
    all_masks = np.stack([truth.masks.mask(i) for i in range(9)])
    direct = PixelEvaluator(exact_pixels=None).add(all_maps, all_masks).result()
    assert pixel["pixel_auroc"] == pytest.approx(direct.pixel_auroc) and pixel["aupro"] == pytest.approx(
        direct.aupro
    )
    assert pixel["n_regions"] == 5 and pixel["n_pixels"] == 9 * 256 and pixel["exact"]
    r = cli("evaluate", csv, "--dataset", mvtec["category"], "--maps", maps)
    assert "pixel AUROC" in r.out and "AUPRO (FPR<=0.3)" in r.out
    # a non-binary mask stops the evaluation in one line
    bad = np.zeros((16, 16), np.uint8)
    bad[:2, :2], bad[4:6, 4:6] = 255, 7
    broken = tmp_path / "broken"
    shutil.copytree(mvtec["category"], broken)
    Image.fromarray(bad).save(broken / "ground_truth" / "hole" / "000_mask.png")
    r = cli("evaluate", csv, "--dataset", broken, "--maps", maps)
    assert r.code == 2 and "000_mask.png: expected a binary mask" in r.err
    labels = tmp_path / "labels.npy"
    np.save(labels, truth.labels)
    r = cli("evaluate", csv, "--labels", labels, "--maps", maps)
    assert r.code == 2 and "pixel metrics need masks" in r.err
    # a category without ground_truth/: image metrics alone; pixel metrics ask for the masks
    shutil.rmtree(broken / "ground_truth")
    r = cli("evaluate", csv, "--dataset", broken, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["auroc"] == pytest.approx(
        json.loads(cli("evaluate", csv, "--dataset", mvtec["category"], "--json").out)["auroc"]
    )
    r = cli("evaluate", csv, "--dataset", broken, "--maps", maps)
    assert (
        r.code == 2 and f"{broken / 'ground_truth'}: expected masks for the pixel metrics (--maps)" in r.err
    )


def test_maps_are_resized_to_the_masks_size(mvtec, tmp_path: Path) -> None:
    run = tmp_path / "run8"
    oddeye.train(mvtec["category"], "pixel-knn", run, size=(8, 8), progress=False, val_fraction=0.25)
    csv, maps = tmp_path / "p.csv", tmp_path / "maps"
    oddeye.score(run, mvtec["category"], csv, size=(8, 8), maps=maps, progress=False)
    found = read_maps(maps)
    assert found.map(0).shape == (8, 8)
    got = oddeye.evaluate(csv, dataset=mvtec["category"], maps=maps).pixel
    truth = ground_truth(mvtec["category"])
    up = np.stack([resize_map(found.map(i), (16, 16)) for i in range(9)])
    masks = np.stack([truth.masks.mask(i) for i in range(9)])
    assert got.n_pixels == 9 * 256
    assert got.aupro == pytest.approx(PixelEvaluator().add(up, masks).result().aupro)


def test_the_report_shows_pixel_metrics_and_regions(mvtec, cli, tmp_path: Path) -> None:
    maps, csv, html = tmp_path / "maps", tmp_path / "p.csv", tmp_path / "r.html"
    assert cli("score", mvtec["run"], mvtec["category"], "--out", csv, "--maps", maps, "--quiet").code == 0
    r = cli("evaluate", csv, "--dataset", mvtec["category"], "--maps", maps, "--report", html, "--quiet")
    assert r.code == 0, r.err
    page = html.read_text()
    for text in ("ROC AUC per defect", "pixel AUROC", "AUPRO (FPR &lt;= 0.3)", "green: the true region"):
        assert text in page
    figures = sorted(p.name for p in (tmp_path / "r_figures").iterdir())
    assert [f for f in figures if f.startswith("local_")] == [
        "local_1.png",
        "local_2.png",
        "local_3.png",
        "local_4.png",
    ]
    with Image.open(tmp_path / "r_figures" / "local_1.png") as im:
        assert im.size == (256, 256)  # a 16x16 file, enlarged for viewing
