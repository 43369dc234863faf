"""Training and scoring speed of oddeye against the course notebook's loop, at 64x64x3 uint8,
measured through oddeye's public API.

``run`` generates a seeded image set once (written chunk by chunk into a .npy memory map), then
measures each detector twice, each time in a fresh subprocess so that peak RSS is per loop. Both
loops train the same untrained model (``oddeye.create(name, ...).build(shape)``, seed 0) on the
same images, the first ``--max-images`` of the set (all of them for 0), and time one pass over
them after an untimed warm-up:

* ours: ``oddeye.create(name, epochs=2, batch_size=..., val_fraction=0, trim=False).fit(images)``, read from
  the fitted detector's ``history_``: the second epoch's ``images_per_s`` and ``seconds`` (the
  first is the warm-up). So the figure is oddeye's own loop: its input feed (the memory map
  gathered by index, or the uint8 set resident on a GPU), its precision choice and memory format.
  Scoring: ``Detector.score`` on the same images.
* course: the sample notebook's pipeline, written here in plain PyTorch: the whole array in RAM
  (``np.load``), a ``Dataset`` whose ``__getitem__`` applies a per-sample float conversion and
  ``2*x/255 - 1``, a shuffling ``DataLoader`` of batches of 2000, fp32, Adam, ``model.loss``; one
  warm-up batch, then one timed pass.

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
from oddeye.bench.common import SEED, SHAPE, generate_images, status_kib
from oddeye.bench.provenance import provenance
from oddeye.errors import OddeyeError
from oddeye.io import write_text

OURS_WARMUP_EPOCHS = 1  # untimed epochs before the timed one
COURSE_WARMUP = 1  # batches
COURSE_BATCH = 2000
COURSE_LR = 1e-3


# ------------------------------------------------------------------------------------- arguments
def run(args: argparse.Namespace) -> int:
    """Generate the data if needed, measure every detector in both loops, print the figures."""
    _check_args(args)
    names = _detector_names(args.detectors, args.batch_size)
    course_device(args.device)  # a malformed request fails here, not in every subprocess
    path = generate_images(Path(args.data_dir) / f"trainingset-{args.n}.npy", args.n)
    loops = [loop for loop in LOOPS if loop in args.loops.split(",")]
    results = [_spawn(_job(loop, name, path, args)) for name in names for loop in loops]
    report = _report(results, names, path, args)
    print(format_report(report))
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _detector_names(text: str, batch_size: int) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise OddeyeError(f"--detectors: expected a comma-separated list of names, found {text!r}")
    for name in names:  # unknown names and bad batch sizes raise, saying what is valid
        if not oddeye.create(name, batch_size=batch_size).build(SHAPE).trainable:
            raise OddeyeError(
                f"--detectors: {name} has no training loop to time; expected a trained detector"
            )
    return names


def _check_args(args: argparse.Namespace) -> None:
    if args.n < 2:
        raise OddeyeError(f"--n: expected at least 2 images, found {args.n}")
    if args.max_images < 0:
        raise OddeyeError(f"--max-images: expected 0 (all the images) or more, found {args.max_images}")
    if not set(args.loops.split(",")) & set(LOOPS):
        raise OddeyeError(f"--loops: expected ours, course or both, found {args.loops!r}")


def timed_images(n: int, max_images: int) -> int:
    """How many of the ``n`` images both loops train on (and score): the first ``max_images``."""
    return min(n, max_images or n)


def course_device(request: str) -> torch.device:
    """The notebook's device choice for ``auto`` (a GPU when there is one), else the one asked for."""
    if request != "auto":
        try:
            return torch.device(request)
        except RuntimeError:
            raise OddeyeError(f"--device: expected auto, cpu, cuda[:N] or mps, found {request!r}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------- subprocesses
def _job(loop: str, name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "loop": loop,
        "detector": name,
        "data": str(path),
        "n": args.n,
        "images": timed_images(args.n, args.max_images),
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
    try:
        result = measure(job)
    except OddeyeError as e:
        print(f"oddeye: error: {e}", file=sys.stderr)
        return 2
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
        "rss_file_kib": status_kib("RssFile"),
        "rss_anon_kib": status_kib("RssAnon"),
    }


def _peak_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(images: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, **extra}


def _epoch(train: dict[str, float], n: int, extrapolated: bool) -> dict[str, Any]:
    """Seconds per epoch of ``n`` images: measured, or extrapolated from the timed subset."""
    seconds = n / train["images_per_s"] if extrapolated else train["seconds"]
    return {"epoch_s": seconds, "epoch_extrapolated": extrapolated}


def _settings(job: dict[str, Any]) -> dict[str, Any]:
    """What both loops create the detector with: the course loop only builds its untrained model."""
    return {
        "epochs": OURS_WARMUP_EPOCHS + 1,
        "batch_size": job["batch_size"],
        "val_fraction": 0.0,  # every image of the subset is trained on, as in the course loop
        "trim": False,  # and in every epoch (a trimmed epoch would time fewer images)
        "seed": SEED,
        "device": job["device"],
        "precision": job.get("precision", "auto"),
        "progress": False,
    }


# ------------------------------------------------------------------------------------------ ours
def measure_ours(job: dict[str, Any]) -> dict[str, Any]:
    """oddeye's loop: ``Detector.fit`` on the subset, figures from its last epoch in ``history_``."""
    count = job["images"]
    images: str | np.ndarray = job["data"]  # all of them: the path, as a user would pass it
    if count < job["n"]:
        images = np.load(job["data"], mmap_mode="r", allow_pickle=False)[:count]  # still a memory map
    det = oddeye.create(job["detector"], **_settings(job)).fit(images)
    if len(det.history_) <= OURS_WARMUP_EPOCHS:
        raise OddeyeError(f"{job['detector']} stopped after {len(det.history_)} epoch(s): nothing timed")
    record = det.history_[-1]
    train = _rate(round(record.images_per_s * record.seconds), record.seconds, input_share=None)
    start = time.perf_counter()
    det.score(images)
    score = _rate(count, time.perf_counter() - start, batch_size=det.config.score_batch_size)
    return {
        "train": train,
        **_epoch(train, job["n"], count < job["n"]),
        "score": score,
        "precision": det.precision_,
        "channels_last": bool(det.model_.channels_last),
        "batch_size": det.config.batch_size,
        "device": str(det.device_),
        **_memory(),
    }


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
    device = course_device(job["device"])
    start = time.perf_counter()
    array = np.load(job["data"], allow_pickle=False)  # all of it, into RAM
    load_s = time.perf_counter() - start
    dataset = CourseImages(torch.from_numpy(array).permute(0, 3, 1, 2), Compose(to_float32, scale_to_unit))
    subset = torch.utils.data.Subset(dataset, range(job["images"]))  # the images ours trains on
    torch.manual_seed(SEED)
    model = oddeye.create(job["detector"], **_settings(job)).build(tuple(array.shape[1:])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=COURSE_LR)
    loader = torch.utils.data.DataLoader(subset, batch_size=COURSE_BATCH, shuffle=True, num_workers=0)
    model.train()
    warm = iter(loader)
    for _ in range(COURSE_WARMUP):
        _course_step(model, warm, optimizer, device)()
    train = _time_pass(_course_step(model, iter(loader), optimizer, device), device)
    return {
        "train": train,
        **_epoch(train, len(dataset), len(subset) < len(dataset)),
        "score": _course_score(model, subset, device),
        "precision": "fp32",
        "channels_last": False,
        "batch_size": COURSE_BATCH,
        "device": str(device),
        "load_s": load_s,
        "batch_is_channels_last": _batch_is_channels_last(subset),
        **_memory(),
    }


def _time_pass(step: Callable[[], tuple[int, float]], device: torch.device) -> dict[str, Any]:
    """Time ``step`` until its stream ends: images, seconds, images/s and the input's share."""
    _sync(device)
    images, input_s = 0, 0.0
    start = time.perf_counter()
    while True:
        try:
            count, seconds = step()
        except StopIteration:
            break
        images, input_s = images + count, input_s + seconds
    _sync(device)
    seconds = time.perf_counter() - start
    return _rate(images, seconds, input_share=input_s / seconds)


def _course_step(model, stream: Iterator[torch.Tensor], optimizer, device: torch.device):
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
def _course_score(model, subset: torch.utils.data.Dataset, device: torch.device) -> dict[str, Any]:
    loader = torch.utils.data.DataLoader(subset, batch_size=COURSE_BATCH, shuffle=False, num_workers=0)
    model.eval()
    start = time.perf_counter()
    for x in loader:
        model.infer(x.to(device)).score.cpu()
    return _rate(len(subset), time.perf_counter() - start, batch_size=COURSE_BATCH)


def _batch_is_channels_last(dataset: torch.utils.data.Dataset) -> bool:
    """Whether the collated course batch is NHWC in memory (stacking permuted views keeps it)."""
    x = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    return bool(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())


# ---------------------------------------------------------------------------------------- report
def _report(
    results: list[dict[str, Any]],
    names: list[str],
    path: Path,
    args: argparse.Namespace,
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
        "timed_images": timed_images(args.n, args.max_images),
        "warmup": {"ours_epochs": OURS_WARMUP_EPOCHS, "course_batches": COURSE_WARMUP},
        "results": results,
        "precision": args.precision,
        **provenance(results[0]["device"]),  # the device the first loop ran on
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
    count = report.get("timed_images") or report["max_images"] or d["n"]
    timed = (
        f"one pass over the first {count} images after warm-up (ours: Detector.fit, the last of "
        f"{OURS_WARMUP_EPOCHS + 1} epochs in its history; course: after {COURSE_WARMUP} batch)"
    )
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
    count = report.get("timed_images") or report["max_images"] or n
    notes = ["s/epoch: the timed pass itself (all the images)."]
    if count < n:
        notes = [f"* s/epoch extrapolated to {n} images from the {count} timed ones."]
    return notes + [
        "ours: Detector.fit with val_fraction=0, so both loops train every image of the subset; "
        "what fit does outside its epochs (building the model, scoring the training images for a "
        "threshold) is in no figure.",
        "input %: share of the timed training spent producing batches (course: per-sample "
        "transforms + collate; ours: n/a, the feed runs inside fit's epochs).",
        "peak RSS: ru_maxrss of the measuring process; file-backed: GiB of it that are mapped files "
        "at the end (ours: pages of the memory-mapped data, which the OS can drop; the kernel may map "
        "whole large folios, so this can approach the size of what was read). The course loop holds "
        "the whole array in anonymous memory.",
        "scoring: ours through Detector.score (fp32, its score batch size) on the same images; course "
        f"in batches of {COURSE_BATCH}; course load time (np.load) is not in any figure.",
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
