"""Training and scoring speed of oddeye's loop against the course notebook's, at 64x64x3 uint8.

``run`` generates a seeded image set once (written chunk by chunk into a .npy memory map), then
measures each detector twice, each time in a fresh subprocess so that peak RSS is per loop:

* ours: the real pieces of :mod:`oddeye.training.loop` (index batches gathered from the memory map,
  normalised on the device, ``choose_precision`` autocast), or ``Detector.fit`` for a full epoch;
  scoring through :func:`oddeye.scoring.infer`.
* course: the sample notebook's pipeline: the whole array in RAM (``np.load``), a ``Dataset``
  whose ``__getitem__`` applies a per-sample float conversion and ``2*x/255 - 1``, a ``DataLoader``
  of batches of 2000, fp32, Adam, the same registry model and ``model.loss``.

Only figures are printed; nothing passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import oddeye
from oddeye.bench.args import LOOPS
from oddeye.bench.provenance import provenance
from oddeye.config import TrainConfig
from oddeye.data import ImageSet, load_images
from oddeye.detectors import get_spec
from oddeye.errors import OddeyeError
from oddeye.io import atomic_path, write_text
from oddeye.progress import Task
from oddeye.scoring import infer
from oddeye.training.device import choose_device, choose_precision
from oddeye.training.distributed import LossOf
from oddeye.training.feed import Feed
from oddeye.training.loop import epoch_batches, prepare, split_indices, train_step

SHAPE = (64, 64, 3)  # the homework's images
SEED = 0
CHUNK = 1024  # images generated per chunk (about 50 MB of float32 at a time)
GRID = 6  # low-resolution grid the smooth blobs are interpolated from
OURS_WARMUP = 2  # batches
COURSE_WARMUP = 1
COURSE_BATCH = 2000
COURSE_LR = 1e-3


# ------------------------------------------------------------------------------------- arguments
def run(args: argparse.Namespace) -> int:
    """Generate the data if needed, measure every detector in both loops, print the figures."""
    names = _detector_names(args.detectors)
    _check_args(args)
    device = choose_device(args.device)
    path = generate_images(Path(args.data_dir) / f"trainingset-{args.n}.npy", args.n)
    loops = [loop for loop in LOOPS if loop in args.loops.split(",")]
    results = [_spawn(_job(loop, name, path, args)) for name in names for loop in loops]
    report = _report(results, names, path, args, device)
    print(format_report(report))
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _detector_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise OddeyeError(f"--detectors: expected a comma-separated list of names, found {text!r}")
    for name in names:
        if not get_spec(name).model_cls.trainable:  # unknown names raise, listing the valid ones
            raise OddeyeError(
                f"--detectors: {name} has no training loop to time; expected a trained detector"
            )
    return names


def _check_args(args: argparse.Namespace) -> None:
    TrainConfig(batch_size=args.batch_size)  # raises on a bad batch size
    if args.n < 2:
        raise OddeyeError(f"--n: expected at least 2 images, found {args.n}")
    if args.max_images < 0:
        raise OddeyeError(f"--max-images: expected 0 (a full epoch) or more, found {args.max_images}")


# ------------------------------------------------------------------------------------------- data
def generate_images(path: str | Path, n: int, seed: int = SEED, shape: tuple[int, int, int] = SHAPE) -> Path:
    """A seeded (n, H, W, C) uint8 .npy of smooth blobs, gradients and noise (64x64x3 unless
    ``shape`` says otherwise), written chunk by chunk; reused if present."""
    path = Path(path)
    if _has_images(path, (n, *shape)):
        return path
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK * SHAPE[0] * SHAPE[1] // (shape[0] * shape[1]))  # about the same bytes
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
        with Task("generating images", n, "images") as bar:
            for start in range(0, n, chunk):
                out[start : start + chunk] = image_chunk(rng, min(chunk, n - start), shape)
                bar.update(min(chunk, n - start))
        out.flush()
        del out
        tmp.chmod(0o644)  # mkstemp makes it private
    return path


def _has_images(path: Path, shape: tuple[int, ...]) -> bool:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return array.shape == shape and array.dtype == np.uint8


def image_chunk(rng: np.random.Generator, k: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """``k`` images (k, H, W, C) uint8: bilinear blobs from a 6x6 grid, a colour ramp, 4-bit noise."""
    h, w, c = shape
    ramp = np.linspace(-1.0, 1.0, GRID, dtype=np.float32)
    lum = rng.random((k, GRID, GRID, 1), dtype=np.float32) * 130.0  # channels correlate, as in photos
    low = lum + rng.random((k, GRID, GRID, c), dtype=np.float32) * 50.0 + 30.0  # in [30, 210]
    slope = (rng.random((k, 2, 1, 1, c), dtype=np.float32) * 2.0 - 1.0) * 15.0
    low += slope[:, 0] * ramp[:, None, None] + slope[:, 1] * ramp[None, :, None]  # in [0, 240]
    rows = np.matmul(_interp_matrix(w, GRID), low)  # (k, GRID, W, C): along the width
    image = np.matmul(_interp_matrix(h, GRID), rows.reshape(k, GRID, w * c))  # (k, H, W*C)
    out = image.reshape(k, h, w, c).astype(np.uint8)  # interpolation stays in [0, 240]
    out += _nibbles(rng, out.size).reshape(out.shape)  # + [0, 15]: at most 255
    return out


def _interp_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) bilinear interpolation weights (pixel centres aligned, edges clamped)."""
    pos = np.clip((np.arange(size) + 0.5) * grid / size - 0.5, 0, grid - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, grid - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((size, grid), np.float32)
    np.add.at(m, (np.arange(size), lo), 1.0 - frac)
    np.add.at(m, (np.arange(size), hi), frac)
    return m


def _nibbles(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` uniform values in [0, 15] as uint8, two per random byte (much cheaper than normal)."""
    raw = rng.bit_generator.random_raw(size // 16 + 1).view(np.uint8)
    return np.concatenate([raw & 15, raw >> 4])[:size]


# ---------------------------------------------------------------------------------- subprocesses
def _job(loop: str, name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "loop": loop,
        "detector": name,
        "data": str(path),
        "max_images": args.max_images,
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": args.precision,
    }


def _spawn(job: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its last stdout line is its JSON result."""
    print(f"measuring {job['detector']} / {job['loop']} ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "oddeye.bench.speed", "--child", json.dumps(job)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise OddeyeError(
            f"the {job['loop']} measurement of {job['detector']} failed "
            f"(exit code {proc.returncode}); its error is printed above"
        )
    return json.loads(lines[-1])


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m oddeye.bench.speed")
    parser.add_argument("--child", required=True, metavar="JSON", help="one measurement job")
    job = json.loads(parser.parse_args(argv).child)
    measure = measure_ours if job["loop"] == "ours" else measure_course
    result = measure(job)
    result.update(
        detector=job["detector"],
        loop=job["loop"],
        threads=torch.get_num_threads(),
    )
    print(json.dumps(result), flush=True)
    return 0


def _memory() -> dict[str, int | None]:
    """Peak RSS, and what is mapped now: call it while the measured data is still referenced."""
    return {
        "peak_rss_kib": _peak_rss_kib(),
        "rss_file_kib": _status_kib("RssFile"),
        "rss_anon_kib": _status_kib("RssAnon"),
    }


def _peak_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _status_kib(field: str) -> int | None:
    """A current figure from /proc/self/status (Linux): RssFile = mapped files, RssAnon = the heap."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(
    step: Callable[[], tuple[int, float]], warmup: int, target: float, device: torch.device
) -> dict[str, float]:
    """Run ``warmup`` steps, then time steps until ``target`` images (or the stream ends)."""
    for _ in range(warmup):
        step()
    _sync(device)
    images, input_s = 0, 0.0
    start = time.perf_counter()
    while images < target:
        try:
            count, seconds = step()
        except StopIteration:
            break
        images, input_s = images + count, input_s + seconds
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "input_share": None if input_s != input_s else input_s / seconds,  # NaN: not measured
    }


def _score_count(n: int, max_images: int) -> int:
    return min(n, max_images or n)


def _epoch(train: dict[str, float], n: int, capped: bool) -> dict[str, Any]:
    """Seconds per epoch of ``n`` images: measured, or extrapolated from a capped run."""
    seconds = n / train["images_per_s"] if capped else train["seconds"]
    return {"epoch_s": seconds, "epoch_extrapolated": capped}


# ------------------------------------------------------------------------------------------ ours
def measure_ours(job: dict[str, Any]) -> dict[str, Any]:
    """oddeye's loop: real training pieces over the memory map (``Detector.fit`` for a full epoch)."""
    det = oddeye.create(
        job["detector"],
        epochs=1,
        progress=False,
        batch_size=job["batch_size"],
        device=job["device"],
        precision=job.get("precision", "auto"),
    )
    data = load_images(job["data"], progress=False)
    if job["max_images"]:
        model, device, precision, train = _ours_capped(det, data, job["max_images"])
    else:
        det.fit(data)
        model, device, precision = det.model_, det.device_, det.precision_
        record = det.history_[0]
        train = {
            "images": round(record.images_per_s * record.seconds),
            "seconds": record.seconds,
            "images_per_s": record.images_per_s,
            "input_share": None,
        }
    count = _score_count(len(data), job["max_images"])
    return {
        "train": train,
        **_epoch(train, len(data), job["max_images"] > 0),
        "score": _ours_score(model, data, device, det.config.score_batch_size, count),
        "precision": precision,
        "channels_last": model.channels_last,
        "batch_size": det.config.batch_size,
        "device": str(device),
        **_memory(),
    }


def _ours_capped(det: oddeye.Detector, data: ImageSet, max_images: int):
    """Set up as ``fit_model`` does, then time ``max_images`` of its real steps after 2 batches."""
    config = det.config
    device = choose_device(config.device)
    torch.manual_seed(config.seed)
    model = det.build(data.shape)
    precision = choose_precision(config.precision, device, model.cpu_bf16)
    optimizer = prepare(model, device, config.lr)
    rng = np.random.default_rng(config.seed)
    train_idx, _ = split_indices(len(data), config.val_fraction, rng)
    batches = _index_batches(train_idx, config.batch_size, rng)
    model.train()
    step = _ours_step(model, data, batches, optimizer, device, precision)
    return model, device, precision, _time_steps(step, OURS_WARMUP, max_images, device)


def _index_batches(train_idx: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Epoch after epoch, the index batches the training loop makes."""
    while True:
        yield from epoch_batches(train_idx, batch_size, rng)


def _ours_step(model, data, batches, optimizer, device, precision) -> Callable[[], tuple[int, float]]:
    """One real training step, fed as the loop feeds it (the uint8 set resident on a GPU when it
    fits); returns (images, NaN): its input time is inside the step."""
    engine, feed = LossOf(model), Feed(data, device, model.channels_last)

    def step() -> tuple[int, float]:
        idx = next(batches)
        train_step(engine, feed(idx), optimizer, device, precision)
        return len(idx), float("nan")

    return step


def _ours_score(model, data: ImageSet, device: torch.device, batch_size: int, count: int) -> dict:
    start = time.perf_counter()
    infer(model, data, device, batch_size, indices=np.arange(count), progress=False)
    seconds = time.perf_counter() - start
    return {"images": count, "seconds": seconds, "images_per_s": count / seconds, "batch_size": batch_size}


# ---------------------------------------------------------------------------------------- course
def to_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32)


def scale_to_unit(x: torch.Tensor) -> torch.Tensor:
    return 2 * x / 255 - 1


class Compose:
    """torchvision's ``transforms.Compose``: apply callables in order (torchvision is not needed)."""

    def __init__(self, *transforms: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.transforms = transforms

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x


class CourseImages(torch.utils.data.Dataset):
    """The notebook's dataset: a (N, C, H, W) uint8 view, transformed one sample at a time."""

    def __init__(self, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.images[i])


def measure_course(job: dict[str, Any]) -> dict[str, Any]:
    """The course notebook's loop: whole array in RAM, per-sample transforms, batches of 2000, fp32."""
    device = choose_device(job["device"])
    start = time.perf_counter()
    array = np.load(job["data"], allow_pickle=False)  # all of it, into RAM
    load_s = time.perf_counter() - start
    dataset = CourseImages(torch.from_numpy(array).permute(0, 3, 1, 2), Compose(to_float32, scale_to_unit))
    torch.manual_seed(SEED)
    model = get_spec(job["detector"]).model_cls(tuple(array.shape[1:])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=COURSE_LR)
    loader = torch.utils.data.DataLoader(dataset, batch_size=COURSE_BATCH, shuffle=True, num_workers=0)
    train = _course_train(model, loader, optimizer, device, job["max_images"])
    count = _score_count(len(dataset), job["max_images"])
    return {
        "train": train,
        **_epoch(train, len(dataset), job["max_images"] > 0),
        "score": _course_score(model, dataset, device, count),
        "precision": "fp32",
        "channels_last": False,
        "batch_size": COURSE_BATCH,
        "device": str(device),
        "load_s": load_s,
        "batch_is_channels_last": _batch_is_channels_last(loader),
        **_memory(),
    }


def _course_train(model, loader, optimizer, device: torch.device, max_images: int) -> dict[str, float]:
    model.train()
    if max_images:
        stream: Iterator[torch.Tensor] = _cycle(loader)
        step = _course_step(model, stream, optimizer, device)
        return _time_steps(step, COURSE_WARMUP, max_images, device)
    _course_step(model, iter(loader), optimizer, device)()  # warm-up batch, then one whole epoch
    return _time_steps(_course_step(model, iter(loader), optimizer, device), 0, float("inf"), device)


def _cycle(loader: torch.utils.data.DataLoader) -> Iterator[torch.Tensor]:
    while True:
        yield from loader


def _course_step(model, stream, optimizer, device: torch.device) -> Callable[[], tuple[int, float]]:
    def step() -> tuple[int, float]:
        start = time.perf_counter()
        x = next(stream).to(device)  # the DataLoader runs the per-sample transforms and collates
        _sync(device)
        input_s = time.perf_counter() - start
        loss = model.loss(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        return len(x), input_s

    return step


@torch.no_grad()
def _course_score(model, dataset: CourseImages, device: torch.device, count: int) -> dict:
    subset = torch.utils.data.Subset(dataset, range(count))
    loader = torch.utils.data.DataLoader(subset, batch_size=COURSE_BATCH, shuffle=False, num_workers=0)
    model.eval()
    start = time.perf_counter()
    for x in loader:
        model.infer(x.to(device)).score.cpu()
    seconds = time.perf_counter() - start
    return {"images": count, "seconds": seconds, "images_per_s": count / seconds, "batch_size": COURSE_BATCH}


def _batch_is_channels_last(loader: torch.utils.data.DataLoader) -> bool:
    """Whether the collated course batch is NHWC in memory (stacking permuted views keeps it)."""
    x = next(iter(torch.utils.data.DataLoader(loader.dataset, batch_size=2)))
    return bool(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())


# ---------------------------------------------------------------------------------------- report
def _report(
    results: list[dict[str, Any]],
    names: list[str],
    path: Path,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    nbytes = args.n * int(np.prod(SHAPE))
    return {
        "oddeye": oddeye.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "data": {
            "path": str(path),
            "n": args.n,
            "shape": list(SHAPE),
            "dtype": "uint8",
            "bytes": nbytes,
            "rss_budget_bytes": 2 * nbytes,
        },
        "max_images": args.max_images,
        "results": results,
        "precision": args.precision,
        **provenance(device),
        "ratios": {name: _ratios(results, name) for name in names if len(results) == 2 * len(names)},
    }


def _ratios(results: list[dict[str, Any]], name: str) -> dict[str, float]:
    by_loop = {r["loop"]: r for r in results if r["detector"] == name}
    ours, course = by_loop["ours"], by_loop["course"]
    return {key: ours[key]["images_per_s"] / course[key]["images_per_s"] for key in ("train", "score")}


def format_report(report: dict[str, Any]) -> str:
    """The printed benchmark: machine and data lines, the table, footnotes and ours/course ratios."""
    return "\n".join(
        [
            *_header_lines(report),
            "",
            *_table_lines(report),
            "",
            *_footnotes(report),
            "",
            *_ratio_lines(report),
        ]
    )


def _header_lines(report: dict[str, Any]) -> list[str]:
    m, d = report["machine"], report["data"]
    gb, gib = d["bytes"] / 1e9, d["bytes"] / 2**30
    if report["max_images"]:
        timed = (
            f"{report['max_images']} training images after warm-up "
            f"(ours {OURS_WARMUP} batches, course {COURSE_WARMUP} batch)"
        )
    else:
        timed = "one full epoch (ours: Detector.fit, epochs=1, no warm-up; course: after 1 warm-up batch)"
    return [
        f"oddeye {report['oddeye']}, torch {report['torch']}, numpy {report['numpy']}",
        f"machine: {m['cpu']}, {m['torch_threads']} torch threads, device {m['device']}",
        f"data: {d['path']}: {d['n']} x {'x'.join(map(str, d['shape']))} uint8 = {gb:.2f} GB "
        f"({gib:.2f} GiB); peak-RSS budget 2x = {2 * gb:.2f} GB ({2 * gib:.2f} GiB)",
        f"timed per loop: {timed}",
    ]


TABLE = [
    ("detector", "<8"),
    ("loop", "<7"),
    ("train img/s", ">11"),
    ("s/epoch", ">9"),
    ("score img/s", ">11"),
    ("peak RSS GiB", ">12"),
    ("file-backed", ">11"),
    ("precision", "<30"),
    ("input %", ">7"),
]


def _table_lines(report: dict[str, Any]) -> list[str]:
    rows = [[name for name, _ in TABLE]] + [_row(r) for r in report["results"]]
    lines = ["  ".join(f"{cell:{fmt}}" for cell, (_, fmt) in zip(row, TABLE)).rstrip() for row in rows]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def _row(r: dict[str, Any]) -> list[str]:
    star = "*" if r["epoch_extrapolated"] else ""
    share = r["train"]["input_share"]
    layout = ", channels_last" if r["channels_last"] else ""
    return [
        r["detector"],
        r["loop"],
        f"{r['train']['images_per_s']:.0f}",
        f"{r['epoch_s']:.1f}{star}",
        f"{r['score']['images_per_s']:.0f}",
        f"{r['peak_rss_kib'] / 2**20:.2f}",
        "n/a" if r.get("rss_file_kib") is None else f"{r['rss_file_kib'] / 2**20:.2f}",
        f"{r['precision']}{layout}, batch {r['batch_size']}",
        "n/a" if share is None else f"{100 * share:.0f}",
    ]


def _footnotes(report: dict[str, Any]) -> list[str]:
    n = report["data"]["n"]
    notes = []
    if report["max_images"]:
        notes.append(f"* s/epoch extrapolated to {n} images from the {report['max_images']} timed ones.")
    else:
        notes.append(
            "s/epoch: one measured epoch; ours trains on n minus its held-out share "
            f"({TrainConfig.val_fraction:.0%})."
        )
    return notes + [
        "input %: share of the timed training spent producing batches (ours: gather from the memory "
        "map + normalise; course: per-sample transforms + collate).",
        "peak RSS: ru_maxrss of the measuring process; file-backed: GiB of it that are mapped files "
        "at the end (ours: pages of the memory-mapped data, which the OS can drop; the kernel may map "
        "whole large folios, so this can approach the file size after few random batches). The "
        "course loop holds the whole array in anonymous memory.",
        "scoring: ours in fp32 with its score batch size over the first images; course in batches of "
        f"{COURSE_BATCH}; course load time (np.load) is not in any figure.",
    ]


def _ratio_lines(report: dict[str, Any]) -> list[str]:
    load = {r["detector"]: r["load_s"] for r in report["results"] if r["loop"] == "course"}
    if not report["ratios"]:
        return []
    return ["ours / course (img/s):"] + [
        f"  {name:<8} train {r['train']:.2f}x   score {r['score']:.2f}x   (course np.load {load[name]:.1f} s)"
        for name, r in report["ratios"].items()
    ]


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
