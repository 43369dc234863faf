"""Command line: ``oddeye train | update | score | evaluate | report | outliers | ...``. Parses and
dispatches only."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import select
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from oddeye._version import __version__
from oddeye.config import DEVICE_HELP, QUIET_HELP, SIZE_HELP, TrainConfig, add_set_option, parse_dims
from oddeye.errors import OddeyeError, TrainingInterrupted

EXAMPLES = {
    "train": "example:\n  oddeye train trainingset.npy --detector cnn-bn --out runs/cnn-bn --epochs 50\n\n"
    "settings: defaults < --config FILE < --set KEY=VALUE (last wins) < flags; unknown keys are\n"
    "refused. Progress: bars on a terminal, one line per epoch in a pipe or log (--quiet: none).",
    "update": "examples:\n  oddeye update runs/default new_normal_images/\n"
    "  oddeye update runs/default more.npy --out runs/default-v2\n\n"
    "memory banks absorb the images (no training; within max_bank); fusion scales and the threshold\n"
    "are refitted on held-out images. RUN is never changed. Detectors that train are refused.",
    "score": "examples:\n  oddeye score runs/cnn-bn data/testingset.npy --out prediction.csv\n"
    "  oddeye score runs/cnn-bn test.npy --out prediction.csv --threshold fpr:0.01 --report report.html",
    "evaluate": "examples:\n  oddeye evaluate prediction.csv --labels data/testing_labels.npy\n"
    "  oddeye evaluate prediction.csv --labels labels.npy --threshold f1 --report report.html\n"
    "  oddeye evaluate prediction.csv --dataset mvtec/bottle --maps maps/\n"
    "  oddeye evaluate prediction.csv --labels labels.npy --masks masks/ --maps maps/",
    "report": "example:\n  oddeye report runs/cnn-bn testingset.npy --labels labels.npy --out report.html",
    "outliers": "examples:\n  oddeye outliers photos/ --out outliers.html --csv outliers.csv\n"
    "  oddeye outliers trainingset.npy --out outliers.html --top 64 --detector pixel-knn\n\n"
    "no model is kept: a memory-bank detector is built on every image, and each image's score is its\n"
    "atypicality among the others (higher = odder), by whole images and, with default, by its local\n"
    "view too (a small defect). Unreadable files are skipped and listed.",
    "review": "examples:\n  oddeye review runs/default testingset.npy\n"
    "  oddeye review runs/default photos/ --marks photos-marks.csv\n"
    "  oddeye review runs/bottle mvtec/bottle --host 0.0.0.0 --port 8765\n\n"
    "scores the images once (cached), then serves a page at the printed address: the images by score,\n"
    "their maps, the threshold on the histogram, marks (j/k move, n normal, a anomalous, u undo) kept in\n"
    "--marks at once, and 'add the images marked normal to the model' (oddeye update, then rescoring).",
    "detectors": "examples:\n  oddeye detectors --shape 64x64x3\n  oddeye detectors pixel-knn",
    "serve": "examples:\n  oddeye serve model.onnx --port 8000\n  oddeye serve runs/default --workers 2\n"
    "  curl -F files=@face.png http://127.0.0.1:8000/score",
    "export": "examples:\n  oddeye export runs/default --format onnx --out model.onnx\n"
    "  oddeye export runs/default --format triton --out model_repository --name faces",
    "demo": "example:\n  oddeye demo --out demo-output",
    "bench": "examples:\n  oddeye bench fmnist --detectors cnn-bn,pca,knn --classes 0,6 --seeds 0,1,2\n"
    "  oddeye bench digits\n  oddeye bench digits --detectors knn,pca --contamination 0,0.05,0.1\n"
    "  oddeye bench emoji --protocols style --detectors default,knn\n"
    "  oddeye bench homework --n 140001 --test 19999\n"
    "  oddeye bench speed --detectors cnn-bn --max-images 20000\n"
    "  oddeye bench large --n 1000000\n"
    "  oddeye bench outliers --planted 0.05\n"
    "  oddeye bench review --n 20000\n"
    "  oddeye bench avatars-data --size 64 --n-train 3000 --n-test 1000\n"
    "  oddeye bench avatars --sizes 64 --detectors default,pixel-knn,knn\n"
    "  oddeye bench textures --sizes 128 --detectors default,knn\n"
    "  oddeye bench objects --sizes 256 --detectors default,knn",
}


DISTRIBUTED = ("train", "score")  # the commands that use every rank under torchrun


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per training setting, generated from :class:`TrainConfig`'s fields (their help,
    type and choices); a flag left out is None, so lower layers (``--set``, ``--config``) show."""
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = TrainConfig.field_type(f.name)
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=meta["help"])
            continue
        parsed = str if meta.get("parse") else kind  # budget '20m': the resolver parses it
        options: dict[str, Any] = {"type": parsed, "default": None, "help": meta["help"]}
        if meta.get("choices"):
            options["choices"] = meta["choices"]
        elif meta.get("metavar"):
            options["metavar"] = meta["metavar"]
        p.add_argument(flag, **options)


