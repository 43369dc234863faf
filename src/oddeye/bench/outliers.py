"""``oddeye bench outliers``: how well ``oddeye outliers`` finds images planted in a set.

For each Fashion-MNIST class: its 6,000 training images with a share (``--planted``, default 5%)
replaced by other classes' training images (``oneclass.contaminate``, the contamination protocol's
draw); the planted images are the truth. Figures: precision among the top-ranked share (as many
images as were planted) and the AUROC of the ranking, for ``oddeye outliers`` and, where cleanlab
is installed (``pip install 'cleanlab[datalab]'``, for this benchmark only), cleanlab's Datalab
outlier issue on the same raw pixels (its k-NN outlier score; lower = more outlying).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

import oddeye
from oddeye.bench.oneclass import contaminate, int_list, load_fmnist
from oddeye.bench.provenance import provenance
from oddeye.io import write_text
from oddeye.progress import Task

SEED = 0


def precision_at(scores: np.ndarray, truth: np.ndarray) -> float:
    """Share of the planted images among the ``truth.sum()`` highest ``scores``."""
    k = int(truth.sum())
    return float(truth[np.argsort(-scores, kind="stable")[:k]].mean()) if k else float("nan")


def cleanlab_scores(images: np.ndarray) -> np.ndarray | None:
    """cleanlab Datalab's outlier issue on raw pixels, as higher = more outlying (None: no cleanlab)."""
    try:
        from cleanlab import Datalab
    except ImportError:
        return None
    features = images.reshape(len(images), -1).astype(np.float32) / 255.0
    lab = Datalab(data={"id": list(range(len(images)))}, verbosity=0)
    lab.find_issues(features=features, issue_types={"outlier": {}})
    return -lab.get_issues("outlier")["outlier_score"].to_numpy(np.float64)


def run(args: argparse.Namespace) -> int:
    from oddeye.bench.report import write_markdown

    classes = int_list(args.classes, "classes", 0, 9)
    data = load_fmnist(args.data_dir)
    context = provenance("cpu")
    methods: dict[str, dict[str, dict[str, float]]] = {}
    with Task("outliers", len(classes), "classes") as task:
        for c in classes:
            own = data.train[data.train_classes == c]
            images, planted = contaminate(
                own, data.train, args.planted, SEED, str(c), np.flatnonzero(data.train_classes != c)
            )
            truth = np.zeros(len(images), bool)
            truth[planted] = True
            start = time.perf_counter()
            ours = oddeye.outliers(images, progress=False).scores
            found = {"oddeye outliers": (ours, time.perf_counter() - start)}
            start = time.perf_counter()
            theirs = cleanlab_scores(images)
            if theirs is not None:
                found["cleanlab Datalab outlier (raw pixels)"] = (theirs, time.perf_counter() - start)
            for name, (scores, seconds) in found.items():
                methods.setdefault(name, {})[str(c)] = {
                    "precision_at_planted": precision_at(scores, truth),
                    "auroc": float(roc_auc_score(truth, scores)),
                    "seconds": seconds,
                }
            task.update()
            task.set_postfix(
                last=f"{data.class_names[c]} {methods['oddeye outliers'][str(c)]['precision_at_planted']:.2f}"
            )
    record = {
        "benchmark": "outliers",
        "dataset": "fmnist",
        "planted": args.planted,
        "classes": classes,
        "class_names": [data.class_names[c] for c in classes],
        "methods": methods,
        "mean": {
            name: {key: float(np.mean([r[key] for r in rows.values()])) for key in next(iter(rows.values()))}
            for name, rows in methods.items()
        },
        **context,
    }
    print(format_result(record))
    if not args.no_save:
        name = f"outliers-fmnist-planted{args.planted:g}.json"
        write_text(Path(args.results_dir) / name, json.dumps(record, indent=2) + "\n")
        write_markdown(Path(args.results_dir), Path(args.markdown))
    return 0


def format_result(r: dict[str, Any]) -> str:
    head = f"{'method':<40}{'P@planted':>10}{'AUROC':>8}" + "".join(f"{n[:8]:>9}" for n in r["class_names"])
    lines = [
        f"planted {r['planted']:g} of each Fashion-MNIST class's training images: precision at planted",
        head,
    ]
    for name, rows in r["methods"].items():
        m = r["mean"][name]
        cells = "".join(f"{rows[str(c)]['precision_at_planted']:9.3f}" for c in r["classes"])
        lines.append(f"{name:<40}{m['precision_at_planted']:10.3f}{m['auroc']:8.3f}{cells}")
    return "\n".join(lines)
