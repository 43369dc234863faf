"""oddeye bench homework: the train -> score job in fresh processes, timed, with peak RSS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def test_bench_homework_records_time_and_memory_against_the_budgets(cli, tmp_path: Path) -> None:
    results, md = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    sizes = ("--n", "60", "--test", "12", "--shape", "16x16x3")
    r = cli(
        "bench",
        "homework",
        *sizes,
        "--data-dir",
        tmp_path / "data",
        "--results-dir",
        results,
        "--markdown",
        md,
    )
    assert r.code == 0, r.err
    (path,) = results.iterdir()
    assert path.name == "homework-default-60x16x16x3.json"
    record = json.loads(path.read_text())
    assert record["train_uint8_bytes"] == 60 * 16 * 16 * 3
    assert record["train"]["peak_rss_bytes"] > 0 and record["score"]["seconds"] > 0
    assert record["total_s"] == record["train"]["seconds"] + record["score"]["seconds"]
    assert np.load(tmp_path / "data" / "homework-train-60-16x16x3.npy").shape == (60, 16, 16, 3)
    assert len((tmp_path / "data" / "homework-default-16x16x3.csv").read_text().splitlines()) == 13
    assert "x the training set's uint8 size" in r.out and "## The homework end to end" in md.read_text()