RULES = "VALUE, fpr:A, top:Q or f1"
THRESHOLD_HELP = (
    "0/1 labels at a threshold: VALUE (fixed, e.g. 200), fpr:A (at most A of the held-out normal "
    "training images flagged; fpr:0.01 is the default when training), top:Q (the fraction Q of these "
    "images) or f1 (best F1 against --labels; analysis only); without RULE, the run's saved threshold. "
    "A RULE is saved as the run's threshold (model.json), which export, serve and later scores use"
)


def _report_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    """Options shared by every command that can write a report."""
    if not required:
        p.add_argument("--report", metavar="HTML", help="also write a self-contained HTML report")
    p.add_argument("--classes", metavar="FILE", help="class id per image, to colour the report by")
    p.add_argument("--class-names", metavar="A,B,...", help="names of class ids 0, 1, ...")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2 as usual."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="oddeye",
        description="Unsupervised image anomaly detection: train on normal images, "
        "score new ones (higher = more anomalous).",
    )
    parser.add_argument("--version", action="version", version=f"oddeye {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "train", "train a detector from scratch on normal images")
    p.add_argument("train", metavar="TRAIN", help=".npy/.npz/idx file or folder of normal images")
    p.add_argument("--detector", default=None, help="registry name (see 'oddeye detectors')")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    p.add_argument("--config", metavar="JSON", help="settings file: training keys, detector, params")
    add_set_option(
        p, "sets", "a training setting or detector parameter, e.g. channels=[16,32,64] or lr=0.002"
    )
    add_setting_flags(p)
    p.add_argument("--size", type=parse_dims, metavar="HxW", help=SIZE_HELP)
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--force", action="store_true", help="replace an existing run folder (finished or not)"
    )
    again.add_argument(
        "--resume", action="store_true", help="continue an interrupted training in RUN from its checkpoint"
    )
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = _command(sub, "update", "add normal images to a trained memory-bank run, without retraining")
    p.add_argument("run", metavar="RUN", help="the run folder (left unchanged)")
    p.add_argument("images", metavar="IMAGES", help=".npy/.npz/idx file or folder of new normal images")
    p.add_argument("--out", metavar="NEWRUN", help="the updated run folder to create (default: RUN-updated)")
    p.add_argument("--size", type=parse_dims, metavar="HxW", help=SIZE_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = _command(sub, "score", "score images with a trained run; writes the submission CSV")
    p.add_argument("run", metavar="RUN")
    p.add_argument("images", metavar="IMAGES")
    p.add_argument(
        "--out",
        required=True,
        metavar="CSV",
        help="Id,Predicted rows (Id,path,Predicted for a folder: each file relative to it)",
    )
    p.add_argument("--header", default="Id,Predicted", help="CSV header; 'ID,score' for 2022")
    p.add_argument("--threshold", nargs="?", const="", metavar="RULE", help=THRESHOLD_HELP)
    p.add_argument("--flags", metavar="CSV", help="where the 0/1 labels go (default: OUT as NAME.flags.csv)")
    p.add_argument(
        "--calibrated",
        action="store_true",
        help="write the calibrated scale (fraction of held-out normal images scoring lower) instead",
    )
    p.add_argument(
        "--labels", metavar="LABELS", help="0/1 labels of IMAGES: for --threshold f1 and the report"
    )
    p.add_argument(
        "--maps",
        metavar="DIR",
        help="also write each image's anomaly map (float32 .npy at the model's input size) and maps.csv",
    )
    p.add_argument("--maps-png", action="store_true", help="with --maps: an overlay PNG per image too")
    p.add_argument(
        "--pixel-threshold",
        default="fpr:0.01",
        metavar="RULE",
        help="the overlays' outline: fpr:A (the map value exceeded by a share A of the pixels of the "
        "run's held-out normal images; default fpr:0.01) or a value",
    )
    _report_options(p)
    p.add_argument("--size", type=parse_dims, metavar="HxW", help=SIZE_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = _command(sub, "evaluate", "ROC AUC, average precision and score distributions per class")
    p.add_argument("scores", metavar="CSV")
    p.add_argument("--labels", metavar="LABELS", help=".npy, .csv or idx labels (1 = anomaly)")
    p.add_argument(
        "--dataset",
        metavar="CATEGORY",
        help="an MVTec AD category folder scored as CATEGORY: labels, defect types and masks from its layout",
    )
    p.add_argument(
        "--masks",
        metavar="DIR|NPY",
        help="masks with --labels: a folder (matched to the CSV's paths by file name, or NAME_mask.*) "
        "or a .npy of (N, H, W), zero for normal images",
    )
    p.add_argument(
        "--maps", metavar="DIR", help="the maps 'score --maps' wrote: pixel AUROC and AUPRO against the masks"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--threshold", metavar="RULE", help="also report precision and recall at: " + RULES)
    p.add_argument("--run", metavar="RUN", help="the run that made the scores (fpr thresholds, report)")
    p.add_argument("--images", metavar="IMAGES", help="the scored images (the report's image panels)")
    _report_options(p)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = _command(sub, "report", "an HTML report (and PNG figures) of a run on a set of images")
    p.add_argument("run", metavar="RUN")
    p.add_argument("images", metavar="IMAGES")
    p.add_argument("--out", required=True, metavar="HTML", help="the report; figures go to NAME_figures/")
    p.add_argument("--labels", metavar="LABELS", help="0/1 labels (1 = anomaly): adds ROC and PR curves")
    p.add_argument("--threshold", metavar="RULE", help="the line drawn (default: the run's): " + RULES)
    _report_options(p, required=True)
    p.add_argument("--size", type=parse_dims, metavar="HxW", help=SIZE_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = _command(sub, "outliers", "rank every image of a set by how odd it is among the others (no model)")
    p.add_argument("images", metavar="IMAGES", help=".npy/.npz/idx file or folder of images")
    p.add_argument(
        "--out", required=True, metavar="HTML", help="the page: the oddest images with their anomaly maps"
    )
    p.add_argument(
        "--csv",
        metavar="CSV",
        help="Id,score,duplicate_group,duplicate rows in the input's order (Id,path,... for a folder)",
    )
    p.add_argument("--top", type=int, default=32, metavar="N", help="oddest images in the gallery (32)")
    p.add_argument("--detector", default=None, help="a memory-bank detector (default: default)")
    add_set_option(p, "sets", "a detector parameter or setting, e.g. score_batch_size=256 (pixel-knn: k=10)")
    p.add_argument("--size", type=parse_dims, metavar="HxW", help=SIZE_HELP)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = _command(sub, "export", "export a run for serving: one ONNX graph (checked) or a Triton repository")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", choices=["onnx", "triton"], default="onnx", help="onnx (default) or triton")
    p.add_argument("--out", required=True, metavar="PATH", help="model.onnx, or the Triton repository folder")
    p.add_argument(
        "--images",
        metavar="IMAGES",
        help="images to check the export on (default: the run's held-out images)",
    )
    p.add_argument("--name", help="the Triton model's name (default: the run folder's name)")
    p.add_argument("--max-batch", type=int, default=64, help="Triton's max_batch_size (default 64)")

    p = _command(sub, "serve", "serve a run or an exported .onnx over HTTP (KServe v2 protocol and /score)")
    from oddeye.serving.server import add_arguments as serve_arguments

    serve_arguments(p)

    p = _command(
        sub, "review", "a local web page to look through flagged images, mark them and update the model"
    )
    from oddeye.review.server import add_arguments as review_arguments

    review_arguments(p)

    p = _command(sub, "detectors", "list the registered detectors, or one detector's parameters")
    p.add_argument("name", nargs="?", help="a detector: list its parameters, types, defaults and meanings")
    p.add_argument(
        "--shape",
        type=parse_dims,
        default=(64, 64, 3),
        metavar="HxWxC",
        help="input shape for the parameter counts (default 64x64x3)",
    )

    p = _command(sub, "demo", "train -> score -> evaluate on scikit-learn's digits (no download)")
    p.add_argument("--out", default="demo-output", metavar="DIR")
    p.add_argument("--digit", type=int, default=0, choices=range(10), help="the normal digit")
    p.add_argument("--detector", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = _command(sub, "bench", "benchmarks that print figures (no pass/fail on time)")
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    from oddeye.bench import args as bench_args

    for name, what in [
        ("fmnist", "one-class Fashion-MNIST: AUROC per class, mean, time per class"),
        ("digits", "one-class digits (scikit-learn): the same protocol, in minutes"),
    ]:
        bench_args.oneclass(bench.add_parser(name, help=what, description=what), name)
    what = "colour 64x64 emoji, Google vs Twitter drawings (style) and one-class per category"
    bench_args.emoji(bench.add_parser("emoji", help=what, description=what))
    what = "the homework end to end at its size (train 140,001, score 19,999): wall time, peak RSS"
    bench_args.homework(bench.add_parser("homework", help=what, description=what))
    what = "load test of oddeye serve on loopback: requests/s, p50/p99 latency, errors, RSS"
    bench_args.serve(bench.add_parser("serve", help=what, description=what))
    what = "oddeye review on a 20,000-image run: first and later pages in Chromium, server memory"
    bench_args.review(bench.add_parser("review", help=what, description=what))
    what = "pixel AUROC of every detector's anomaly map on pasted patches (Fashion-MNIST)"
    bench_args.maps(bench.add_parser("maps", help=what, description=what))
    what = "oddeye outliers on Fashion-MNIST with planted images: precision, beside cleanlab's outlier check"
    bench_args.outliers(bench.add_parser("outliers", help=what, description=what))
    what = "local anomalies with exact masks on cartoon faces: image and pixel AUROC, AUPRO, time, RSS"
    bench_args.avatars(bench.add_parser("avatars", help=what, description=what))
    what = "small marks on scikit-image's textures (brick, grass, gravel): image and pixel AUROC, AUPRO"
    bench_args.textures(bench.add_parser("textures", help=what, description=what))
    what = "small marks on one object shot again and again, moved a little each time: image AUROC, AUPRO"
    bench_args.objects(bench.add_parser("objects", help=what, description=what))
    what = "draw one category of the avatars benchmark: cartoon faces, anomalies with exact masks (node)"
    bench_args.avatars_data(bench.add_parser("avatars-data", help=what, description=what))
    what = "train/score images/s at the homework scale: ours vs a course-style loop"
    bench_args.speed(bench.add_parser("speed", help=what, description=what))
    what = "score a generated set larger than memory (1M images): peak RSS and images/s"
    bench_args.large(bench.add_parser("large", help=what, description=what))
    what = "regenerate BENCHMARKS.md from benchmarks/results/*.json"
    bench_args.report(bench.add_parser("report", help=what, description=what))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":  # no PyTorch for a server running an exported model
        return _serve(args)
    from oddeye.training import distributed

    rank = int(os.environ.get("RANK", "0"))
    if distributed.launched() and args.command not in DISTRIBUTED and rank != 0:
        return 0  # under torchrun, only train and score use the other ranks
    prefix = "oddeye" if rank == 0 else f"oddeye[rank {rank}]"
    try:
        with contextlib.redirect_stdout(io.StringIO()) if rank != 0 else contextlib.nullcontext():
            code = _run(args, distributed.launched() and args.command in DISTRIBUTED)
        sys.stdout.flush()  # a reader gone shows here, not in Python's last flush
        return code
    except TrainingInterrupted as e:
        print(f"{prefix}: {e}", file=sys.stderr)
        return 130
    except OddeyeError as e:
        if not isinstance(e, distributed.RelayedError):  # rank 0 prints its own error once
            print(f"{prefix}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        # the reader stopped early (| head): quietly, as a tool killed by SIGPIPE
        with contextlib.suppress(OSError, ValueError):  # no stdout file to redirect (in tests)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's last flush
        return 128 + signal.SIGPIPE
    except MemoryError:  # inputs are checked against free memory; this is the last line of defence
        print(
            f"{prefix}: error: out of memory during '{args.command}' (a smaller --batch-size may help)",
            file=sys.stderr,
        )
        return 2


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has gone (not some other broken pipe): its
    write end then polls as an error."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured in tests), no poll
        return True


def _serve(args: argparse.Namespace) -> int:
    """``oddeye serve``, with the same one-line errors, and without importing PyTorch."""
    from oddeye.serving.server import cmd_serve

    try:
        return cmd_serve(args)
    except OddeyeError as e:
        print(f"oddeye: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, many: bool) -> int:
    """The command, inside torchrun's process group when ``many``."""
    from oddeye import commands
    from oddeye.training import distributed

    command = getattr(commands, f"cmd_{args.command}")
    if not many:
        return command(args)
    with distributed.session(getattr(args, "device", None)):
        return command(args)
