"""``oddeye bench avatars``: local anomalies with exact masks, cartoon faces at 64, 256 and 1024 pixels.

The data (``oddeye bench avatars-data``, run by ``make bench-data``; see ``avatars_data``): MVTec
AD folders ``avatarsSIZE/``, normal DiceBear faces to train on, and test faces half normal, half
with one odd part (a vomiting mouth, a skull on the shirt, a magnum moustache; about 1-1.5% of
the image) whose masks are exactly where the drawing changed.

For each size and detector: fit on ``train/good`` through the public API, score ``test/`` with
maps batch by batch, and record the image AUROC (overall and per defect), the pixel AUROC and
AUPRO (FPR <= 0.3) of the maps, train and score seconds, and the peak RSS against the uint8 size
of the data (the goal: at most twice that plus 1 GB). Each run is a fresh process, so its peak
RSS is its own. ``knn`` is the 1-NN reference on raw pixels; its map is the squared difference
to the nearest training image.

``--validation`` is the protocol settings are chosen on (never the test split): each category's
``train/good`` split in six at random (seeded), five to train on, the sixth to test: half of it as
it is, half given one synthetic local anomaly each (:func:`local_anomalies`: an ellipse of 0.3-3% of
the image filled with a patch of another held-out face from elsewhere, tinted, or a flat colour),
its mask the pixels that changed. ``--validation marks`` gives the same held-out faces marks of
other kinds instead (:func:`marks`: a thin scratch, a translucent stain, a missing part filled with
the background), a third of each: local anomalies of other shapes than the test's parts and the
blobs', on which map settings can be told apart (every map localises the blobs alike).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import oddeye
from oddeye.bench.avatars_data import DEFECT_NAMES, category_name, strays_name
from oddeye.bench.classical import CLASSICAL
from oddeye.bench.common import SCRATCH_DIR, contamination_desc, contamination_suffix
from oddeye.bench.oneclass import (
    Estimator,
    contaminate,
    fractions,
    int_list,
    make_method,
    new_invocation,
    safe_name,
    settings_record,
    with_full_banks,
)
from oddeye.errors import OddeyeError
from oddeye.io import write_text

BATCH = 32  # test images a reference (knn) scores at a time; detectors use their score_batch_size
RSS_SLACK = 10**9  # the memory goal: peak RSS <= 2 x the uint8 data + 1 GB
MIX_SEED = 0  # the order the test images are scored in: normal and anomalous mixed
VAL_SEED = 0  # the validation protocol's split and synthetic anomalies
VAL_SHARE = 1 / 6  # of train/good held out to validate on
VAL_AREA = (0.003, 0.03)  # a synthetic anomaly's share of the image
VAL_TOLERANCE = 12  # a pixel changed by more than this in some channel is in the mask
VAL_KINDS = ("blobs", "marks")  # the validation protocol's synthetic anomalies: local_anomalies, marks
MARKS = ("scratch", "stain", "missing")  # marks' kinds, a third each (in turn)


@dataclass(frozen=True)
class Job:
    """One run: ``detector`` (seeded) trained and scored on the category folder ``category``."""

    category: str
    detector: str
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    validation: str = ""  # the validation protocol's kind of anomalies (VAL_KINDS; "": the test split)
    contamination: float = 0.0  # the share of train/good replaced by faces of avatarsSIZE-strays


def results_of(method: Estimator, images: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(scores (B,), maps (B, H, W) or None) batch by batch, in order: a detector's own streaming
    (:meth:`~oddeye.Detector.iter_infer`), a reference's ``BATCH`` images at a time."""
    if isinstance(method, oddeye.Detector):
        for out in method.iter_infer(method.prepare(images), maps=True):
            yield out.scores, out.anomaly_maps
        return
    for start in range(0, len(images), BATCH):
        x = images[start : start + BATCH]
        yield method.score_maps(x) if hasattr(method, "score_maps") else (method.score(x), None)


