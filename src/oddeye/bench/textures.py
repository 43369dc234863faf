"""``oddeye bench textures``: small marks on textures, with exact masks, from scikit-image's images.

The field's texture categories (fabric, wood, tiles, a grid) are not aligned objects: a patch of
them is best compared with training patches from anywhere, not only from its own place.
scikit-image ships three gray 512 x 512 textures: brick, grass and gravel. From each, SIZE-pixel
crops at seeded random places: ``TRAIN`` training crops from the top ``TRAIN_SHARE`` of the image,
and ``TEST`` normal test crops and as many marked ones from the rest (never a training pixel).
The marks are the ``--validation marks`` protocol's of ``oddeye bench avatars`` (a scratch, a stain,
a missing part, a third each; the mask is where a pixel changed). The same crops and marks for
every detector. Figures: image AUROC (per mark), pixel AUROC and AUPRO of the maps, seconds to
train and to score with maps. Needs scikit-image (``pip install scikit-image``, for this benchmark
only; its images ship inside its wheel).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from oddeye.bench.avatars import MARKS, local_anomalies, marks, score_streamed
from oddeye.bench.oneclass import (
    int_list,
    make_method,
    method_label,
    new_invocation,
    safe_name,
    settings_record,
)
from oddeye.bench.provenance import provenance
from oddeye.errors import InputError, OddeyeError
from oddeye.io import write_text

TEXTURES = ("brick", "grass", "gravel")
TRAIN, TEST = 200, 90  # training crops; normal test crops (and as many marked ones)
TRAIN_SHARE = 0.7  # of the image's rows the training crops come from (the top)
SEED = 0


def load_textures(names: tuple[str, ...] = TEXTURES) -> dict[str, np.ndarray]:
    """scikit-image's textures by name, (H, W, 1) uint8; a one-line error without scikit-image."""
    try:
        import skimage.data
    except ImportError:
        raise InputError(
            "oddeye bench textures", "scikit-image (pip install scikit-image)", "it is not installed"
        ) from None
    return {name: np.asarray(getattr(skimage.data, name)(), np.uint8)[..., None] for name in names}


