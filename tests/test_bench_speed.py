"""The speed benchmark runs end to end on a tiny set (figures only: nothing is asserted on time)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from oddeye.bench import args as bench_args
from oddeye.bench import speed
from oddeye.bench.common import generate_images


def test_speed_benchmark_measures_both_loops(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench_args.speed(parser)
    out = tmp_path / "speed.json"
    args = parser.parse_args(
        [
            "--n",
            "300",
            "--detectors",
            "cnn",
            "--max-images",
            "200",
            "--batch-size",
            "100",
            "--data-dir",
            str(tmp_path),
            "--json",
            str(out),
        ]
    )

    assert speed.run(args) == 0

    data = np.load(tmp_path / "trainingset-300.npy", mmap_mode="r")
    assert data.shape == (300, 64, 64, 3) and data.dtype == np.uint8
    assert data.std() > 10  # image-like content, not a constant
    report = json.loads(out.read_text())
    by_loop = {r["loop"]: r for r in report["results"] if r["detector"] == "cnn"}
    assert set(by_loop) == {"ours", "course"}
    for r in by_loop.values():  # the same 200 images trained and scored by both loops
        assert r["train"]["images_per_s"] > 0 and r["train"]["images"] == 200
        assert r["score"]["images_per_s"] > 0 and r["score"]["images"] == 200
        assert r["peak_rss_kib"] > 0 and r["epoch_extrapolated"]
    assert by_loop["ours"]["batch_size"] == 100 and by_loop["course"]["batch_size"] == 2000
    assert report["timed_images"] == 200 and report["machine"]["device"] == by_loop["ours"]["device"]
    assert set(report["ratios"]["cnn"]) == {"train", "score"}
    printed = capsys.readouterr().out
    assert "ours" in printed and "course" in printed and "ours / course" in printed


def test_generated_images_are_reused(tmp_path):
    path = generate_images(tmp_path / "set.npy", 5)
    stamp = path.stat().st_mtime_ns
    assert generate_images(path, 5).stat().st_mtime_ns == stamp
    assert np.load(generate_images(path, 6)).shape == (6, 64, 64, 3)  # wrong shape: regenerated
