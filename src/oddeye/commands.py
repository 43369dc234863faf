"""What each CLI command does, on parsed arguments; printing lives here, logic in the API."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import oddeye
from oddeye.api import (
    ScoreResult,
    check_class_names,
    check_outputs,
    evaluate_truth,
    flags_target,
    scores_and_truth,
    threshold_for,
)
from oddeye.config import TrainConfig
from oddeye.data.imageset import ImageSet
from oddeye.data.loaders import load_classes, load_labels
from oddeye.detectors import DEFAULT_DETECTOR, available, get_spec
from oddeye.errors import OddeyeError
from oddeye.runs import read_metadata, save_threshold
from oddeye.settings import resolve_settings
from oddeye.thresholds import Threshold, parse_rule, threshold_rows, threshold_stats
from oddeye.training.distributed import on_main, world


def setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings given as flags (None: not given), named by their config fields."""
    return {name: getattr(args, name, None) for name in TrainConfig.fields()}


def cmd_train(args: argparse.Namespace) -> int:
    explicit = {**setting_flags(args), "progress": False if args.quiet else None}
    settings = resolve_settings(args.detector, args.config, args.sets, explicit)
    for text in settings.overridden:  # allowed (later wins), but said, so nobody is surprised
        print(f"oddeye: note: {text}", file=sys.stderr)
    det = oddeye.Detector(settings.detector, settings.config, settings.params)
    det = oddeye.train(args.train, det, args.out, force=args.force, resume=args.resume, size=args.size)
    if not world().main:
        return 0  # rank 0 reports
    shape = "x".join(map(str, det.input_shape_))
    head = (
        f"trained {det.detector} on {det.n_train_images_} images of {shape} "
        f"({det.device_}, {det.precision_}): "
    )
    print(head + det.training_summary())
    if det.threshold_ is not None:
        print(det.threshold_.describe())
    files = sorted(p.name for p in Path(args.out).iterdir() if p.is_file())
    print(f"run folder: {args.out}  ({', '.join(files)})")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    out = oddeye.update(
        args.run, args.images, args.out, size=args.size, device=args.device, progress=not args.quiet
    )
    meta = read_metadata(out)  # what was written (the weights need not be read again)
    done = meta["updates"][-1]
    print(
        f"added {done['added']} image{'s' if done['added'] != 1 else ''} to {meta['detector']} "
        f"without training: {done['absorbed']} joined "
        f"the memory banks, {done['held_out']} held out ({meta['training']['n_images']} images in all)"
    )
    if meta.get("threshold"):
        print(Threshold.from_dict(meta["threshold"]).describe())
    print(f"updated run folder: {out}  ({args.run} unchanged)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    header = tuple(h.strip() for h in args.header.split(","))
    if len(header) != 2 or not all(header):
        raise OddeyeError(f"--header: expected two names like Id,Predicted, found {args.header!r}")
    flags = flags_target(args.out, args.flags, args.threshold)
    targets = {"--out": args.out, "--flags": flags, **_report_targets(args.report), "--maps": args.maps}
    sources = {"the images": args.images, **_report_sources(args)}
    pictures = ("--maps",) if args.maps_png else ()

    def check() -> None:  # before scoring: a failed report leaves no scores behind either
        _check_report_inputs(args)
        check_outputs(targets, sources, args.run, ("--maps", "--report's figures"), pictures)

    on_main(check)  # every rank stops, rank 0 says why
    result = oddeye.score(
        args.run,
        args.images,
        args.out,
        header=header,
        size=args.size,
        threshold=args.threshold,  # "" (a bare --threshold): the saved one
        labels=args.labels,
        flags=args.flags,
        calibrated=args.calibrated,
        maps=args.maps,
        maps_png=args.maps_png,
        pixel_rule=args.pixel_threshold,
        device=args.device,
        progress=not args.quiet,
        distributed=True,
        save=not args.report,  # with a report, the rule is saved once the report is written too
    )
    if not world().main:
        return 0  # under torchrun, every rank scores a shard and rank 0 writes the files
    scores = result.scores
    print(
        f"scored {len(scores)} images (higher = more anomalous): min {scores.min():.5g}, "
        f"median {float(np.median(scores)):.5g}, max {scores.max():.5g}"
    )
    scale = " (calibrated: the fraction of held-out normal images scoring lower)" if args.calibrated else ""
    print(f"wrote {args.out}{scale}")
    if result.maps is not None:
        shape = "x".join(map(str, result.detector.input_shape_[:2]))
        pngs = " and overlays (PNG)" if args.maps_png else ""
        print(f"wrote {len(scores)} anomaly maps ({shape}, float32 .npy){pngs} to {result.maps} (maps.csv)")
        pixel = result.pixel_threshold
        print(
            pixel.describe() if pixel is not None else "no pixel threshold: the run kept no held-out images"
        )
    _print_saved(result)
    if result.threshold is not None:
        flags = result.flags
        print(result.threshold.describe())
        print(
            f"flagged {int(flags.sum())} of {len(flags)} images ({flags.mean():.2%}) -> {result.flags_path}"
        )
    if args.report:
        det = result.detector
        labels = load_labels(args.labels, n=len(scores)) if args.labels else None
        data = det.prepare(args.images, size=args.size)
        _write_report(args, args.report, det, data, scores, labels, result.threshold)
        if args.threshold and result.threshold is not None:  # a rule chosen now, saved last
            result.threshold_saved_to = save_threshold(args.run, result.threshold)
            _print_saved(result)
    return 0


def _print_saved(result: ScoreResult) -> None:
    if result.threshold_saved_to is not None:
        kind = "analysis threshold" if result.threshold.uses_labels else "operating threshold"  # type: ignore[union-attr]
        print(f"saved as the run's {kind}: {result.threshold_saved_to}")


def _report_targets(report: str | None, option: str = "--report") -> dict[str, str | None]:
    """An HTML report and its figures' folder (NAME_figures/ beside it), as outputs to check."""
    figures = str(Path(report).with_name(f"{Path(report).stem}_figures")) if report else None
    return {option: report, "--report's figures": figures}


def _report_sources(args: argparse.Namespace) -> dict[str, object]:
    return {"the --labels file": args.labels, "the --classes file": args.classes}


def _check_report_inputs(args: argparse.Namespace) -> None:
    """--classes and --class-names agree (checked before any work; a report is written last)."""
    if getattr(args, "report", True) and args.classes and args.class_names:
        check_class_names(load_classes(args.classes), _class_names(args))


def _class_names(args: argparse.Namespace) -> list[str] | None:
    return [n.strip() for n in args.class_names.split(",")] if args.class_names else None


def _write_report(
    args: argparse.Namespace,
    out: str,
    det: oddeye.Detector | None,
    data: ImageSet | None,
    scores: np.ndarray,
    labels: np.ndarray | None,
    threshold: Threshold | None,
    **local: Any,
) -> None:
    """``local``: :func:`oddeye.report`'s truth, maps and evaluation, where they are known."""
    names = _class_names(args)
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
        **local,
    )
    print(f"wrote {files.html} (figures as PNG files in {files.html.stem}_figures/)")


