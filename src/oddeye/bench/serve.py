"""``oddeye bench serve``: the load test of ``oddeye serve``, with figures for BENCHMARKS.md.

Trains the detector on generated images of the homework's shape, exports it (checked), then runs
:func:`oddeye.serving.loadtest.load_test` against the ONNX model (onnxruntime) and the run folder
(PyTorch): a clean phase, then one with a share of malformed uploads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

import oddeye
from oddeye.bench.common import export_checked, generate_images
from oddeye.bench.provenance import provenance
from oddeye.errors import OddeyeError
from oddeye.io import write_text


def run(args: argparse.Namespace) -> int:
    from oddeye.bench.report import write_markdown
    from oddeye.serving.loadtest import load_test

    shape = tuple(args.shape) if len(args.shape) == 3 else (*args.shape, 1)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"onnx", "run"}:
        raise OddeyeError(f"--backends: expected onnx and/or run, found {args.backends!r}")
    if args.clients < 1 or args.seconds <= 0 or args.per_request < 1 or not 0 <= args.bad_share < 1:
        raise OddeyeError("--clients, --seconds, --per-request: expected positive; --bad-share in [0, 1)")
    folder = Path(args.data_dir)
    tag = "x".join(map(str, shape))
    data = generate_images(folder / f"serve-train-{args.n}-{tag}.npy", args.n, seed=3, shape=shape)
    run_dir = folder / f"serve-run-{args.detector}-{tag}"
    oddeye.train(data, args.detector, run_dir, force=True, progress=False)
    model = folder / f"serve-{args.detector}-{tag}.onnx"
    export_checked(run_dir, model)  # oddeye export: refuses a model whose numbers differ
    images = np.load(generate_images(folder / f"serve-test-64-{tag}.npy", 64, seed=4, shape=shape))
    context = provenance("cpu")
    results: dict[str, Any] = {}
    for backend in backends:
        target = model if backend == "onnx" else run_dir
        results[backend] = load_test(
            target, images, args.clients, args.seconds, args.per_request, args.bad_share, args.workers
        )
    record = {
        "benchmark": "serve",
        "detector": args.detector,
        "shape": list(shape),
        "clients": args.clients,
        "seconds_per_phase": args.seconds,
        "images_per_request": args.per_request,
        "workers": args.workers,
        "backends": results,
        **context,
    }
    print(format_result(record))
    if not args.no_save:
        name = f"serve-{args.detector}-{tag}-{args.clients}-clients-{args.workers}-workers.json"
        write_text(Path(args.results_dir) / name, json.dumps(record, indent=2) + "\n")
        write_markdown(Path(args.results_dir), Path(args.markdown))
    return 0


def format_result(r: dict[str, Any]) -> str:
    lines = [
        f"oddeye serve ({r['detector']}, {'x'.join(map(str, r['shape']))}), {r['clients']} clients, "
        f"{r['images_per_request']} PNGs per request, {r['workers']} worker(s), loopback"
    ]
    for backend, x in r["backends"].items():
        rss = x["rss_bytes"]
        for phase in ("clean", "malformed"):
            p = x[phase]
            lines.append(
                f"  {backend:4s} {phase:9s}: {p['requests_per_s']:7.1f} requests/s "
                f"({p['images_per_s']:.0f} images/s), p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms, "
                f"errors {p['errors']}, malformed refused {p['malformed_refused_4xx']}"
            )
        mib = {k: v / 2**20 for k, v in rss.items()}
        lines.append(
            f"  {backend:4s} RSS {mib['before']:.0f} MiB before, {mib['after_clean']:.0f} after the clean "
            f"phase, {mib['after']:.0f} after the malformed one; ready after: {x['ready_after']}"
        )
    return "\n".join(lines)