def score_streamed(method: Estimator, images: np.ndarray, truth: Any, order: np.ndarray) -> dict[str, Any]:
    """Scores and pixel metrics of test images given as ``images[k]`` = ``truth``'s image
    ``order[k]`` (a :class:`~oddeye.data.masks.GroundTruth`'s order, shuffled so that a binned
    :class:`~oddeye.pixel_metrics.PixelEvaluator` fixes its bins on normal and anomalous pixels
    both); the maps come and go a batch at a time. Scores are returned in ``truth``'s order."""
    from oddeye.pixel_metrics import PixelEvaluator

    scores = np.empty(len(images), np.float64)
    evaluator, seconds, done, with_maps = PixelEvaluator(), 0.0, 0, True
    batches = results_of(method, images)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        seconds += time.perf_counter() - start
        if batch is None:
            break
        rows = order[done : done + len(batch[0])]
        scores[rows], maps = batch
        done += len(rows)
        with_maps = with_maps and maps is not None
        if with_maps:
            masks = np.stack([truth.masks.mask(int(i)) for i in rows])
            if maps.shape != masks.shape:  # maps come at the input's size, the images' own here
                raise OddeyeError(
                    f"anomaly maps {maps.shape[1:]}: expected the images' size {masks.shape[1:]}"
                )
            evaluator.add(maps, masks)
    return {"scores": scores, "pixels": evaluator.result() if with_maps else None, "score_seconds": seconds}


def measure(job: Job) -> dict[str, Any]:
    """Train and score one job, in this process (a fresh one: its peak RSS is the run's)."""
    import dataclasses
    import resource

    from sklearn.metrics import roc_auc_score

    from oddeye.bench.provenance import provenance
    from oddeye.data import ground_truth, load_images
    from oddeye.pixel_metrics import per_defect_auroc

    category = Path(job.category)
    train = training_images(category)
    planted: dict[str, int] = {}
    if job.contamination:
        train, planted = contaminated(np.asarray(train), category, job.contamination, job.seed)
    if job.validation:
        train, test_images, truth = validation_split(np.asarray(train), str(category), job.validation)
    else:
        test = load_images(category / "test", progress=False)
        truth, test_images = ground_truth(category, paths=test.paths), test.array
    order = np.random.default_rng(MIX_SEED).permutation(len(test_images))
    data_bytes, n_test = int(train.nbytes + test_images.nbytes), len(test_images)
    mixed = np.asarray(test_images)[order]  # (N, H, W, C) uint8: replaces the loaded order
    del test_images
    start = time.perf_counter()
    method = make_method(job.detector, job.seed, job.settings)
    method.fit(train)
    train_seconds = time.perf_counter() - start
    out = score_streamed(method, mixed, truth, order)
    pixels = out["pixels"]
    return {
        "seed": job.seed,
        "image_auroc": float(roc_auc_score(truth.labels, out["scores"])),
        "per_defect_auroc": per_defect_auroc(out["scores"], truth.labels, truth.defects),
        "pixel_auroc": None if pixels is None else pixels.pixel_auroc,
        "aupro": None if pixels is None else pixels.aupro,
        "pixel_evaluation": None if pixels is None else dataclasses.asdict(pixels),
        "train_seconds": train_seconds,
        "score_seconds": out["score_seconds"],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "data_bytes": data_bytes,
        "n_train": len(train),
        "n_test": n_test,
        "planted": planted,
        "provenance": provenance(getattr(method, "device_", "cpu")),
    }


def strays_folders(category: Path, fraction: float, n_train: int) -> list[Path]:
    """The defect folders of the contamination pool beside ``category`` (``avatarsSIZE-strays``),
    or an error saying how to draw it when it is absent or holds fewer faces than ``fraction`` of
    ``n_train`` (files counted, nothing decoded)."""
    size = json.loads((category / "avatars.json").read_text())["size"]
    pool = category.parent / strays_name(size)
    folders = [pool / "test" / d for d in DEFECT_NAMES]
    if not (pool / "avatars.json").is_file() or not all(f.is_dir() for f in folders):
        raise OddeyeError(
            f"{pool}: expected the avatars contamination pool (avatars.json, test/DEFECT/), found it "
            f"missing; run 'make bench-data' or 'oddeye bench avatars-data --size {size} --strays 300 --out "
            f"{category.parent}'"
        )
    k, found = int(round(fraction * n_train)), sum(len(list(f.glob("*.png"))) for f in folders)
    if k > found:
        raise OddeyeError(
            f"--contamination {fraction:g} of {category.name}: expected at least {k} faces in "
            f"{pool.name}, found {found}; draw more with 'oddeye bench avatars-data --strays N'"
        )
    return folders


