"""oddeye.score is the one scoring path: the CLI's streaming CSV, thresholds and flags, in Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import FAST, blobs
from oddeye.errors import OddeyeError
from oddeye.evaluation import read_scores_csv


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "run"
    oddeye.train(blobs(60), "cnn", out, **FAST)
    return out


def test_scores_stream_into_the_csv_with_flags_and_a_saved_threshold(run: Path, tmp_path: Path) -> None:
    images = blobs(12, seed=3)
    result = oddeye.score(run, images, tmp_path / "p.csv", threshold="top:0.25", progress=False)
    assert isinstance(result, oddeye.ScoreResult) and result.scores.shape == (12,)
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "Id,Predicted" and len(rows) == 13
    np.testing.assert_array_equal([float(r.split(",")[1]) for r in rows[1:]], result.scores)
    assert result.flags.sum() == 3 and result.flags_path == tmp_path / "p.flags.csv"
    assert (tmp_path / "p.flags.csv").read_text().startswith("Id,score,calibrated,anomaly\n")
    assert result.threshold_saved_to == run / "model.json"
    assert json.loads((run / "model.json").read_text())["threshold"]["rule"] == "top:0.25"
    again = oddeye.score(run, images, threshold=True, progress=False)  # the run's saved threshold
    assert again.threshold == result.threshold and again.flags_path is None


def test_a_fitted_detector_scores_without_touching_any_run(run: Path) -> None:
    det = oddeye.load(run, progress=False)
    result = oddeye.score(det, blobs(5, seed=4), threshold="fpr:0.5", calibrated=True)
    assert result.threshold_saved_to is None and result.calibrated.shape == (5,)
    assert result.detector is det


def test_f1_needs_labels_and_writes_nothing_without_them(run: Path, tmp_path: Path) -> None:
    with pytest.raises(OddeyeError, match="labels"):
        oddeye.score(run, blobs(4), tmp_path / "p.csv", threshold="f1", progress=False)
    assert not (tmp_path / "p.csv").exists()


def test_a_folder_keeps_its_paths_through_prepare_into_scores_and_flags(run: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    for name, img in zip(["b/2.png", "a.png", "ß.png"], blobs(3, seed=5), strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / name)
    assert oddeye.load(run, progress=False).prepare(folder).paths == ("a.png", "b/2.png", "ß.png")
    result = oddeye.score(run, folder, tmp_path / "p.csv", threshold="top:0.34", progress=False)
    rows = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "Id,path,Predicted" and [r.split(",")[1] for r in rows[1:]] == [
        "a.png",
        "b/2.png",
        "ß.png",
    ]
    flags = result.flags_path.read_text(encoding="utf-8").splitlines()
    assert flags[0] == "Id,path,score,calibrated,anomaly" and flags[3].startswith("2,ß.png,")
    np.testing.assert_array_equal(read_scores_csv(tmp_path / "p.csv"), result.scores)
