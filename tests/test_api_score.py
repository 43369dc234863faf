"""oddeye.score is the one scoring path: the CLI's streaming CSV, thresholds and flags, in Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import FAST, blobs
from oddeye.errors import OddeyeError


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