def cmd_report(args: argparse.Namespace) -> int:
    if args.threshold:
        parse_rule(args.threshold)  # before anything is scored
    _check_report_inputs(args)
    sources = {"the images": args.images, **_report_sources(args)}
    check_outputs(_report_targets(args.out, "--out"), sources, args.run, ("--report's figures",))
    det = oddeye.load(args.run, device=args.device, progress=not args.quiet)
    data = det.prepare(args.images, size=args.size)
    scores = det.infer(data).scores
    labels = load_labels(args.labels, n=len(scores)) if args.labels else None
    threshold = threshold_for(det, args.threshold, scores, labels, source=args.run)
    _write_report(args, args.out, det, data, scores, labels, threshold)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.report:
        _check_report_inputs(args)
        sources = {"the scores": args.scores, **_report_sources(args)}
        sources |= {"the images": args.images, "the masks": args.masks, "the maps": args.maps}
        sources |= {"the data set": args.dataset}
        check_outputs(_report_targets(args.report), sources, args.run, ("--report's figures",))
    scores, truth = scores_and_truth(args.scores, args.labels, dataset=args.dataset, masks=args.masks)
    labels = truth.labels
    det = oddeye.load(args.run, progress=not args.quiet) if args.run else None
    if args.images and det is None:
        raise OddeyeError("--images needs --run (the run that made the scores)")
    threshold = None  # chosen before anything is printed: a bad rule prints nothing but its error
    if args.threshold or det is not None:
        threshold = threshold_for(det, args.threshold, scores, labels, source=args.run or args.scores)
    result = evaluate_truth(scores, truth, maps=args.maps)
    if args.json:
        record = asdict(result)
        if threshold is not None:
            record["threshold"] = threshold_stats(threshold, scores, labels)
        print(json.dumps(record, indent=2))
    else:
        print(result.to_text())
    if threshold is not None and not args.json:
        print()
        for name, value in threshold_rows(threshold, scores, labels):
            print(f"{name:<19}{value}")
    if args.report:
        data = det.prepare(args.images) if det is not None and args.images else None
        local = {"truth": truth, "maps": args.maps, "evaluation": result}
        _write_report(args, args.report, det, data, scores, labels, threshold, **local)
    return 0


