"""The benchmarks' command-line options, apart from their code: parsing ``oddeye ...`` imports no
model code (a server started from an ONNX file needs neither torch nor the benchmarks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from oddeye.bench.common import (
    AVATARS_DIR,
    AVATARS_NPM_DIR,
    EMOJI_DIR,
    FMNIST_DIR,
    MARKDOWN,
    RESULTS_DIR,
    SCRATCH_DIR,
)
from oddeye.config import TrainConfig, add_set_option, parse_dims

DEFAULT_METHODS = "fcn,cnn,cnn-bn,vae,pca,knn"
EMOJI_METHODS = "default,pca,knn,pixel-knn,cnn-bn"
AVATARS_METHODS = "default,knn,pixel-knn,hog-knn"
TEXTURES_METHODS = "default,knn"
MIN_CATEGORY = 80  # images (variants included) for a category to be a one-class case
LOOPS = ("ours", "course")


def add_run_arguments(
    parser: argparse.ArgumentParser, default_methods: str, contamination: bool = True, full_bank: bool = False
) -> None:
    """The options every accuracy benchmark shares: what to run, seeds, settings, where it goes
    (and ``--contamination``, where the benchmark has an anomalous kind to contaminate with;
    ``--full-bank``, where it runs full-bank references)."""
    parser.add_argument(
        "--detectors",
        default=default_methods,
        help=f"comma list of detectors and references (pca, knn); default {default_methods}",
    )
    if full_bank:
        parser.add_argument(
            "--full-bank",
            action="store_true",
            help="after each memory-bank detector, in the same run, the same detector with every "
            "training image in its whole-image banks (max_bank = the training set's size), and "
            "whether the detector reaches it",
        )
    parser.add_argument("--seeds", default="0", help="comma list of seeds; results are averaged")
    if contamination:
        _contamination(parser)
    add_set_option(parser, "settings", "training setting or detector parameter for all")
    parser.add_argument(
        "--label",
        help="name for the results (one detector only); default: the detector's name, plus its "
        "parameters when --set gives any (e.g. transform-score-both)",
    )
    add_output_arguments(parser)


def _contamination(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contamination",
        default="0",
        metavar="F,...",
        help="comma list of fractions in [0, 0.5), each a run of its own: that share of every training "
        "set replaced by images of the anomalous kind (other classes; Twitter's drawings for emoji "
        "style; for the avatars, faces with one part changed, from avatarsSIZE-strays), the same images "
        "for every detector (drawn per seed and case); 0 (default) = clean",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a benchmark's record goes (and whether it goes anywhere)."""
    report(parser)
    parser.add_argument("--no-save", action="store_true", help="print only; write no files")


def report(parser: argparse.ArgumentParser) -> None:
    """Where the JSON records are and the markdown made from them (``oddeye bench report`` too)."""
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where the JSON records go")
    parser.add_argument("--markdown", default=str(MARKDOWN), help="regenerated from the results")


def oneclass(parser: argparse.ArgumentParser, dataset: str) -> None:
    """``oddeye bench fmnist|digits``."""
    add_run_arguments(parser, DEFAULT_METHODS, full_bank=True)
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="normal classes to run")
    parser.add_argument(
        "--pairs",
        default=None,
        help="the 8-vs-2 protocol instead of one-class: these pairs of classes are the anomalies, the "
        "other 8 the normal training set ('0-6,2-4', 'default' for five fixed pairs, or 'all' for 45)",
    )
    if dataset == "fmnist":
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=FMNIST_DIR,
            help=f"folder with the four idx files (default {FMNIST_DIR})",
        )


