"""``oddeye evaluate`` with an MVTec AD category or labels and masks: per-defect ROC AUC, paths
checked against the data set, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import make_mvtec


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny category, a pixel-knn run trained on it and its test images scored to p.csv."""
    root = tmp_path_factory.mktemp("mvtec")
    category = make_mvtec(root)
    run, csv = root / "run", root / "p.csv"
    oddeye.train(category, "pixel-knn", run, progress=False)
    oddeye.score(run, category, csv, progress=False)
    return {"category": category, "run": run, "csv": csv, "root": root}


def test_evaluate_a_category(scored, cli) -> None:
    r = cli("evaluate", scored["csv"], "--dataset", scored["category"])
    assert r.code == 0, r.err
    assert "ROC AUC" in r.out and "defect type" in r.out
    assert [line.split()[0] for line in r.out.splitlines() if line.startswith(("hole ", "scratch "))] == [
        "hole",
        "scratch",
    ]
    r = cli("evaluate", scored["csv"], "--dataset", scored["category"], "--json")
    result = json.loads(r.out)
    assert set(result["per_defect"]) == {"hole", "scratch"} and result["n_anomalous"] == 5
    assert result["pixel"] is None  # no maps given
    api = oddeye.evaluate(scored["csv"], dataset=scored["category"])
    assert api.per_defect == pytest.approx(result["per_defect"])
    assert api.auroc == pytest.approx(result["auroc"])


def test_paths_that_do_not_match_the_data_set_are_refused(scored, cli, tmp_path: Path) -> None:
    lines = scored["csv"].read_text().splitlines()
    lines[1], lines[2] = lines[1].replace("good/000", "good/001"), lines[2].replace("good/001", "good/000")
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("\n".join(lines) + "\n")
    r = cli("evaluate", swapped, "--dataset", scored["category"])
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "expected the test images of" in r.err
    assert "('good/000.png' on row 0), found 'good/001.png'" in r.err
    r = cli("evaluate", scored["csv"])
    assert r.code == 2 and "expected labels, or a data set in the MVTec AD layout" in r.err


def test_labels_and_masks_apart(scored, cli, tmp_path: Path) -> None:
    truth = oddeye.evaluate(scored["csv"], dataset=scored["category"])
    labels = tmp_path / "labels.npy"
    np.save(labels, np.r_[np.zeros(4, np.int64), np.ones(5, np.int64)])
    r = cli("evaluate", scored["csv"], "--labels", labels, "--masks", scored["category"] / "ground_truth")
    assert r.code == 0, r.err
    assert f"ROC AUC            {truth.auroc:.4f}" in r.out and "hole" in r.out  # types from the folders
    r = cli("evaluate", scored["csv"], "--labels", labels, "--masks", tmp_path / "none")
    assert r.code == 2 and "a .npy of (N, H, W) masks, found nothing there" in r.err
