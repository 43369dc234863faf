"""``oddeye bench outliers``: its precision figure and its table (the run itself needs Fashion-MNIST)."""

from __future__ import annotations

import numpy as np

from oddeye.bench.outliers import format_result, precision_at
from oddeye.bench.report import render_markdown


def test_precision_counts_the_planted_images_among_as_many_top_scores() -> None:
    truth = np.array([0, 1, 0, 1, 0, 0], bool)
    assert precision_at(np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.0]), truth) == 1.0
    assert precision_at(np.array([0.9, 0.1, 0.8, 0.7, 0.0, 0.0]), truth) == 0.0
    assert precision_at(np.array([0.9, 0.8, 0.1, 0.2, 0.0, 0.0]), truth) == 0.5


def test_the_record_prints_and_renders_beside_cleanlab() -> None:
    rows = {"0": {"precision_at_planted": 0.7, "auroc": 0.95, "seconds": 3.0}}
    record = {
        "_file": "outliers-fmnist-planted0.05.json",
        "benchmark": "outliers",
        "dataset": "fmnist",
        "planted": 0.05,
        "classes": [0],
        "class_names": ["T-shirt/top"],
        "methods": {"oddeye outliers": rows, "cleanlab Datalab outlier (raw pixels)": rows},
        "mean": {
            "oddeye outliers": {"precision_at_planted": 0.7, "auroc": 0.95, "seconds": 3.0},
            "cleanlab Datalab outlier (raw pixels)": {
                "precision_at_planted": 0.7,
                "auroc": 0.95,
                "seconds": 3.0,
            },
        },
        "machine": {"cpu": "test cpu", "torch_threads": 2, "device": "cpu"},
        "git_commit": "abcdef1234",
        "command": "oddeye bench outliers",
    }
    assert "oddeye outliers" in format_result(record) and "0.700" in format_result(record)
    page = render_markdown([record])
    assert "Finding planted images" in page and "cleanlab Datalab outlier (raw pixels)" in page
    assert "**0.700**" in page