def crops(
    image: np.ndarray, n: int, side: int, rows: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """(n, side, side, C) crops of ``image`` at random places inside the rows ``rows``."""
    top, bottom = rows
    if bottom - top < side or image.shape[1] < side:
        most = min(bottom - top, image.shape[1])
        raise OddeyeError(
            f"crops of {side} px: expected at most {most} px (the rows they come from), found {side}"
        )
    ys = rng.integers(top, bottom - side + 1, n)
    xs = rng.integers(0, image.shape[1] - side + 1, n)
    return np.stack([image[y : y + side, x : x + side] for y, x in zip(ys, xs, strict=True)])


@dataclasses.dataclass
class TextureSet:
    """One marked set at one size (a texture's crops, an object's shots): training images, test
    images (normal first), their masks and marks."""

    name: str
    train: np.ndarray
    test: np.ndarray
    masks: np.ndarray  # (N, side, side) bool
    kinds: list[str]  # per test image: "good" or the mark's kind
    about: dict[str, Any] = dataclasses.field(default_factory=dict)  # how the images were made, for records


def texture_set(
    name: str, image: np.ndarray, side: int, seed: int = SEED, validation: bool = False
) -> TextureSet:
    """The crops of one texture at ``side`` pixels, seeded by the texture's name and ``seed``; a
    marked crop whose mark changed no pixel beyond the marks' tolerance is left out. ``validation``:
    the same training crops, tested against ``TEST`` more crops of the training rows and as many
    given a synthetic blob each (``bench avatars --validation``'s, defect "synthetic"), never the
    marks: where settings for textures are chosen. Those crops overlap training crops (the rows are
    the same), as a held-out image of a texture overlaps in what it shows."""
    rng = np.random.default_rng([seed, side, *name.encode()])
    cut = int(TRAIN_SHARE * image.shape[0])
    train = crops(image, TRAIN, side, (0, cut), rng)
    if validation:
        rng, rows = np.random.default_rng([seed, side, *name.encode(), 1]), (0, cut)
    else:
        rows = (cut, image.shape[0])
    return marked_set(name, train, lambda: crops(image, TEST, side, rows, rng), rng, validation)


def marked_set(
    name: str,
    train: np.ndarray,
    draw: Callable[[], np.ndarray],
    rng: np.random.Generator,
    validation: bool,
    about: dict[str, Any] | None = None,
) -> TextureSet:
    """A :class:`TextureSet` of ``train`` and ``TEST`` normal test images from ``draw()``, then
    ``TEST`` more from it given a mark each (``validation``: a synthetic blob each); a marked image
    whose mark changed no pixel beyond the marks' tolerance (a faint stain on a small image) is
    left out."""
    normal = draw()
    if validation:
        marked, masks = local_anomalies(draw(), rng)
        kinds = ["synthetic"] * TEST
    else:
        marked, masks, kinds = marks(draw(), rng)
    seen = masks.reshape(len(masks), -1).any(1)
    return TextureSet(
        name,
        train,
        np.concatenate([normal, marked[seen]]),
        np.concatenate([np.zeros(normal.shape[:3], bool), masks[seen]]),
        ["good"] * len(normal) + [k for k, s in zip(kinds, seen, strict=True) if s],
        about or {},
    )


def measure(method: Any, data: TextureSet) -> dict[str, Any]:
    """Train ``method`` on the set's crops, score its test crops with maps: the figures."""
    from sklearn.metrics import roc_auc_score

    from oddeye.pixel_metrics import per_defect_auroc

    start = time.perf_counter()
    method.fit(data.train)
    train_seconds = time.perf_counter() - start
    masks = SimpleNamespace(masks=SimpleNamespace(mask=lambda i: data.masks[i]))  # as a GroundTruth's
    out = score_streamed(method, data.test, masks, np.arange(len(data.test)))
    labels = np.array([kind != "good" for kind in data.kinds], int)
    found, pixels, score_seconds = out["scores"], out["pixels"], out["score_seconds"]
    model = getattr(method, "model_", None)
    local = [  # where the patch members looked for a patch's nearest, and how far around its place
        m.matching if m.matching != "near" else f"near, radius {m.reach}"
        for m in getattr(model, "detectors", [model])
        if hasattr(m, "matching")
    ]
    return {
        "image_auroc": float(roc_auc_score(labels, found)),
        "per_defect_auroc": per_defect_auroc(found, labels, data.kinds),
        "pixel_auroc": None if pixels is None else pixels.pixel_auroc,
        "aupro": None if pixels is None else pixels.aupro,
        "train_seconds": train_seconds,
        "score_seconds": score_seconds,
        "patches_matched": local,  # where the patch members looked for a patch's nearest
    }


def run(args: argparse.Namespace) -> int:
    """``oddeye bench textures``: every method on every texture and size, records, markdown."""
    sizes = int_list(args.sizes, "sizes", 8)
    textures = tuple(t.strip() for t in args.textures.split(",") if t.strip())
    unknown = sorted(set(textures) - set(TEXTURES))
    if unknown:
        raise OddeyeError(f"--textures: expected some of {', '.join(TEXTURES)}, found {', '.join(unknown)}")
    images = load_textures(textures)
    sets = (
        (size, texture_set(texture, image, size, validation=args.validation))
        for size in sizes
        for texture, image in images.items()
    )
    return run_sets(args, "textures", "texture", sets)


def run_sets(
    args: argparse.Namespace, benchmark: str, key: str, sets: Iterator[tuple[int, TextureSet]]
) -> int:
    """Every method of ``args.detectors`` on each (size, marked set) of ``sets``: a record per
    pair (``benchmark``-[val-]NAMESIZE-LABEL.json, the set's name under ``key``), the table,
    the markdown. Shared by ``bench textures`` and ``bench objects``."""
    from oddeye.bench.report import marked_sets_table, regenerate

    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    if int_list(args.seeds, "seeds") != [SEED]:
        raise OddeyeError(
            f"--seeds: expected {SEED} (images, marks and detectors are seeded once), found {args.seeds}"
        )
    if args.label and len(names) != 1:
        raise OddeyeError("--label names the results of one detector; give one name in --detectors")
    settings = dict(args.settings)
    invocation, results = new_invocation(), []
    for size, data in sets:
        dataset = (
            f"{data.name}{'-' if data.name[-1:].isdigit() else ''}{size}"  # coffee256, coffee-jitter0.04-256
        )
        for name in names:
            label = args.label or method_label(name, settings)
            r = measure(make_method(name, SEED, settings), data)
            record = {
                "benchmark": benchmark,
                "protocol": "validation" if args.validation else "test",
                "dataset": dataset,
                key: data.name,
                "size": size,
                "detector": name,
                "label": label,
                "invocation": invocation,
                "settings": settings_record(name, settings),
                "data": {
                    "n_train": len(data.train),
                    "n_test_good": data.kinds.count("good"),
                    "marked": {k: data.kinds.count(k) for k in sorted(set(data.kinds) - {"good"})},
                    "seed": SEED,
                    **data.about,
                },
                **r,
                **provenance("cpu"),
            }
            results.append(record)
            kinds = " / ".join(f"{r['per_defect_auroc'][k]:.3f}" for k in MARKS if k in r["per_defect_auroc"])
            pixel = "-" if r["aupro"] is None else f"{r['pixel_auroc']:.3f} / {r['aupro']:.3f}"
            print(
                f"{dataset} {label}: image AUROC {r['image_auroc']:.3f} ({kinds}), pixel AUROC / "
                f"AUPRO {pixel}, {r['train_seconds']:.0f} + {r['score_seconds']:.0f} s",
                flush=True,
            )
            if not args.no_save:
                val = "val-" if args.validation else ""
                file = f"{benchmark}-{val}{dataset}-{safe_name(label)}.json"
                write_text(Path(args.results_dir) / file, json.dumps(record, indent=2) + "\n")
    print(marked_sets_table(results, benchmark, key))
    regenerate(args)
    return 0
