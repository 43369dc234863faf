"""``oddeye bench maps``: how well each detector's anomaly map finds a pasted patch.

For each Fashion-MNIST class trained on: the class's 1,000 normal test images, each with a
rectangle (a quarter to a half of the side, at a random place) pasted in from the same place of a
test image of another class; the rectangle is the truth. Figure: the pixel AUROC of the maps over
all those pixels, beside a per-pixel baseline |x - the mean training image|.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

import oddeye
from oddeye.bench.common import export_checked
from oddeye.bench.oneclass import int_list, load_fmnist
from oddeye.bench.provenance import provenance
from oddeye.errors import OddeyeError
from oddeye.io import write_text
from oddeye.progress import Task

SEED = 0


def pasted(images: np.ndarray, others: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``images`` with a rectangle of a random other image pasted at the same place each, and the
    (N, H, W) masks of where."""
    n, h, w = images.shape[:3]
    out, masks = images.copy(), np.zeros((n, h, w), bool)
    for i in range(n):
        rh, rw = rng.integers(h // 4, h // 2 + 1), rng.integers(w // 4, w // 2 + 1)
        y, x = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        donor = others[rng.integers(len(others))]
        out[i, y : y + rh, x : x + rw] = donor[y : y + rh, x : x + rw]
        masks[i, y : y + rh, x : x + rw] = True
    return out, masks


def exported_parity(det: oddeye.Detector, name: str) -> dict[str, Any]:
    """``oddeye export``'s check for this fitted detector (saved to a scratch run first)."""
    with tempfile.TemporaryDirectory() as tmp:
        det.save(Path(tmp) / name)
        try:
            return export_checked(Path(tmp) / name, Path(tmp) / "model.onnx")
        except OddeyeError as e:
            return {"error": str(e)}


def run(args: argparse.Namespace) -> int:
    from oddeye.bench.report import write_markdown

    classes = int_list(args.classes, "classes", 0, 9)
    names = oddeye.available() if args.detectors == "all" else [d.strip() for d in args.detectors.split(",")]
    for name in names:
        oddeye.create(name)  # unknown names fail now
    data = load_fmnist(args.data_dir)
    context = provenance("cpu")
    rows: dict[str, dict[str, float]] = {"baseline |x - mean|": {}}
    parity: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    with Task("maps", len(classes) * (len(names) + 1), "runs") as task:
        for c in classes:
            train = data.train[data.train_classes == c]
            rng = np.random.default_rng(SEED + c)
            images, masks = pasted(data.test[data.test_classes == c], data.test[data.test_classes != c], rng)
            mean = train.astype(np.float64).mean(0)
            base = np.abs(images.astype(np.float64) - mean)
            base = base.sum(-1) if base.ndim == 4 else base
            rows["baseline |x - mean|"][str(c)] = float(roc_auc_score(masks.ravel(), base.ravel()))
            task.update()
            for name in names:
                start = time.perf_counter()
                det = oddeye.create(name, epochs=args.epochs, progress=False).fit(train)
                maps = det.infer(images, maps=True).anomaly_maps
                rows.setdefault(name, {})[str(c)] = float(roc_auc_score(masks.ravel(), maps.ravel()))
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
                if c == classes[0]:  # export each detector once: the parity table
                    parity[name] = exported_parity(det, name)
                task.update()
                task.set_postfix(last=f"{name} {data.class_names[c]} {rows[name][str(c)]:.3f}")
    record = {
        "benchmark": "maps",
        "dataset": "fmnist",
        "classes": classes,
        "class_names": [data.class_names[c] for c in classes],
        "epochs": args.epochs,
        "pixel_auroc": rows,
        "mean_pixel_auroc": {k: float(np.mean(list(v.values()))) for k, v in rows.items()},
        "seconds_per_class": {k: v / len(classes) for k, v in seconds.items()},
        "export_parity": parity,
        **context,
    }
    print(format_result(record))
    if not args.no_save:
        write_text(Path(args.results_dir) / "maps-fmnist.json", json.dumps(record, indent=2) + "\n")
        write_markdown(Path(args.results_dir), Path(args.markdown))
    return 0


def format_result(r: dict[str, Any]) -> str:
    head = f"{'map':<22}{'mean':>8}" + "".join(f"{n[:9]:>11}" for n in r["class_names"])
    lines = [f"pixel AUROC of anomaly maps on pasted patches (Fashion-MNIST, epochs {r['epochs']})", head]
    order = sorted(r["pixel_auroc"], key=lambda k: -r["mean_pixel_auroc"][k])
    for name in order:
        cells = "".join(f"{r['pixel_auroc'][name][str(c)]:11.3f}" for c in r["classes"])
        lines.append(f"{name:<22}{r['mean_pixel_auroc'][name]:8.3f}{cells}")
    return "\n".join(lines)
