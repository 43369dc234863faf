"""Run folders: complete or absent, reloadable to identical scores, never unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import FAST, blobs
from oddeye.errors import OddeyeError


@pytest.fixture(scope="module")
def fitted():
    return oddeye.create("cnn-bn", **FAST).fit(blobs(40))


def test_run_folder_contents_and_metadata(fitted, tmp_path: Path) -> None:
    run = fitted.save(tmp_path / "run")
    s = fitted.record_.set_aside  # trimmed after epoch 1 of 2: the list, and the oddest if any
    assert s is not None and "after epoch 1" in s.rule
    trimmed = ["set_aside.csv", *(["set_aside_sample.npy"] if len(s.indices) else [])]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [
            "heldout_sample.npy",
            "heldout_scores.npy",
            "history.csv",
            "model.json",
            "model.safetensors",
            "training_curve.png",
            *trimmed,
        ]
    )
    meta = json.loads((run / "model.json").read_text())
    assert meta["detector"] == "cnn-bn" and meta["input_shape"] == [16, 16, 3]
    assert meta["normalisation"] == {"lo": 0.0, "hi": 255.0}
    assert meta["config"]["epochs"] == 2 and meta["n_parameters"] > 0
    assert meta["versions"]["oddeye"] == oddeye.__version__
    assert meta["heldout_scores"]["n"] == len(np.load(run / "heldout_scores.npy")) >= 1
    assert meta["threshold"]["rule"] == "fpr:0.01" and meta["threshold"]["value"] == fitted.threshold_.value
    assert (run / "history.csv").read_text().count("\n") == 1 + len(fitted.history_)
    assert (run / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    sample = np.load(run / "heldout_sample.npy")  # held-out images kept for export checks, NHWC
    assert sample.shape == (len(np.load(run / "heldout_scores.npy")), 16, 16, 3) and sample.dtype == np.uint8


def test_outputs_get_the_usual_permissions(fitted, tmp_path: Path) -> None:
    import os

    from oddeye.io import UMASK, write_text

    run = fitted.save(tmp_path / "run")
    assert (run.stat().st_mode & 0o777) == 0o777 & ~UMASK
    assert ((run / "model.json").stat().st_mode & 0o777) == 0o666 & ~UMASK
    out = write_text(tmp_path / "x.csv", "a\n")
    assert (os.stat(out).st_mode & 0o777) == 0o666 & ~UMASK


def test_reload_gives_identical_scores(fitted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "run")
    test = blobs(9, seed=4)
    np.testing.assert_array_equal(oddeye.load(tmp_path / "run").score(test), fitted.score(test))


def test_existing_run_is_not_overwritten_without_force(fitted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "run")
    with pytest.raises(OddeyeError, match="--force"):
        fitted.save(tmp_path / "run")
    fitted.save(tmp_path / "run", force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temp folders left behind


def test_a_pickle_in_place_of_the_weights_is_refused_and_never_run(fitted, tmp_path: Path) -> None:
    run = fitted.save(tmp_path / "run")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (run / "model.safetensors").write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(OddeyeError, match="model.safetensors: expected safetensors weights"):
        oddeye.load(run)
    assert not marker.exists()


def test_truncated_or_mismatched_weights_are_clear_errors(fitted, tmp_path: Path) -> None:
    run = fitted.save(tmp_path / "run")
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(OddeyeError, match="expected safetensors weights"):
        oddeye.load(run)
    fitted.save(run, force=True)
    meta = json.loads((run / "model.json").read_text())
    meta["detector"] = "cnn"  # no BatchNorm tensors expected
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(OddeyeError, match="expected weights matching cnn"):
        oddeye.load(run)


def test_missing_or_foreign_run_folder(tmp_path: Path) -> None:
    with pytest.raises(OddeyeError, match="expected a run folder"):
        oddeye.load(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.json").write_text('{"format": "something-else"}')
    with pytest.raises(
        OddeyeError,
        match="expected format 'oddeye-run/1' or 'oddeye-run/2' or 'oddeye-run/3' or 'oddeye-run/4' or "
        "'oddeye-run/5' or 'oddeye-run/6' or 'oddeye-run/7', found 'something-else'",
    ):
        oddeye.load(tmp_path / "other")
