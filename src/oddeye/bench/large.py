"""Scoring a set far larger than memory: peak RSS and throughput of ``oddeye score`` on N images.

``run`` generates the seeded 64x64x3 set of ``oddeye bench speed`` (N images written chunk by chunk
into a .npy, 12.3 GB for a million), trains the detector for one epoch on the first images, then
runs ``oddeye score`` on the whole file in a subprocess and reads that process's peak RSS from
``wait4``. The CSV is checked (one row per image, ids in order). Only figures are printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

import oddeye
from oddeye.bench.common import generate_images, measured_oddeye, png
from oddeye.bench.provenance import provenance
from oddeye.errors import OddeyeError
from oddeye.io import write_text
from oddeye.progress import track

FOLDER_NOTE = "; read as PNG files from a folder"


def run(args: argparse.Namespace) -> int:
    if args.n < args.train_images or args.train_images < 10:
        raise OddeyeError(f"--n {args.n} / --train-images {args.train_images}: expected 10 <= train <= n")
    folder = Path(args.data_dir)
    data = generate_images(folder / f"large-{args.n}.npy", args.n)
    run_dir = folder / f"large-run-{args.detector}"
    images = np.load(data, mmap_mode="r")
    det = oddeye.create(args.detector, epochs=1, device=args.device, progress=False)
    det.fit(np.ascontiguousarray(images[: args.train_images])).save(run_dir, force=True)
    out = folder / f"large-scores-{args.detector}.csv"
    source = png_folder(data, folder / f"large-{args.n}-png") if args.format == "folder" else data
    result = {
        "provenance": provenance(det.device_),
        "detector": args.detector,
        "images": args.n,
        "format": args.format,
        "file_bytes": data.stat().st_size,
        **score_in_subprocess(run_dir, source, out, args.device),
    }
    result["rows_ok"] = _csv_rows_in_order(out, args.n)
    print(format_result(result))
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


def png_folder(data: Path, folder: Path) -> Path:
    """The images of ``data`` as PNG files in ``folder`` (reused when complete)."""
    images = np.load(data, mmap_mode="r")
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in track(range(len(images)), "writing PNG files", len(images), "images"):
        sub = folder / f"{i // 10000:03d}"  # 10,000 files per subfolder
        if i % 10000 == 0:
            sub.mkdir(exist_ok=True)
        (sub / f"{i:07d}.png").write_bytes(png(np.asarray(images[i])))
    done.touch()
    return folder


def score_in_subprocess(run_dir: Path, data: Path, out: Path, device: str) -> dict[str, Any]:
    """Wall time and peak RSS of ``oddeye score RUN DATA --out OUT`` in a fresh process."""
    return measured_oddeye(["score", str(run_dir), str(data), "--out", str(out), "--device", device])


def _csv_rows_in_order(path: Path, n: int) -> bool:
    """Every row's id equals its position, and there are ``n`` rows (read line by line)."""
    with open(path) as f:
        next(f)
        count = 0
        for count, line in enumerate(f):
            if int(line.split(",", 1)[0]) != count:
                return False
    return count + 1 == n


def format_result(r: dict[str, Any]) -> str:
    m = r["provenance"]["machine"]
    gb = r["file_bytes"] / 1e9
    rss = r["peak_rss_bytes"] / 1e9
    return "\n".join(
        [
            f"oddeye score ({r['detector']}) on {r['images']:,} images of 64x64x3 uint8 "
            f"({gb:.1f} GB as .npy{FOLDER_NOTE if r.get('format') == 'folder' else ''})",
            f"  machine: {m['gpu'] or m['cpu']}, device {m['device']}, {m['torch_threads']} torch threads",
            f"  wall time {r['seconds']:.0f} s ({r['images'] / r['seconds']:,.0f} images/s)",
            f"  peak RSS {rss:.2f} GB ({rss / gb:.1%} of the file)",
            f"  CSV rows complete and in order: {r['rows_ok']}",
        ]
    )
