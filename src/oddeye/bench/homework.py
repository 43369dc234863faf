"""The homework's job end to end at its real size: ``oddeye train`` then ``oddeye score``.

``run`` generates seeded uint8 sets of the homework's shape (140,001 training and 19,999 test
images of 64x64x3 unless told otherwise; the same generator as ``oddeye bench speed``), runs the
two commands exactly as a student would, each in a fresh process, and records each one's wall
time and peak RSS (``wait4``: that process alone, memory-mapped pages included) against the
budgets: the time goal, and 2x the training set's uint8 size for memory. Figures only.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from oddeye.bench.common import generate_images, measured_oddeye
from oddeye.bench.provenance import provenance
from oddeye.errors import OddeyeError
from oddeye.io import write_text
from oddeye.progress import clock

MEMORY_BUDGET = 2.0  # x the training set's uint8 size


def run(args: argparse.Namespace) -> int:
    from oddeye.bench.report import write_markdown
    from oddeye.config import parse_duration

    shape = tuple(args.shape) if len(args.shape) == 3 else (*args.shape, 1)
    if args.n < 2 or args.test < 1:
        raise OddeyeError(f"--n {args.n} / --test {args.test}: expected at least 2 training and 1 test image")
    try:
        goal = parse_duration(args.goal)
    except ValueError:
        raise OddeyeError(f"--goal: expected a time like 30m, found {args.goal!r}") from None
    folder = Path(args.data_dir)
    tag = f"{'x'.join(map(str, shape))}"
    faces = avatars_category(args, shape)
    if faces is not None:  # the avatars at this size: a set with labels, so the run's quality too
        train, test, truth = avatars_sets(faces, folder)
        args.test, tag = len(truth.labels), f"{tag}-{faces.name}"
    else:
        train = generate_images(folder / f"homework-train-{args.n}-{tag}.npy", args.n, seed=1, shape=shape)
        test = generate_images(
            folder / f"homework-test-{args.test}-{tag}.npy", args.test, seed=2, shape=shape
        )
        truth = None
    run_dir, csv = (
        folder / f"homework-run-{args.detector}-{tag}",
        folder / f"homework-{args.detector}-{tag}.csv",
    )
    train_cmd = ["train", str(train), "--detector", args.detector, "--out", str(run_dir), "--force"]
    train_cmd += ["--device", args.device] + (["--budget", args.budget] if args.budget else [])
    trained = measured_oddeye(train_cmd)
    scored = measured_oddeye(["score", str(run_dir), str(test), "--out", str(csv), "--device", args.device])
    training = json.loads((run_dir / "model.json").read_text())["training"]
    context = provenance(training["device"])  # the device the run trained on
    nbytes = args.n * math.prod(shape)
    record: dict[str, Any] = {
        "benchmark": "homework",
        "detector": args.detector,
        "budget": args.budget,
        "shape": list(shape),
        "n_train": args.n,
        "n_test": args.test,
        "train_uint8_bytes": nbytes,
        "goal_s": goal,
        "train": trained,
        "score": scored,
        "total_s": trained["seconds"] + scored["seconds"],
        "peak_rss_bytes": max(trained["peak_rss_bytes"], scored["peak_rss_bytes"]),
        "memory_budget_bytes": MEMORY_BUDGET * nbytes,
        "plan": training.get("plan"),
        "data": "generated" if faces is None else faces.name,
        **({} if truth is None else quality(csv, truth)),
        "commands": [f"oddeye {' '.join(train_cmd)}", f"oddeye score {run_dir} {test} --out {csv}"],
        **context,
    }
    print(format_result(record))
    if not args.no_save:
        name = (
            f"homework-{args.detector}-{args.n}x{tag}{'-budget-' + args.budget if args.budget else ''}.json"
        )
        write_text(Path(args.results_dir) / name, json.dumps(record, indent=2) + "\n")
        write_markdown(Path(args.results_dir), Path(args.markdown))
    return 0


def avatars_category(args: argparse.Namespace, shape: tuple[int, ...]) -> Path | None:
    """The avatars category of ``args.n`` faces (``avatars64-nN``) that ``--data`` asks for:
    ``avatars`` needs it (an error says how to make it), ``auto`` takes it where it is there and the
    shape is its own, ``generated`` never."""
    from oddeye.bench.avatars import category_dir

    if args.data == "avatars" and shape != (64, 64, 3):
        raise OddeyeError(f"--data avatars: expected --shape 64x64x3, found {'x'.join(map(str, shape))}")
    if args.data == "generated" or (args.data == "auto" and shape != (64, 64, 3)):
        return None
    try:
        return category_dir(Path(args.avatars_dir), 64, args.n)
    except OddeyeError:
        if args.data == "auto":
            return None
        raise


def avatars_sets(category: Path, folder: Path) -> tuple[Path, Path, Any]:
    """(training .npy, test .npy, ground truth): the category's faces as the homework's two files
    (made once in ``folder``), the test images in sorted path order."""
    import numpy as np

    from oddeye.bench.avatars import training_copy
    from oddeye.data import ground_truth, load_images
    from oddeye.io import atomic_path

    train = training_copy(category, folder)
    test = folder / f"{category.name}-test.npy"
    found = load_images(category / "test", progress=False)
    truth = ground_truth(category, paths=found.paths)
    if not test.is_file() or test.stat().st_mtime < (category / "avatars.json").stat().st_mtime:
        with atomic_path(test) as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(found.array))
    return train, test, truth


def quality(csv: Path, truth: Any) -> dict[str, Any]:
    """The scored CSV's image AUROC against the ground truth, overall and per defect."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from oddeye.pixel_metrics import per_defect_auroc

    scores = np.loadtxt(csv, delimiter=",", skiprows=1, usecols=1, ndmin=1)
    if len(scores) != len(truth.labels):
        raise OddeyeError(f"{csv}: expected {len(truth.labels)} scores, found {len(scores)}")
    return {
        "image_auroc": float(roc_auc_score(truth.labels, scores)),
        "per_defect_auroc": per_defect_auroc(scores, truth.labels, truth.defects),
    }


def format_result(r: dict[str, Any]) -> str:
    gb = r["train_uint8_bytes"] / 1e9
    rss = r["peak_rss_bytes"] / 1e9
    m = r["machine"]
    shape = "x".join(map(str, r["shape"]))
    budget = f", --budget {r['budget']}" if r.get("budget") else ""
    within = "within" if r["total_s"] <= r["goal_s"] else "OVER"
    return "\n".join(
        [
            f"{r['detector']}{budget}: train on {r['n_train']:,} x {shape} uint8 ({gb:.2f} GB), "
            f"score {r['n_test']:,} images",
            f"  machine: {m.get('gpu') or m['cpu']}, device {m['device']}, {m['torch_threads']} threads",
            f"  train {clock(r['train']['seconds'])} (peak RSS {r['train']['peak_rss_bytes'] / 1e9:.2f} GB), "
            f"score {clock(r['score']['seconds'])} (peak RSS {r['score']['peak_rss_bytes'] / 1e9:.2f} GB)",
            f"  end to end {clock(r['total_s'])}: {within} the {clock(r['goal_s'])} goal",
            f"  peak RSS {rss:.2f} GB = {rss / gb:.2f}x the training set's uint8 size "
            f"(budget {MEMORY_BUDGET:g}x)",
            *(
                [f"  image AUROC on {r['data']}: {r['image_auroc']:.4f}"]
                if r.get("image_auroc") is not None
                else []
            ),
        ]
    )
