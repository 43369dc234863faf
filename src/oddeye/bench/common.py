"""What the benchmarks share: where things are, the generated images, and ``oddeye`` subprocesses.

Light to import: the command-line parser reads its defaults from here, so NumPy and Pillow are
imported by the functions that need them, never at module level (``oddeye --help`` and a server
running an exported model import neither PyTorch nor the benchmarks' numerics).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oddeye.errors import OddeyeError

if TYPE_CHECKING:
    import numpy as np

# ----------------------------------------------------------------------------------- where things are
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
EMOJI_DIR = Path("benchmarks/data/emoji")  # make bench-data
AVATARS_DIR = Path("benchmarks/data/avatars")  # make bench-data (oddeye bench avatars-data)
AVATARS_NPM_DIR = Path("benchmarks/data/npm-avatars")  # the npm packages that draw them
SCRATCH_DIR = Path("benchmarks/scratch")  # generated sets, runs and models (git-ignored)
RESULTS_DIR = Path("benchmarks/results")  # the JSON records BENCHMARKS.md is made from
MARKDOWN = Path("BENCHMARKS.md")
NOTES = Path("benchmarks/NOTES.md")  # appended to BENCHMARKS.md


# ---------------------------------------------------------------------------------- contaminated runs
def contamination_suffix(fraction: float) -> str:
    """``-contam0.05`` for a contaminated run; nothing for a clean one (its file keeps its name)."""
    return f"-contam{fraction:g}" if fraction else ""


def contamination_desc(fraction: float) -> str:
    """What progress and the printed tables add for a contaminated run (`` contaminated 5%``)."""
    return f" contaminated {fraction * 100:g}%" if fraction else ""


# ------------------------------------------------------------------------------ full-bank references
FULL_BANK_LABEL = "{label}, every image in the banks"
BANK_MEMBER_FIELDS = ("members", "colour_members", "gray_members")  # whole-image members (local: kept)


def full_bank_settings(name: str, settings: dict[str, Any], n: int) -> dict[str, Any] | None:
    """``settings`` for ``name`` with every one of ``n`` training images in its whole-image banks
    (``--full-bank``): ``max_bank=n`` for a memory-bank detector, and for an ensemble on each
    member of ``members``, ``colour_members`` and ``gray_members`` that has a bank (its other
    settings kept; local members, which bank patches, stay as they are). None for a detector with
    no such bank."""
    import oddeye

    params = oddeye.create(name, **settings).resolved_params()
    if "max_bank" in params:
        return {**settings, "max_bank": n}
    changed = {}
    for key in BANK_MEMBER_FIELDS:
        members = list(params.get(key) or ())
        full = [_member_with_full_bank(m, n) for m in members]
        if full != members:
            changed[key] = full
    return {**settings, **changed} if changed else None


def _member_with_full_bank(member: Any, n: int) -> Any:
    """An ensemble member's ``name:key=value;...`` text with ``max_bank=n`` (its own value
    replaced); a member without a bank, or given as a build record, unchanged."""
    import oddeye

    if not isinstance(member, str):
        return member
    name, _, rest = member.partition(":")
    if "max_bank" not in oddeye.create(name.strip()).resolved_params():
        return member
    items = [i.strip() for i in rest.split(";") if i.strip() and i.partition("=")[0].strip() != "max_bank"]
    return f"{name.strip()}:{';'.join([*items, f'max_bank={n}'])}"


# ------------------------------------------------------------------------------------ generated images
SHAPE = (64, 64, 3)  # the homework's images
SEED = 0
CHUNK = 1024  # images generated per chunk (about 50 MB of float32 at a time)
GRID = 6  # low-resolution grid the smooth blobs are interpolated from


def generate_images(path: str | Path, n: int, seed: int = SEED, shape: tuple[int, int, int] = SHAPE) -> Path:
    """A seeded (n, H, W, C) uint8 .npy of smooth blobs, gradients and noise (64x64x3 unless
    ``shape`` says otherwise), written chunk by chunk; reused if present."""
    import numpy as np

    from oddeye.io import atomic_path
    from oddeye.progress import Task

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
    import numpy as np

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return array.shape == shape and array.dtype == np.uint8


def image_chunk(rng: np.random.Generator, k: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """``k`` images (k, H, W, C) uint8: bilinear blobs from a 6x6 grid, a colour ramp, 4-bit noise."""
    import numpy as np

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
    import numpy as np

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
    import numpy as np

    raw = rng.bit_generator.random_raw(size // 16 + 1).view(np.uint8)
    return np.concatenate([raw & 15, raw >> 4])[:size]


def png(image: np.ndarray) -> bytes:
    """One (H, W, C) uint8 image as PNG bytes (C = 1 is written as grayscale)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image if image.shape[-1] == 3 else image[..., 0]).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- processes
def status_kib(field: str, pid: int | str = "self") -> int | None:
    """A figure in KiB from /proc/PID/status (Linux: VmRSS, RssFile, RssAnon, ...); None without it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def oddeye_command(args: list[str]) -> list[str]:
    """The command line that runs ``oddeye ARGS`` with this interpreter."""
    return [sys.executable, "-m", "oddeye", *args]


def measured_oddeye(args: list[str]) -> dict[str, Any]:
    """Run ``oddeye ARGS`` in a fresh process (its progress lines pass through to stderr): wall
    time, peak RSS (from ``wait4``, that process alone) and what it printed on stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(oddeye_command(args), stdout=subprocess.PIPE, stderr=None, text=True)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise OddeyeError(f"oddeye {args[0]} failed: {stdout.strip()}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024, "stdout": stdout.strip()}


def export_checked(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """``oddeye export RUN --format onnx --out OUT`` in a subprocess: the parity check it wrote to
    ``OUT.json``; an :class:`OddeyeError` with the command's own error line when it refused."""
    out = Path(out)
    cmd = oddeye_command(["export", str(run_dir), "--format", "onnx", "--out", str(out)])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise OddeyeError(lines[-1].removeprefix("oddeye: error: "))
    return json.loads(out.with_name(out.name + ".json").read_text())["parity"]