def cmd_outliers(args: argparse.Namespace) -> int:
    from oddeye.ranking import unreadable_text

    explicit = {"device": args.device, "progress": False if args.quiet else None}
    settings = resolve_settings(args.detector, None, args.sets, explicit)
    det = oddeye.Detector(settings.detector, settings.config, settings.params)
    result = oddeye.outliers(
        args.images, args.out, args.csv, detector=det, top=args.top, size=args.size, progress=not args.quiet
    )
    s = result.scores
    print(
        f"ranked {len(s)} images of {'x'.join(map(str, result.shape))} by how odd each is among the "
        f"others (higher = odder): median {float(np.median(s)):.4g}, max {s.max():.4g}"
    )
    if result.unreadable:
        print(unreadable_text(result.unreadable))
    print(f"duplicates: {result.duplicates.describe()}")
    oddest = ", ".join(f"{result.name(int(i))} {s[i]:.3g}" for i in result.oddest(5))
    print(f"oddest: {oddest}")
    print(f"wrote {result.out} (the {len(result.gallery)} oddest with their anomaly maps, duplicates)")
    if result.csv is not None:
        print(f"wrote {result.csv} (one row per image, in the input's order)")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from oddeye.review.server import cmd_review

    return cmd_review(args)


def cmd_export(args: argparse.Namespace) -> int:
    from oddeye.export import TOLERANCE, export_onnx, export_triton

    if args.format == "triton":
        folder = export_triton(args.run, args.out, name=args.name, max_batch=args.max_batch)
        parity = json.loads((folder / "oddeye.json").read_text())["parity"]
        print(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx (Triton, ONNX Runtime backend)")
    else:
        done = export_onnx(args.run, args.out, images=args.images)
        parity = asdict(done.parity)
        print(f"wrote {done.onnx} and {done.json} (threshold and calibration; not in the graph)")
    flags = {None: "no saved threshold", True: "identical", False: "different"}[parity["flags_identical"]]
    print(
        f"checked with onnxruntime on {parity['images']} images: largest relative score difference "
        f"{parity['max_relative_score_difference']:.2e} (allowed {TOLERANCE:g}), flags at the saved "
        f"threshold {flags}, largest map difference {parity['max_map_difference']:.2e} of the map's range"
    )
    return 0


def cmd_detectors(args: argparse.Namespace) -> int:
    if args.name is not None:
        return _detector_params(args.name)
    shape = args.shape if len(args.shape) == 3 else (*args.shape, 1)
    print(f"{'name':<10}{'parameters':>12}  description   (parameters at {'x'.join(map(str, shape))})")
    for name in available():
        n = oddeye.Detector(name).n_parameters(shape)
        default = "  [default]" if name == DEFAULT_DETECTOR else ""
        print(f"{name:<10}{n:>12,}  {get_spec(name).description}{default}")
    return 0


def _detector_params(name: str) -> int:
    """One detector's parameters: name, type, default and meaning (``--set NAME=VALUE``)."""
    spec = get_spec(name)
    print(f"{name}: {spec.description}")
    rows = spec.params_cls.describe()
    if not rows:
        print("  no parameters")
    width = max((len(r[0]) for r in rows), default=0)
    for key, kind, default, meaning in rows:
        print(f"  {key:<{width}}  {kind} = {default}  {meaning}")
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
    from oddeye.bench import emoji, homework, large, oneclass, report, speed

    if args.bench in ("fmnist", "digits"):
        return oneclass.run(args, args.bench)
    if args.bench == "emoji":
        return emoji.run(args)
    if args.bench == "homework":
        return homework.run(args)
    if args.bench in ("serve", "maps", "outliers", "avatars", "review", "textures", "objects"):
        return importlib.import_module(f"oddeye.bench.{args.bench}").run(args)
    if args.bench == "avatars-data":
        return importlib.import_module("oddeye.bench.avatars_data").run(args)
    if args.bench == "report":
        print(f"wrote {report.write_markdown(Path(args.results_dir), Path(args.markdown))}")
        return 0
    if args.bench == "large":
        return large.run(args)
    return speed.run(args)