def contaminated(
    train: np.ndarray, category: Path, fraction: float, seed: int
) -> tuple[np.ndarray, dict[str, int]]:
    """(training images, faces planted per defect): ``fraction`` of ``train`` replaced by faces of
    the contamination pool (:func:`strays_folders`), drawn as every benchmark's contamination is
    (:func:`~oddeye.bench.oneclass.contaminate`: seeded by the seed, the category and the fraction,
    so every detector of a run trains on the same faces)."""
    from oddeye.data import load_images

    parts = [load_images(f, progress=False).array for f in strays_folders(category, fraction, len(train))]
    pool = np.concatenate(parts)
    kinds = np.concatenate([np.full(len(p), d) for p, d in zip(parts, DEFECT_NAMES, strict=True)])
    # the draw on indices (the same draw: it depends on the sizes, the seed, the key and the
    # fraction alone), so that the record can say which defects went in
    drawn, positions = contaminate(
        np.full(len(train), -1), np.arange(len(pool)), fraction, seed, category.name
    )
    images = train.copy()
    images[positions] = pool[drawn[positions]]
    planted = kinds[drawn[positions]].tolist()
    return images, {d: planted.count(d) for d in DEFECT_NAMES}


def validation_split(
    train: np.ndarray, source: str, kinds: str = "blobs"
) -> tuple[np.ndarray, np.ndarray, Any]:
    """(training images, validation images, their ground truth): ``VAL_SHARE`` of ``train`` held
    out at random, the second half of it given one synthetic local anomaly each: ``kinds``
    "blobs" (:func:`local_anomalies`, defect "synthetic") or "marks" (:func:`marks`, defects named
    by kind). The held-out faces are the same for both; an image whose anomaly changed no pixel
    counts as normal."""
    import dataclasses

    from oddeye.data import ground_truth

    if kinds not in VAL_KINDS:
        raise OddeyeError(f"--validation: expected one of {', '.join(VAL_KINDS)}, found {kinds!r}")
    rng = np.random.default_rng(VAL_SEED)
    held = np.sort(rng.permutation(len(train))[: max(2, round(VAL_SHARE * len(train)))])
    rest = np.setdiff1d(np.arange(len(train)), held)
    val = train[held].copy()
    half = len(val) // 2
    if kinds == "blobs":
        val[half:], changed = local_anomalies(val[half:], rng)
        names = ["synthetic"] * (len(val) - half)
    else:
        val[half:], changed, names = marks(val[half:], rng)
    masks = np.zeros(val.shape[:3], bool)
    masks[half:] = changed
    labels = masks.reshape(len(val), -1).any(1).astype(np.int64)
    truth = ground_truth(labels=labels, masks=masks, scores_source=f"{source} (validation)")
    defects = ["good"] * half + names
    truth = dataclasses.replace(truth, defects=tuple(d if y else "good" for d, y in zip(defects, labels)))
    return train[rest], val, truth


