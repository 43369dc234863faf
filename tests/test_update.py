"""oddeye update: new normal images join a memory-bank run without training; the run itself never
changes, and detectors that train are refused in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import oddeye
from helpers import blobs
from oddeye.errors import OddeyeError
from oddeye.runs import TrainingInfo

SHAPE = (12, 12, 3)
TRAIN = blobs(60, SHAPE, seed=1)
SETTINGS = {"progress": False, "val_fraction": 0.25}


def near_copies(image: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``image`` (1, H, W, C) and ``n`` copies of it with a little noise, uint8."""
    noise = np.random.default_rng(seed).integers(-3, 4, (n, *image.shape[1:]))
    return np.concatenate([image, np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)])


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def bank(run: Path, prefix: str = "memory.") -> tuple[np.ndarray, np.ndarray]:
    weights = load_file(str(run / "model.safetensors"))
    return weights[prefix + "bank"], weights[prefix + "offset"]


@pytest.mark.parametrize("name", ["pixel-knn", "default", "patch-knn"])
def test_an_added_anomaly_and_its_near_copies_are_normal_after(name: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    before = oddeye.train(TRAIN, name, run, **SETTINGS)
    odd = blobs(1, SHAPE, seed=9, anomalous=True)
    assert before.predict(odd).tolist() == [1]
    files = digests(run)
    added = near_copies(odd, 10)
    out = oddeye.update(run, added, progress=False)
    assert out == tmp_path / "run-updated" and digests(run) == files  # the run is unchanged
    after = oddeye.load(out, progress=False)
    assert after.predict(odd).tolist() == [0]  # relative to the refitted threshold
    assert after.predict(blobs(6, SHAPE, seed=4, anomalous=True)).tolist() == [1] * 6  # still sees others
    (update,) = after.updates_
    assert update["added"] == 11 and update["absorbed"] + update["held_out"] == 11 and update["held_out"] >= 1
    assert update["sha256"] == hashlib.sha256(added.tobytes()).hexdigest()
    assert update["oddeye"] == oddeye.__version__ and update["source"] == "<array>"
    assert after.n_train_images_ == 71 and after.detector == name
    assert len(after.heldout_scores_) == len(before.heldout_scores_) + update["held_out"]
    assert "kept by the run" in after.threshold_.basis
    np.testing.assert_array_equal(oddeye.load(out, progress=False).score(TRAIN[:5]), after.score(TRAIN[:5]))


def test_the_run_stays_readable_by_code_that_knows_its_format(tmp_path: Path) -> None:
    """Keys are only added: the format, the weights' names and shapes' kinds and the training
    record's keys are the run's own, so older code loads it (the updates kept as an unknown key)."""
    run = tmp_path / "run"
    oddeye.train(TRAIN, "default", run, **SETTINGS)
    out = oddeye.update(run, blobs(12, SHAPE, seed=5), tmp_path / "new", progress=False)
    old, new = (json.loads((p / "model.json").read_text()) for p in (run, out))
    assert new["format"] == old["format"] == "oddeye-run/7" and "updates" not in old
    assert set(new) - set(old) == {"updates"} and set(new["training"]) == set(old["training"])
    TrainingInfo(**new["training"])  # the record older code builds
    weights = [load_file(str(p / "model.safetensors")) for p in (run, out)]
    assert weights[0].keys() == weights[1].keys()
    del new["updates"]
    (out / "model.json").write_text(json.dumps(new))
    assert len(oddeye.load(out, progress=False).score(TRAIN[:3])) == 3


def test_a_bank_absorbs_within_its_bound_old_rows_unchanged(tmp_path: Path) -> None:
    run, small = tmp_path / "run", tmp_path / "small"
    oddeye.train(TRAIN, "pixel-knn", run, max_bank=30, **SETTINGS)
    rows, offset = bank(run)  # 45 training images, 30 kept
    new = blobs(40, SHAPE, seed=6)
    det = oddeye.load(oddeye.update(run, new, progress=False), progress=False)
    grown, kept_offset = bank(tmp_path / "run-updated")
    absorbed = det.updates_[0]["absorbed"]
    assert len(grown) == 30 and absorbed == 30  # 10 of the 40 held out
    take_new = round(30 * absorbed / (45 + absorbed))  # 12: the new images are 30 of the 75 seen
    is_old = [bool((rows == r).all(1).any()) for r in grown]  # old rows bit for bit, then new ones
    assert is_old == [True] * (30 - take_new) + [False] * take_new
    np.testing.assert_array_equal(kept_offset, offset)
    oddeye.train(TRAIN, "pixel-knn", small, **SETTINGS)  # room for all: the old rows come first, unchanged
    rows, _ = bank(small)
    oddeye.update(small, new, progress=False)
    grown, _ = bank(tmp_path / "small-updated")
    assert len(grown) == len(rows) + 30
    np.testing.assert_array_equal(grown[: len(rows)], rows)


def test_partial_fit_is_scikit_learn_style(tmp_path: Path) -> None:
    det = oddeye.create("pixel-knn", **SETTINGS)
    assert det.partial_fit(TRAIN) is det and det.updates_ == []  # unfitted: a fit
    assert det.partial_fit(blobs(8, SHAPE, seed=7)) is det and det.updates_[0]["added"] == 8
    det.save(tmp_path / "run")
    assert oddeye.load(tmp_path / "run", progress=False).updates_ == det.updates_


def test_cli_update_writes_a_new_run_and_never_overwrites(cli, tmp_path: Path) -> None:
    run, new = tmp_path / "run", tmp_path / "new.npy"
    oddeye.train(TRAIN, "pixel-knn", run, **SETTINGS)
    np.save(new, blobs(12, SHAPE, seed=8))
    r = cli("update", run, new, "--quiet")
    assert r.code == 0, r.err
    assert "added 12 images to pixel-knn" in r.out and "run-updated" in r.out and "threshold" in r.out
    meta = json.loads((tmp_path / "run-updated" / "model.json").read_text())
    assert meta["updates"][0]["source"] == str(new)
    r = cli("update", run, new, "--quiet")
    assert r.code == 2 and r.err.count("\n") == 1 and "run-updated: expected a new folder" in r.err
    for inside in (run, run / "sub"):
        r = cli("update", run, new, "--out", inside, "--quiet")
        assert r.code == 2 and "found the run folder (never changed)" in r.err
    assert not (run / "sub").exists()


def test_detectors_that_train_are_refused_in_one_line(cli, tmp_path: Path) -> None:
    run, new = tmp_path / "run", tmp_path / "new.npy"
    oddeye.train(TRAIN, "cnn", run, epochs=1, batch_size=32, **SETTINGS)
    np.save(new, blobs(4, SHAPE, seed=8))
    r = cli("update", run, new, "--quiet")
    expected = "cnn needs training: retrain with oddeye train on the old and new images together"
    assert r.code == 2 and r.err == f"oddeye: error: {expected}\n"
    assert not (tmp_path / "run-updated").exists()
    mixed = oddeye.create("ensemble", members=("pixel-knn", "cnn"), epochs=1, **SETTINGS).fit(TRAIN)
    with pytest.raises(OddeyeError, match="^ensemble member cnn needs training"):
        mixed.partial_fit(blobs(4, SHAPE, seed=8))


def test_images_of_another_shape_are_refused_naming_the_file(cli, tmp_path: Path) -> None:
    run, other = tmp_path / "run", tmp_path / "other.npy"
    oddeye.train(TRAIN, "pixel-knn", run, **SETTINGS)
    np.save(other, np.zeros((5, 8, 8, 1), np.uint8))
    r = cli("update", run, other, "--quiet")
    assert r.code == 2 and r.err.count("\n") == 1
    assert "other.npy: expected images of 12x12x3" in r.err and "found 8x8x1" in r.err
    assert not (tmp_path / "run-updated").exists()


def test_a_damaged_updates_record_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    oddeye.train(TRAIN, "pixel-knn", run, **SETTINGS)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "updates": [{"added": -1}]}))
    with pytest.raises(OddeyeError, match="model.json: expected complete metadata.*update must count"):
        oddeye.load(run, progress=False)


def test_a_run_with_nothing_held_out_keeps_its_threshold_when_images_are_added(tmp_path: Path) -> None:
    """val_fraction=0: nothing was held out at training, nothing is at the update. The threshold
    stays the run's (not one chosen on the few images just added, each in a bank that holds it),
    and the held-out scores keep the run's beside the new ones."""
    run = tmp_path / "run"
    before = oddeye.train(TRAIN, "pixel-knn", run, progress=False, val_fraction=0)
    added = blobs(3, SHAPE, seed=5)
    after = oddeye.load(oddeye.update(run, added, progress=False), progress=False)
    assert after.threshold_ == before.threshold_
    assert len(after.heldout_scores_) == len(before.heldout_scores_) + 3
    np.testing.assert_array_equal(
        after.heldout_scores_[: len(before.heldout_scores_)], before.heldout_scores_
    )
    assert after.heldout_basis_.endswith("and 3 normal images just added (none held out: optimistic)")
    normal = blobs(40, SHAPE, seed=6)
    assert after.predict(normal).sum() <= before.predict(normal).sum() + 1  # no flood of flags
