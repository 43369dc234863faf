"""Reports: every section where its inputs exist, self-contained HTML, the CLI's --report/--threshold."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oddeye
from helpers import FAST, blobs

ALL_SECTIONS = [
    "training_curve",
    "score_histogram",
    "roc_pr",
    "most_anomalous",
    "most_normal",
    "anomaly_maps",
    "latent_map",
]


def scored_set() -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([blobs(30, seed=2), blobs(30, seed=3, anomalous=True)])
    return images, np.r_[np.zeros(30, np.int64), np.ones(30, np.int64)]


@pytest.fixture(scope="module")
def fitted():
    return oddeye.create("cnn", **FAST).fit(blobs(60))


def embedded_images(html: str) -> list[Image.Image]:
    """Every <img> of the page, decoded; fails if any is not an embedded PNG."""
    sources = re.findall(r'<img[^>]*src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    return [Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) for s in sources]


def assert_self_contained(html: str) -> None:
    """Nothing that a browser would fetch: no URLs in src/href, no scripts, no external CSS."""
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert "http://" not in html and "https://" not in html


def test_report_has_every_section_and_is_self_contained(fitted, tmp_path: Path) -> None:
    images, labels = scored_set()
    files = oddeye.report(fitted, images, tmp_path / "report.html", labels=labels, progress=False)
    html = files.html.read_text()
    for key in ALL_SECTIONS:
        assert f'id="{key}"' in html, key
    assert sorted(p.stem for p in files.figures) == sorted(ALL_SECTIONS)
    assert sorted(p.name for p in (tmp_path / "report_figures").iterdir()) == sorted(
        f"{k}.png" for k in ALL_SECTIONS
    )
    pictures = embedded_images(html)
    assert len(pictures) == len(ALL_SECTIONS) and all(p.size[0] > 200 for p in pictures)
    assert_self_contained(html)
    for needle in ("ROC AUC", "average precision", "threshold", "flagged", "47,355", "60 images of 16x16x3"):
        assert needle in html, needle
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_report_without_labels_has_no_curves_and_colours_by_score(fitted, tmp_path: Path) -> None:
    images, _ = scored_set()
    files = oddeye.report(fitted, images, tmp_path / "r.html", progress=False)
    html = files.html.read_text()
    assert 'id="roc_pr"' not in html and 'id="latent_map"' in html and "coloured by score" in html
    assert "ROC AUC" not in html


def test_report_with_classes_colours_each_class(fitted, tmp_path: Path) -> None:
    images, labels = scored_set()
    classes = np.repeat([0, 1, 2], 20)
    files = oddeye.report(
        fitted, images, tmp_path / "r.html", labels=labels, classes=classes, class_names=["a", "b", "c"],
        progress=False,
    )  # fmt: skip
    assert "one colour per class" in files.html.read_text()
    with pytest.raises(
        oddeye.OddeyeError, match=r"--class-names: expected a name for each class id 0..2, found 2 names"
    ):
        oddeye.report(
            fitted, images, tmp_path / "s.html", classes=classes, class_names=["a", "b"], progress=False
        )
    assert not (tmp_path / "s.html").exists()


def test_memory_bank_detector_has_maps_but_no_reconstructions_or_training_loop(tmp_path: Path) -> None:
    det = oddeye.create("pixel-knn", progress=False).fit(blobs(40))
    images, labels = scored_set()
    html = oddeye.report(det, images, tmp_path / "r.html", labels=labels, progress=False).html.read_text()
    assert 'id="anomaly_maps"' in html and "input / anomaly map" not in html  # the title is in the PNG
    assert "the squared difference to the nearest training image per pixel" in html
    assert 'id="training_curve"' not in html and 'id="latent_map"' in html
    assert "the blurred (and reduced) pixels it compares" in html


def test_ensemble_report_shows_each_member_training(tmp_path: Path) -> None:
    det = oddeye.create("ensemble", members="pixel-knn,cnn", **FAST).fit(blobs(40))
    run = det.save(tmp_path / "run")
    assert "cnn," in (run / "history.csv").read_text().splitlines()[1]
    back = oddeye.load(run, progress=False)
    assert list(back.member_histories_) == ["cnn"] and len(back.member_histories_["cnn"]) == 2
    images, _ = scored_set()
    html = oddeye.report(back, images, tmp_path / "r.html", progress=False).html.read_text()
    assert "One panel per ensemble member" in html and "members: cnn 2 epochs (kept" in html


def test_scores_only_report_from_a_csv(cli, homework, tmp_path: Path) -> None:
    scores = np.r_[np.linspace(0, 1, 20), np.linspace(0.5, 2, 20)]
    oddeye.evaluation.write_scores_csv(tmp_path / "p.csv", scores)
    r = cli("evaluate", tmp_path / "p.csv", "--labels", homework["labels"], "--threshold", "f1",
            "--report", tmp_path / "e.html", "--quiet")  # fmt: skip
    assert r.code == 0, r.err
    assert "at the threshold" in r.out and "analysis only" in r.out
    html = (tmp_path / "e.html").read_text()
    assert 'id="roc_pr"' in html and 'id="score_histogram"' in html and 'id="most_anomalous"' not in html
    assert_self_contained(html)


def train_run(cli, homework, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    r = cli("train", homework["train"], "--detector", "cnn-bn", "--out", run, "--epochs", "2", "--quiet")
    assert r.code == 0, r.err
    assert "threshold" in r.out and "fpr:0.01" in r.out
    return run


def test_score_with_thresholds_writes_flags_and_saves_the_threshold(cli, homework, tmp_path: Path) -> None:
    run, csv = train_run(cli, homework, tmp_path), tmp_path / "p.csv"
    r = cli("score", run, homework["test"], "--out", csv, "--threshold", "top:0.25", "--quiet")
    assert r.code == 0, r.err
    assert "flagged 10 of 40 images (25.00%)" in r.out
    rows = (tmp_path / "p.flags.csv").read_text().splitlines()
    assert rows[0] == "Id,score,calibrated,anomaly" and len(rows) == 41
    scores = np.array([float(x.split(",")[1]) for x in rows[1:]])
    flags = np.array([int(x.split(",")[3]) for x in rows[1:]])
    assert flags.sum() == 10 and scores[flags == 1].min() > scores[flags == 0].max()
    meta = json.loads((run / "model.json").read_text())
    assert meta["threshold"]["rule"] == "top:0.25"
    # a bare --threshold reuses the saved one, on new images too
    r = cli(
        "score", run, homework["test"], "--out", csv, "--threshold", "--flags", tmp_path / "f.csv", "--quiet"
    )
    assert r.code == 0 and "top:0.25" in r.out and (tmp_path / "f.csv").exists()
    # f1 needs labels and is kept apart, as an analysis threshold
    r = cli("score", run, homework["test"], "--out", csv, "--threshold", "f1", "--quiet")
    assert r.code == 2 and "needs labels" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("score", run, homework["test"], "--out", csv, "--threshold", "f1", "--labels", homework["labels"],
            "--quiet")  # fmt: skip
    assert r.code == 0 and "analysis threshold" in r.out
    meta = json.loads((run / "model.json").read_text())
    assert meta["threshold"]["rule"] == "top:0.25" and meta["analysis_threshold"]["uses_labels"] is True


def test_score_calibrated_and_report(cli, homework, tmp_path: Path) -> None:
    run, csv = train_run(cli, homework, tmp_path), tmp_path / "p.csv"
    r = cli("score", run, homework["test"], "--out", csv, "--calibrated", "--labels", homework["labels"],
            "--report", tmp_path / "s.html", "--quiet")  # fmt: skip
    assert r.code == 0, r.err
    values = np.array([float(x.split(",")[1]) for x in csv.read_text().splitlines()[1:]])
    assert values.min() >= 0 and values.max() <= 1
    html = (tmp_path / "s.html").read_text()
    assert all(f'id="{k}"' in html for k in ALL_SECTIONS)
    r = cli(
        "report", run, homework["test"], "--out", tmp_path / "r.html", "--threshold", "fpr:0.1", "--quiet"
    )
    assert r.code == 0, r.err
    assert (
        "fpr:0.1" in (tmp_path / "r.html").read_text() and "ROC AUC" not in (tmp_path / "r.html").read_text()
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threshold", "fpr:5"], "expected a fraction in [0, 1)"),
        (["--threshold", "best"], "threshold: expected VALUE"),
        (["--report", "/proc/oddeye/r.html"], "expected a writable location"),
    ],
)
def test_bad_threshold_or_report_location_is_one_line(cli, homework, tmp_path: Path, args, message) -> None:
    run = train_run(cli, homework, tmp_path)
    r = cli("score", run, homework["test"], "--out", tmp_path / "p.csv", *args, "--quiet")
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1


def test_labels_of_one_class_only_skip_the_curves(fitted, tmp_path: Path) -> None:
    images, _ = scored_set()
    labels = np.zeros(len(images), np.int64)
    html = oddeye.report(fitted, images, tmp_path / "r.html", labels=labels, progress=False).html.read_text()
    assert 'id="roc_pr"' not in html and "all 60 labelled normal" in html and 'id="score_histogram"' in html


def test_gallery_captions_name_a_folders_files() -> None:
    import dataclasses

    from oddeye.data import as_imageset
    from oddeye.reports.report import ReportInputs, _captions

    data = as_imageset(np.zeros((3, 4, 4, 1), np.uint8), "imgs")
    inputs = ReportInputs(np.array([0.5, 2.0, 1.0]), "imgs", data=data)
    assert _captions(inputs, np.array([1]))[0] == ["#1  2"]
    named = dataclasses.replace(data, paths=("a.png", "deep/folder/" + "x" * 30 + ".png", "c.png"))
    captions = _captions(dataclasses.replace(inputs, data=named), np.array([1, 0]))[0]
    assert captions == ["..." + ("x" * 30 + ".png")[-25:] + "  2", "a.png  0.5"]
