"""``oddeye bench review`` end to end on a small set: the record, its figures and its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the review page needs the serve extra")


@pytest.mark.slow
def test_bench_review_records_page_times_and_server_memory(cli, tmp_path: Path) -> None:
    results, markdown = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    r = cli(
        "bench", "review", "--n", "300", "--train", "60", "--detector", "pixel-knn",
        "--data-dir", str(tmp_path), "--results-dir", str(results), "--markdown", str(markdown),
    )  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "review-pixel-knn-300.json").read_text())
    assert (
        record["benchmark"] == "review" and record["n"] == 300 and record["data_bytes"] == 300 * 64 * 64 * 3
    )
    assert record["client"] in ("chromium", "http")
    assert record["page_images"] == 60 and len(record["later_pages_s"]) == 4  # 300 images: 5 pages
    assert 0 < record["first_page_s"] < 60 and all(0 < t < 60 for t in record["later_pages_s"])
    assert len(record["detail_s"]) == 5
    for phase in ("scoring", "idle", "after"):
        memory = record["memory_bytes"][phase]
        assert 0 < memory["RssAnon"] <= memory["VmRSS"] <= memory["VmHWM"]
    assert record["start_scoring_s"] > 0 and record["start_cached_s"] > 0
    text = markdown.read_text()
    assert "## The review page on a 20,000-image run (`oddeye bench review`)" in text
    assert "| pixel-knn | 300 x 64x64x3 |" in text
    assert "first page" in r.out and "server memory" in r.out
    assert not list(tmp_path.glob("oddeye-review-bench-*"))  # its cache and marks are cleaned up