def emoji(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench emoji``."""
    add_run_arguments(parser, EMOJI_METHODS)
    parser.add_argument(
        "--data-dir", type=Path, default=EMOJI_DIR, help=f"unpacked packages (default {EMOJI_DIR})"
    )
    parser.add_argument("--protocols", default="style,category", help="style, category or both")
    parser.add_argument(
        "--min-category",
        type=int,
        default=MIN_CATEGORY,
        help=f"images a category needs (default {MIN_CATEGORY})",
    )
    parser.add_argument(
        "--validation", action="store_true", help="the validation protocol: training split only (choose here)"
    )


def avatars(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench avatars``."""
    add_run_arguments(parser, AVATARS_METHODS, full_bank=True)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=AVATARS_DIR,
        help=f"the categories avatarsSIZE (default {AVATARS_DIR})",
    )
    parser.add_argument(
        "--sizes",
        default="64,256",
        help="comma list of sizes: avatars64, avatars256, avatars1024 (default 64,256)",
    )
    parser.add_argument(
        "--validation",
        nargs="?",
        const="blobs",
        default=None,
        choices=("blobs", "marks"),
        help="the validation protocol: train on 5/6 of train/good, test on the rest, half of it given "
        "synthetic local anomalies (choose settings here, never on test/): blobs (the default: filled "
        "ellipses) or marks (scratches, stains, missing parts)",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="the category of N training images instead, avatarsSIZE-nN (the homework's size: 140001, "
        "19,999 test images; made by 'make bench-data-homework'); add --full-bank for the full-bank "
        "references",
    )


