"""``oddeye bench objects``: seeded shots of one object, each moved a little, marks with exact masks,
records and the markdown (a drawn scene stands in for scikit-image's photographs where it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oddeye.bench import objects, textures


def photo(side: int = 200, seed: int = 0) -> np.ndarray:
    """A colour stand-in for a photograph: smooth colour gradients crossed by a grating."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    rgb = np.stack([200 * yy, 200 * xx, 120 + 80 * np.sin(12 * xx + 7 * yy)], -1) + rng.normal(
        0, 2, (side, side, 3)
    )
    return rgb.clip(0, 255).astype(np.uint8)


def test_shots_move_within_the_jitter_and_no_jitter_gives_the_same_picture_up_to_light_and_noise() -> None:
    image = photo()
    still = objects.shots(image, 4, 64, 0.0, np.random.default_rng(0)).astype(float)
    moved = objects.shots(image, 4, 64, 0.05, np.random.default_rng(0)).astype(float)
    assert still.shape == (4, 64, 64, 3)
    spread = lambda s: np.abs(s / s.mean((1, 2, 3), keepdims=True) - s.mean(0) / s.mean()).mean()  # noqa: E731
    assert spread(still) < 0.03 < spread(moved)  # light and noise alone vs turned, scaled, shifted
    again = objects.shots(image, 4, 64, 0.05, np.random.default_rng(0))
    assert np.array_equal(again, moved.astype(np.uint8))  # seeded


def test_object_sets_are_seeded_and_the_validation_keeps_the_training_shots_with_blobs() -> None:
    image = photo()
    data = objects.object_set("coffee", image, 48)
    assert data.train.shape == (textures.TRAIN, 48, 48, 3) and data.about == {"jitter": objects.JITTER}
    kinds = data.kinds[textures.TEST :]
    assert data.kinds[: textures.TEST] == ["good"] * textures.TEST and set(kinds) <= {
        "scratch",
        "stain",
        "missing",
    }
    assert (
        not data.masks[: textures.TEST].any()
        and data.masks[textures.TEST :].reshape(len(kinds), -1).any(1).all()
    )
    assert np.array_equal(objects.object_set("coffee", image, 48).test, data.test)
    assert not np.array_equal(objects.object_set("chelsea", image, 48).train, data.train)
    val = objects.object_set("coffee", image, 48, validation=True)
    assert np.array_equal(val.train, data.train) and set(val.kinds) == {"good", "synthetic"}
    assert not np.array_equal(val.test[: textures.TEST], data.test[: textures.TEST])  # fresh shots


def test_bench_objects_end_to_end(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        objects, "load_objects", lambda names: {n: photo(seed=i) for i, n in enumerate(names)}
    )
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli("bench", "objects", "--sizes", "32", "--objects", "coffee", "--detectors", "knn",
            "--jitter", "0.03", "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "objects-coffee-jitter0.03-32-knn.json").read_text())  # not the default
    assert record["object"] == "coffee-jitter0.03" and record["data"]["jitter"] == 0.03
    r = cli("bench", "objects", "--sizes", "32", "--objects", "coffee", "--detectors", "knn",
            "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "objects-coffee32-knn.json").read_text())
    assert (
        record["benchmark"] == "objects" and record["object"] == "coffee" and record["data"]["jitter"] == 0.02
    )
    assert set(record["per_defect_auroc"]) <= {"scratch", "stain", "missing"} and 0 <= record["aupro"] <= 1
    r = cli("bench", "objects", "--sizes", "32", "--objects", "coffee", "--detectors", "knn", "--validation",
            "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads((results / "objects-val-coffee32-knn.json").read_text())["protocol"] == "validation"
    text = md.read_text()
    assert "## Small marks on objects shot again and again" in text and "coffee image | coffee AUPRO" in text
    assert "Objects, validation protocol" in text and "Small marks on textures" not in text
    for bad, what in (("--objects", "vase"), ("--jitter", "0.5")):
        r = cli("bench", "objects", bad, what, "--no-save")
        assert r.code == 2 and bad in r.err and "Traceback" not in r.err
