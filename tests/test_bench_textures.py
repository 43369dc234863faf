"""``oddeye bench textures``: crops that never share a pixel with training, marks with exact masks,
records and the markdown (a synthetic texture stands in for scikit-image's where it is absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from oddeye.bench import textures


def woven(size: int = 240, seed: int = 0) -> np.ndarray:
    """A gray texture: two crossing sine gratings and a little noise, (size, size, 1) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    gray = 128 + 50 * np.sin(yy * 0.9) + 50 * np.sin(xx * 0.7 + yy * 0.2) + rng.normal(0, 4, (size, size))
    return gray.clip(0, 255).astype(np.uint8)[..., None]


def test_the_test_crops_come_from_rows_the_training_crops_never_touch_and_masks_mark_the_marks() -> None:
    image = np.arange(240, dtype=np.uint8).repeat(240).reshape(240, 240, 1)  # each row its own value
    data = textures.texture_set("brick", image, 32)
    cut = int(textures.TRAIN_SHARE * 240)
    assert data.train.shape == (textures.TRAIN, 32, 32, 1) and data.train.max() < cut  # rows, by value
    assert data.test[: textures.TEST].min() >= cut and data.kinds[: textures.TEST] == ["good"] * textures.TEST
    marked = textures.texture_set("brick", woven(), 32)
    kinds = marked.kinds[textures.TEST :]
    assert {k: kinds.count(k) for k in set(kinds)} == {"scratch": 30, "stain": 27, "missing": 30}
    masks = marked.masks.reshape(len(marked.masks), -1).any(1)  # 3 faint stains changed no pixel: left out
    assert (
        not masks[: textures.TEST].any() and masks[textures.TEST :].all() and len(masks) == len(marked.test)
    )
    again = textures.texture_set("brick", woven(), 32)
    assert np.array_equal(again.test, marked.test)  # seeded
    assert not np.array_equal(textures.texture_set("grass", woven(), 32).train, marked.train)


def test_the_validation_protocol_keeps_the_training_crops_and_tests_on_the_training_rows_with_blobs() -> None:
    image = np.arange(240, dtype=np.uint8).repeat(240).reshape(240, 240, 1)
    cut = int(textures.TRAIN_SHARE * 240)
    val = textures.texture_set("brick", image, 32, validation=True)
    assert np.array_equal(val.train, textures.texture_set("brick", image, 32).train)
    assert val.test[: textures.TEST].max() < cut  # never a test row (rows by value; blobs change some)
    blobs = textures.texture_set("brick", woven(), 32, validation=True)
    assert set(blobs.kinds) == {"good", "synthetic"} and blobs.kinds.count("good") == textures.TEST
    assert blobs.masks[textures.TEST :].reshape(len(blobs.test) - textures.TEST, -1).any(1).all()
    assert not blobs.masks[: textures.TEST].any()


def test_bench_textures_end_to_end(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        textures, "load_textures", lambda names: {name: woven(seed=i) for i, name in enumerate(names)}
    )
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli("bench", "textures", "--sizes", "32", "--textures", "brick,gravel", "--detectors", "knn",
            "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "textures-brick32-knn.json").read_text())
    assert set(record["per_defect_auroc"]) == {"scratch", "stain", "missing"}
    assert 0.0 <= record["image_auroc"] <= 1.0 and 0.0 <= record["aupro"] <= 1.0
    assert (
        record["texture"] == "brick" and record["size"] == 32 and record["data"]["n_train"] == textures.TRAIN
    )
    text = md.read_text()
    assert (
        "## Small marks on textures" in text and "brick image | brick AUPRO" in text and "| knn | - |" in text
    )
    r = cli("bench", "textures", "--sizes", "32", "--textures", "brick", "--detectors", "knn", "--validation",
            "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "textures-val-brick32-knn.json").read_text())
    assert record["protocol"] == "validation" and set(record["per_defect_auroc"]) == {"synthetic"}
    text = md.read_text()
    assert "Textures, validation protocol" in text and "## Small marks on textures" in text
    assert text.index("## Small marks on textures") < text.index("Textures, validation protocol")
    bad = cli("bench", "textures", "--textures", "carpet", "--no-save")
    assert bad.code == 2 and "carpet" in bad.err
    seeds = cli("bench", "textures", "--seeds", "0,1", "--no-save")
    assert seeds.code == 2 and "--seeds: expected 0" in seeds.err
    large = cli(
        "bench", "textures", "--sizes", "100", "--detectors", "knn", "--no-save"
    )  # 72 rows under training
    assert (
        large.code == 2 and "expected at most 72 px" in large.err and len(large.err.strip().splitlines()) == 1
    )


def test_without_scikit_image_the_benchmark_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from oddeye.errors import InputError

    monkeypatch.setitem(sys.modules, "skimage", None)  # import fails
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(InputError, match="pip install scikit-image"):
        textures.load_textures()