def avatars_data(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench avatars-data``: one category of the avatars benchmark's faces."""
    parser.add_argument(
        "--out", type=Path, default=AVATARS_DIR, help=f"where categories go (default {AVATARS_DIR})"
    )
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels (default 64)")
    parser.add_argument("--n-train", type=int, default=3000, help="normal training images (default 3000)")
    parser.add_argument(
        "--n-test", type=int, default=1000, help="test images, half normal, half anomalous (default 1000)"
    )
    parser.add_argument(
        "--modules",
        type=Path,
        default=AVATARS_NPM_DIR,
        help=f"folder with the npm packages, installed there if missing (default {AVATARS_NPM_DIR})",
    )
    parser.add_argument("--workers", type=int, help="drawing processes (default: the CPUs, at most 8)")
    parser.add_argument(
        "--name",
        help="the category's folder name (default avatarsSIZE; bench avatars --n N reads avatarsSIZE-nN)",
    )
    parser.add_argument(
        "--strays",
        type=int,
        metavar="N",
        help="draw the contamination pool of bench avatars --contamination instead: N faces with one part "
        "changed (and N normal ones), from seeds no other category draws, as avatarsSIZE-strays",
    )


def speed(parser: argparse.ArgumentParser) -> None:
    """The options of ``oddeye bench speed``."""
    parser.add_argument("--n", type=int, default=140001, help="images in the generated set")
    parser.add_argument("--detectors", default="fcn,cnn,cnn-bn,vae", help="comma-separated names")
    parser.add_argument(
        "--max-images",
        type=int,
        default=20000,
        help="both loops train on the first N images (0 = all): oddeye an untimed epoch then a timed "
        "one, the course loop one untimed batch then a timed pass",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TrainConfig.__dataclass_fields__["batch_size"].default,
        help="oddeye's batch size (the course loop always uses 2000)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="oddeye's training precision"
    )
    parser.add_argument(
        "--loops", default=",".join(LOOPS), help="which loops to measure: ours, course or both"
    )
    parser.add_argument("--data-dir", default=str(SCRATCH_DIR), help="where the generated .npy goes")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")


def large(parser: argparse.ArgumentParser) -> None:
    """The options of ``oddeye bench large``."""
    parser.add_argument("--n", type=int, default=1_000_000, help="images in the generated set")
    parser.add_argument("--detector", default="cnn", help="registry name")
    parser.add_argument("--train-images", type=int, default=5000, help="first images trained on (1 epoch)")
    parser.add_argument(
        "--format", default="npy", choices=["npy", "folder"], help="score the .npy, or a folder of PNG files"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")
    parser.add_argument("--data-dir", default=str(SCRATCH_DIR), help="where the generated .npy goes")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")


def homework(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench homework``."""
    parser.add_argument("--n", type=int, default=140_001, help="training images (default 140,001)")
    parser.add_argument("--test", type=int, default=19_999, help="test images (default 19,999)")
    parser.add_argument("--shape", type=parse_dims, default=(64, 64, 3), metavar="HxWxC", help="image shape")
    parser.add_argument("--detector", default="default", help="registry name (default: default)")
    parser.add_argument("--budget", help="passed to oddeye train (e.g. 20m); default: none")
    parser.add_argument("--goal", default="30m", help="the time goal for train + score (default 30m)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")
    parser.add_argument("--data-dir", default=str(SCRATCH_DIR), help="where the generated sets go")
    parser.add_argument(
        "--data",
        choices=("auto", "avatars", "generated"),
        default="auto",
        help="avatars: the avatars category of N faces (avatars64-nN: 'make bench-data-homework'), scored "
        "against its labels; generated: random images, time and memory only; auto (default): avatars "
        "where that category is there and the shape is 64x64x3",
    )
    parser.add_argument(
        "--avatars-dir", type=Path, default=AVATARS_DIR, help=f"where avatars64-nN is (default {AVATARS_DIR})"
    )
    add_output_arguments(parser)


def serve(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench serve``."""
    parser.add_argument("--detector", default="default", help="registry name (default: default)")
    parser.add_argument("--shape", type=parse_dims, default=(64, 64, 3), metavar="HxWxC", help="image shape")
    parser.add_argument("--n", type=int, default=2000, help="training images for the served model")
    parser.add_argument("--backends", default="onnx,run", help="onnx (onnxruntime), run (PyTorch) or both")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    parser.add_argument("--per-request", type=int, default=4, help="PNG images per request (default 4)")
    parser.add_argument("--bad-share", type=float, default=0.25, help="malformed share in phase 2")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--data-dir", default=str(SCRATCH_DIR), help="where the model and data go")
    add_output_arguments(parser)


def review(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench review``."""
    parser.add_argument("--detector", default="default", help="registry name (default: default)")
    parser.add_argument("--n", type=int, default=20000, help="images under review (default 20,000)")
    parser.add_argument("--train", type=int, default=2000, help="training images for the run (default 2,000)")
    parser.add_argument("--http-only", action="store_true", help="time plain HTTP requests, not Chromium")
    parser.add_argument("--data-dir", default=str(SCRATCH_DIR), help="where the images and the run go")
    add_output_arguments(parser)


def textures(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench textures``."""
    add_run_arguments(parser, TEXTURES_METHODS, contamination=False)
    parser.add_argument(
        "--textures",
        default="brick,grass,gravel",
        help="scikit-image's textures (default brick,grass,gravel)",
    )
    parser.add_argument(
        "--sizes", default="64,128", help="crop sides in pixels (default 64,128; 154 at most)"
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="the validation protocol (choose settings here): the training crops against more crops of "
        "the training rows, half given a synthetic blob, never the test's marks",
    )


def objects(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench objects``."""
    add_run_arguments(parser, TEXTURES_METHODS, contamination=False)
    parser.add_argument(
        "--objects",
        default="astronaut,coffee,chelsea",
        help="scikit-image's photographs standing for objects (default astronaut,coffee,chelsea)",
    )
    parser.add_argument("--sizes", default="256", help="image sides in pixels (default 256; 512 at most)")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.02,
        help="how far each shot moves: turns by up to 100 x this in degrees, scales by 1 +- this, "
        "shifts by this share of the side (default 0.02)",
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="the validation protocol (choose settings here): the training shots against fresh shots, "
        "half given a synthetic blob, never the test's marks",
    )


def outliers(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench outliers``."""
    parser.add_argument(
        "--classes", default="0,1,2,3,4,5,6,7,8,9", help="Fashion-MNIST classes (default all)"
    )
    parser.add_argument(
        "--planted", type=float, default=0.05, help="share of each class's images replaced (default 0.05)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=FMNIST_DIR, help=f"the idx files (default {FMNIST_DIR})"
    )
    add_output_arguments(parser)


def maps(parser: argparse.ArgumentParser) -> None:
    """``oddeye bench maps``."""
    parser.add_argument("--detectors", default="all", help="comma list of detectors, or all (default)")
    parser.add_argument("--classes", default="1,6,8", help="Fashion-MNIST classes trained on (default 1,6,8)")
    parser.add_argument(
        "--epochs", type=int, default=10, help="epoch cap of the trained detectors (default 10)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=FMNIST_DIR, help=f"the idx files (default {FMNIST_DIR})"
    )
    add_output_arguments(parser)
