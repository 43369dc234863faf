"""What each CLI command does, on parsed arguments; printing lives here, logic in the API."""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

import oddeye
from oddeye.api import resolve_threshold
from oddeye.config import read_config_file
from oddeye.data.imageset import ImageSet
from oddeye.data.loaders import load_labels
from oddeye.detectors import DEFAULT_DETECTOR, available, get_spec
from oddeye.errors import OddeyeError
from oddeye.evaluation import ScoresCsv, read_scores_csv, write_flags_csv
from oddeye.reports.report import threshold_rows
from oddeye.runs import save_threshold
from oddeye.thresholds import Threshold
from oddeye.training.distributed import world

TRAIN_FLAGS = ("epochs", "batch_size", "lr", "seed", "patience", "min_delta", "val_fraction", "device")
TRAIN_FLAGS += ("precision", "threshold", "compile")


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
    det = oddeye.train(
        args.train,
        detector,
        args.out,
        force=args.force,
        resume=args.resume,
        size=args.size,
        **settings,
        **params,
    )
    if not world().main:
        return 0  # rank 0 reports
    shape = "x".join(map(str, det.input_shape_))
    head = (
        f"trained {detector} on {det.n_train_images_} images of {shape} ({det.device_}, {det.precision_}): "
    )
    print(head + det.training_summary())
    if det.threshold_ is not None:
        print(det.threshold_.describe())
    print(f"run folder: {args.out}  (model.safetensors, model.json, history.csv, training_curve.png)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    header = tuple(h.strip() for h in args.header.split(","))
    if len(header) != 2 or not all(header):
        raise OddeyeError(f"--header: expected two names like Id,Predicted, found {args.header!r}")
    det = oddeye.load(args.run, device=args.device, progress=not args.quiet)
    data = det.prepare(args.images, size=args.size)
    main = world().main  # under torchrun, every rank scores a shard and rank 0 writes the files
    labels = load_labels(args.labels, n=len(data)) if args.labels and main else None
    # rows go to a temporary file as they are scored; it becomes OUT once everything has worked
    with ScoresCsv(args.out, header) if main else contextlib.nullcontext() as csv_out:
        parts = []
        for chunk in det.iter_scores(data, distributed=True):
            parts.append(chunk)
            if csv_out is not None:
                csv_out.write(det.calibrate(chunk) if args.calibrated else chunk)
        if not main:
            return 0
        scores = np.concatenate(parts)
        threshold = _score_threshold(args, det, scores, labels)
    wanted = args.calibrated or (threshold is not None and det.heldout_scores_ is not None)
    calibrated = det.calibrate(scores) if wanted else None  # the flags file's column
    print(
        f"scored {len(scores)} images (higher = more anomalous): min {scores.min():.5g}, "
        f"median {float(np.median(scores)):.5g}, max {scores.max():.5g}"
    )
    scale = " (calibrated: the fraction of held-out normal images scoring lower)" if args.calibrated else ""
    print(f"wrote {args.out}{scale}")
    if threshold is not None:
        flags = threshold.flag(scores)
        flags_path = Path(args.flags) if args.flags else flags_path_for(args.out)
        write_flags_csv(flags_path, scores, flags, calibrated)
        print(threshold.describe())
        print(f"flagged {int(flags.sum())} of {len(flags)} images ({flags.mean():.2%}) -> {flags_path}")
    if args.report:
        _write_report(args, args.report, det, data, scores, labels, threshold)
    return 0


def _score_threshold(
    args: argparse.Namespace, det: oddeye.Detector, scores: np.ndarray, labels: np.ndarray | None
) -> Threshold | None:
    """None without --threshold; the run's own for a bare --threshold; else chosen and saved."""
    if args.threshold is None:
        return None
    if args.threshold == "":
        if det.threshold_ is None:
            raise OddeyeError(
                f"{args.run}: this run has no saved threshold; give a rule (--threshold fpr:0.01)"
            )
        return det.threshold_
    threshold = det.choose_threshold(args.threshold, scores=scores, labels=labels)
    where = save_threshold(args.run, threshold)
    kind = "analysis threshold" if threshold.uses_labels else "operating threshold"
    print(f"saved as the run's {kind}: {where}")
    return threshold


def flags_path_for(out: str | Path) -> Path:
    """prediction.csv -> prediction.flags.csv"""
    out = Path(out)
    return out.with_name(f"{out.stem}.flags.csv")


def _write_report(
    args: argparse.Namespace,
    out: str,
    det: oddeye.Detector | None,
    data: ImageSet | None,
    scores: np.ndarray,
    labels: np.ndarray | None,
    threshold: Threshold | None,
) -> None:
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    files = oddeye.report(
        det,
        data,
        out,
        scores=scores,
        labels=labels,
        classes=args.classes,
        class_names=names,
        threshold=threshold,
        scores_source=args.scores if det is None or data is None else None,
        progress=not args.quiet,
    )
    print(f"wrote {files.html} (figures as PNG files in {files.html.stem}_figures/)")


def cmd_report(args: argparse.Namespace) -> int:
    det = oddeye.load(args.run, device=args.device, progress=not args.quiet)
    data = det.prepare(args.images, size=args.size)
    scores = det.infer(data).scores
    labels = load_labels(args.labels, n=len(scores)) if args.labels else None
    threshold = resolve_threshold(det, args.threshold, scores, labels)
    _write_report(args, args.out, det, data, scores, labels, threshold)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = oddeye.evaluate(args.scores, args.labels)
    print(json.dumps(asdict(result), indent=2) if args.json else result.to_text())
    if not (args.threshold or args.report or args.run or args.images):
        return 0
    scores = read_scores_csv(args.scores)
    labels = load_labels(args.labels, n=len(scores))
    det = oddeye.load(args.run, progress=not args.quiet) if args.run else None
    if args.images and det is None:
        raise OddeyeError("--images needs --run (the run that made the scores)")
    threshold = resolve_threshold(det, args.threshold, scores, labels)
    if threshold is not None and not args.json:
        print()
        for name, value in threshold_rows(threshold, scores, labels):
            print(f"{name:<19}{value}")
    if args.report:
        data = det.prepare(args.images) if det is not None and args.images else None
        _write_report(args, args.report, det, data, scores, labels, threshold)
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
    from oddeye.bench import large, oneclass, report, speed

    if args.bench in ("fmnist", "digits"):
        return oneclass.run(args, args.bench)
    if args.bench == "report":
        print(f"wrote {report.write_markdown(Path(args.results_dir), Path(args.markdown))}")
        return 0
    if args.bench == "large":
        return large.run(args)
    return speed.run(args)
