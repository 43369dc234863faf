"""What each CLI command does, on parsed arguments; printing lives here, logic in the API."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

import oddeye
from oddeye.config import read_config_file
from oddeye.detectors import DEFAULT_DETECTOR, available, get_spec
from oddeye.errors import OddeyeError

TRAIN_FLAGS = ("epochs", "batch_size", "lr", "seed", "patience", "min_delta", "val_fraction", "device")
TRAIN_FLAGS += ("precision",)


def cmd_train(args: argparse.Namespace) -> int:
    settings = read_config_file(args.config) if args.config else {}
    params = dict(settings.pop("params", None) or {})
    params.update(dict(args.params))
    detector = args.detector or settings.pop("detector", None) or DEFAULT_DETECTOR
    settings.pop("detector", None)
    flags = {k: getattr(args, k) for k in TRAIN_FLAGS}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if args.quiet:
        settings["progress"] = False
    det = oddeye.train(args.train, detector, args.out, force=args.force, size=args.size, **settings, **params)
    shape = "x".join(map(str, det.input_shape_))
    head = (
        f"trained {detector} on {det.n_train_images_} images of {shape} ({det.device_}, {det.precision_}): "
    )
    print(head + det.training_summary())
    print(f"run folder: {args.out}  (model.safetensors, model.json, history.csv, training_curve.png)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    header = tuple(h.strip() for h in args.header.split(","))
    if len(header) != 2 or not all(header):
        raise OddeyeError(f"--header: expected two names like Id,Predicted, found {args.header!r}")
    det = oddeye.load(args.run, device=args.device, progress=not args.quiet)
    scores = oddeye.score(det, args.images, args.out, header=header, size=args.size)
    print(
        f"scored {len(scores)} images (higher = more anomalous): min {scores.min():.5g}, "
        f"median {float(np.median(scores)):.5g}, max {scores.max():.5g}"
    )
    print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = oddeye.evaluate(args.scores, args.labels)
    print(json.dumps(asdict(result), indent=2) if args.json else result.to_text())
    return 0


def cmd_detectors(args: argparse.Namespace) -> int:
    shape = args.shape if len(args.shape) == 3 else (*args.shape, 1)
    print(f"{'name':<10}{'parameters':>12}  description   (parameters at {'x'.join(map(str, shape))})")
    for name in available():
        n = oddeye.Detector(name).n_parameters(shape)
        default = "  [default]" if name == DEFAULT_DETECTOR else ""
        print(f"{name:<10}{n:>12,}  {get_spec(name).description}{default}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from oddeye.demo import run_demo

    run_demo(
        Path(args.out),
        digit=args.digit,
        detector=args.detector or DEFAULT_DETECTOR,
        epochs=args.epochs,
        progress=not args.quiet,
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from oddeye.bench import oneclass, report, speed

    if args.bench in ("fmnist", "digits"):
        return oneclass.run(args, args.bench)
    if args.bench == "report":
        print(f"wrote {report.write_markdown(Path(args.results_dir), Path(args.markdown))}")
        return 0
    return speed.run(args)