def marks(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, (N, H, W) masks, kinds): each uint8 image given one mark of the kinds ``MARKS`` in
    turn, sized by the image's side:
    - a scratch: a slightly bent line 15-40% of the side long and 0.4-1.2% wide (at least a pixel),
      dark, light or of a random colour;
    - a stain: a soft translucent blob (a Gaussian of 3-8% of the side, stretched up to 1.4x, at
      most 35-60% opaque) of a random brownish colour;
    - a missing part: a rectangle of 6-12% of the side filled with the image's background (the
      median colour of its border).
    The mask is where a channel changed by more than ``VAL_TOLERANCE``."""
    from PIL import Image, ImageDraw

    out = images.copy()
    n, h, w = images.shape[:3]
    side = min(h, w)
    kinds = [MARKS[i % len(MARKS)] for i in range(n)]
    for i, kind in enumerate(kinds):
        img = images[i]
        if kind == "scratch":
            rgb = img[..., :3] if img.shape[2] >= 3 else np.repeat(img, 3, -1)
            im = Image.fromarray(np.ascontiguousarray(rgb))
            length, angle = rng.uniform(0.15, 0.4) * side, rng.uniform(0, np.pi)
            x0, y0 = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
            bend = rng.normal(0, 0.01 * side, (5, 2))
            points = [
                (x0 + t * length * np.cos(angle) + dx, y0 + t * length * np.sin(angle) + dy)
                for t, (dx, dy) in zip(np.linspace(-0.5, 0.5, 5), bend, strict=True)
            ]
            shade = rng.random()
            colour = rng.integers(0, 256, 3) if shade < 0.5 else np.full(3, 40 if shade < 0.75 else 230)
            width = max(1, int(round(rng.uniform(0.004, 0.012) * side)))
            ImageDraw.Draw(im).line(points, fill=tuple(int(v) for v in colour), width=width)
            drawn = np.asarray(im)
            out[i] = drawn if img.shape[2] >= 3 else drawn.mean(-1, keepdims=True).round().astype(np.uint8)
        elif kind == "stain":
            r = rng.uniform(0.03, 0.08) * side
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            yy, xx = np.mgrid[:h, :w]
            stretch = rng.uniform(0.6, 1.4)
            blob = np.exp(-2 * (((xx - cx) / r) ** 2 + ((yy - cy) / (r * stretch)) ** 2))
            alpha = (blob * rng.uniform(0.35, 0.6))[..., None]
            colour = np.array([rng.uniform(60, 140), rng.uniform(40, 90), rng.uniform(10, 50)])
            colour = colour[: img.shape[2]] if img.shape[2] >= 3 else colour.mean(keepdims=True)
            out[i] = np.clip(img * (1 - alpha) + colour * alpha, 0, 255).round().astype(np.uint8)
        else:
            border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
            rh = max(2, int(rng.uniform(0.06, 0.12) * h))
            rw = max(2, int(rh * rng.uniform(0.7, 1.4)))
            rw = min(rw, w - 2)
            y0, x0 = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
            out[i, y0 : y0 + rh, x0 : x0 + rw] = np.median(border, 0).round().astype(np.uint8)
    masks = np.abs(out.astype(np.int16) - images.astype(np.int16)).max(-1) > VAL_TOLERANCE
    return out, masks, kinds


def local_anomalies(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(images, (N, H, W) masks): each uint8 image given one elliptic region of ``VAL_AREA`` of its
    area, filled (a kind drawn per image) with a patch of another of the images from elsewhere,
    the region itself tinted, or a flat colour; the mask is where a channel changed by more than
    ``VAL_TOLERANCE``. Written here, apart from the detectors' own synthetic anomalies (which
    ``local-net`` trains on), so the protocol favours no detector's recipe."""
    out = images.copy()
    n, h, w = images.shape[:3]
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        area = rng.uniform(*VAL_AREA) * h * w
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        rh = int(np.clip(round(np.sqrt(area * aspect)), 2, h - 1))
        rw = int(np.clip(round(area / rh), 2, w - 1))
        y0, x0 = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        yy, xx = np.mgrid[:rh, :rw]
        inside = ((yy + 0.5 - rh / 2) / (rh / 2)) ** 2 + ((xx + 0.5 - rw / 2) / (rw / 2)) ** 2 <= 1
        region = out[i, y0 : y0 + rh, x0 : x0 + rw].astype(np.int64)
        kind = rng.integers(3)
        if kind == 0:  # another image's patch, from another place
            sy, sx = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
            fill = images[(i + 1 + rng.integers(max(1, n - 1))) % n, sy : sy + rh, sx : sx + rw].astype(
                np.int64
            )
        elif kind == 1:  # the region tinted
            fill = region + rng.integers(-100, 101, images.shape[3])
        else:  # a flat colour
            fill = np.broadcast_to(rng.integers(0, 256, images.shape[3]), region.shape)
        new = np.where(inside[..., None], np.clip(fill, 0, 255), region)
        out[i, y0 : y0 + rh, x0 : x0 + rw] = new
        masks[i, y0 : y0 + rh, x0 : x0 + rw] = np.abs(new - region).max(-1) > VAL_TOLERANCE
    return out, masks


def _measure_safely(job: Job) -> dict[str, Any]:
    """:func:`measure`, its oddeye errors passed back as text (some do not survive pickling)."""
    try:
        return measure(job)
    except OddeyeError as e:
        return {"error": str(e)}


def in_fresh_process(job: Job) -> dict[str, Any]:
    """:func:`measure` in a new (spawned) interpreter, so that nothing of this one counts."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = pool.submit(_measure_safely, job).result()
    if "error" in result:
        raise OddeyeError(result["error"])
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds (the largest peak RSS), and the memory goal."""

    def mean(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return float(np.mean(values)) if values else None

    kinds = sorted({d for r in runs for d in r["per_defect_auroc"]})

    data = runs[0]["data_bytes"]
    peak = max(r["peak_rss_bytes"] for r in runs)
    return {
        "image_auroc": mean("image_auroc"),
        "per_defect_auroc": {d: float(np.mean([r["per_defect_auroc"][d] for r in runs])) for d in kinds},
        "pixel_auroc": mean("pixel_auroc"),
        "aupro": mean("aupro"),
        "train_seconds": mean("train_seconds"),
        "score_seconds": mean("score_seconds"),
        "peak_rss_bytes": peak,
        "data_bytes": data,
        "rss_goal_bytes": 2 * data + RSS_SLACK,
        "within_rss_goal": peak <= 2 * data + RSS_SLACK,
    }


def results_name(
    size: int,
    label: str,
    seeds: list[int],
    validation: str | None = None,
    n: int | None = None,
    contamination: float = 0.0,
) -> str:
    val = {None: "", "": "", "blobs": "val-"}.get(validation, f"val-{validation}-")
    stem = f"{category_name(size, n)}-{val}{safe_name(label)}"
    stem += "" if seeds == [0] else "-seeds-" + "-".join(map(str, seeds))
    return stem + contamination_suffix(contamination) + ".json"


def category_dir(data_dir: Path, size: int, n: int | None = None) -> Path:
    """The category ``avatarsSIZE`` (``avatarsSIZE-nN`` with ``n``) in ``data_dir``; an error saying
    how to make it when absent."""
    from oddeye.data import mvtec_category

    path = Path(data_dir) / category_name(size, n)
    if mvtec_category(path) is None or not (path / "avatars.json").is_file():
        make = (
            f"'oddeye bench avatars-data --size {size} --out {data_dir}'"
            if n is None
            else f"'oddeye bench avatars-data --size {size} --n-train {n} --n-test {HOMEWORK_TEST} "
            f"--name {path.name} --out {data_dir}'"
        )
        target = "make bench-data" if n is None else "make bench-data-homework"
        raise OddeyeError(
            f"{path}: expected the avatars category (train/good, test/, ground_truth/, avatars.json), found "
            f"it missing; run '{target}' or {make}"
        )
    return path


HOMEWORK_TEST = 19_999  # test images of an avatarsSIZE-nN category, as many as the homework's
LARGE_SET = 20_000  # training sets beyond this many images are read from a memory-mapped .npy copy


def training_images(category: Path, scratch: Path = SCRATCH_DIR) -> np.ndarray:
    """``category``'s ``train/good`` as (N, H, W, C) uint8: in memory, or beyond ``LARGE_SET`` images
    memory-mapped from a ``.npy`` copy made once in ``scratch`` (as the homework's set is read)."""
    from oddeye.data import load_images

    folder = category / "train" / "good"
    if sum(1 for _ in folder.iterdir()) <= LARGE_SET:
        return load_images(folder, progress=False).array
    return np.load(training_copy(category, scratch), mmap_mode="r")


def training_copy(category: Path, scratch: Path = SCRATCH_DIR) -> Path:
    """``scratch/CATEGORY-train.npy``: ``category``'s ``train/good`` as one uint8 ``.npy`` (the
    homework's layout), written atomically once and again only when the category is newer."""
    from oddeye.data import load_images
    from oddeye.io import atomic_path

    copy = Path(scratch) / f"{category.name}-train.npy"
    if copy.is_file() and copy.stat().st_mtime >= (category / "avatars.json").stat().st_mtime:
        return copy
    images = load_images(category / "train" / "good", progress=False).array
    with atomic_path(copy) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(images))
    return copy


def protocol_of(validation: str | None) -> str:
    """A record's protocol: "test", "validation" (blobs, as every record before marks) or
    "validation-marks"."""
    return "test" if not validation else "validation" if validation == "blobs" else f"validation-{validation}"


def protocol_desc(validation: str | None) -> str:
    return "" if not validation else " validation" + ("" if validation == "blobs" else f" ({validation})")


def validation_data(run: dict[str, Any], meta: dict[str, Any], kinds: str = "blobs") -> dict[str, Any]:
    """The validation protocol's images, as a record's ``data`` says them."""
    return {
        "n_train": run["n_train"],
        "n_test": run["n_test"],
        "synthetic": kinds,
        **({"synthetic_area": list(VAL_AREA)} if kinds == "blobs" else {"marks": list(MARKS)}),
        "split_seed": VAL_SEED,
        "packages": meta["packages"],
    }


# ------------------------------------------------------------------------------------------- CLI
def run_category(
    args: argparse.Namespace,
    names: list[str],
    settings: dict[str, Any],
    seeds: list[int],
    category: Path,
    size: int,
    fraction: float,
    invocation: str,
) -> list[dict[str, Any]]:
    """Every method on one category (its training set contaminated by ``fraction``): the records."""
    results = []
    meta = json.loads((category / "avatars.json").read_text())
    full = meta["n_train"] if args.full_bank else None
    for method in with_full_banks(names, settings, args.label, full, invocation):
        name = method.name
        runs = []
        for seed in seeds:
            job = Job(str(category), name, seed, method.settings, args.validation or "", fraction)
            runs.append(in_fresh_process(job))
            r = runs[-1]
            pixel = "-" if r["aupro"] is None else f"{r['pixel_auroc']:.3f} / {r['aupro']:.3f}"
            where = category.name + protocol_desc(args.validation) + contamination_desc(fraction)
            print(
                f"{where} {method.label} seed {seed}: image AUROC {r['image_auroc']:.3f}, pixel AUROC / "
                f"AUPRO {pixel}, {r['train_seconds']:.0f} + {r['score_seconds']:.0f} s, "
                f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB",
                flush=True,
            )
        record = {
            "benchmark": "avatars",
            "dataset": category.name,
            "protocol": protocol_of(args.validation),
            "size": size,
            "n": args.n,
            "detector": name,
            "kind": "classical" if name in CLASSICAL else "oddeye",
            **method.record(),
            "settings": settings_record(name, method.settings),
            "seeds": seeds,
            "data": validation_data(runs[0], meta, args.validation)
            if args.validation
            else {k: meta[k] for k in ("n_train", "n_test_good", "anomalous", "mask_share", "packages")},
            **summary(runs),
            "runs": [{k: v for k, v in r.items() if k != "provenance"} for r in runs],
            **runs[0]["provenance"],
        }
        if fraction:
            record["contamination"] = fraction
            record["replaced_images"] = {category.name: sum(runs[0]["planted"].values())}
        results.append(record)
        if not args.no_save:
            file = results_name(size, record["label"], seeds, args.validation, args.n, fraction)
            write_text(Path(args.results_dir) / file, json.dumps(record, indent=2) + "\n")
    return results


def run(args: argparse.Namespace) -> int:
    """``oddeye bench avatars``: run, print the table, save JSON, regenerate the markdown."""
    from oddeye.bench.report import avatars_table, regenerate

    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    sizes = int_list(args.sizes, "sizes", 8)
    seeds = int_list(args.seeds, "seeds")
    settings = dict(args.settings)
    if args.label and len(names) != 1:
        raise OddeyeError("--label names the results of one detector; give one name in --detectors")
    if args.n is not None and (args.validation or args.n < 2):
        raise OddeyeError(
            f"--n: expected a number of training images >= 2 without --validation, found {args.n}"
        )
    contaminations = fractions(args.contamination)
    if any(contaminations) and (args.validation or args.n is not None):
        raise OddeyeError(
            "--contamination: expected the test protocol at the benchmark's sizes, found it with "
            + ("--validation" if args.validation else "--n")
        )
    categories = {size: category_dir(args.data_dir, size, args.n) for size in sizes}
    for size in sizes:  # bad names or settings fail now, before hours of training
        for name in names:
            if name not in CLASSICAL:
                oddeye.create(name, **settings).build((size, size, 3))
        if any(contaminations):  # and a missing or short pool
            meta = json.loads((categories[size] / "avatars.json").read_text())
            strays_folders(categories[size], max(contaminations), meta["n_train"])
    results = []
    invocation = new_invocation()
    for fraction in contaminations:
        for size, category in categories.items():
            results += run_category(args, names, settings, seeds, category, size, fraction, invocation)
    print(avatars_table(results))
    regenerate(args)
    return 0
