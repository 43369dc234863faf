"""Anomaly maps on disk, a pixel threshold without anomaly labels, and maps against masks.

``oddeye score RUN IMAGES --maps DIR`` writes each image's map at the model's input size as a
float32 ``.npy`` of shape (H, W): ``DIR/<relative path>.npy`` (the image's suffix replaced, its
subfolders mirrored) for a folder, ``DIR/<Id>.npy`` for an array; ``DIR/maps.csv`` indexes them
(``Id[,path],map[,overlay]``) and ``DIR/maps.json`` says what they are. With ``--maps-png``
each image also gets an overlay: the image under its map as a colour heat overlay, with the
outline of the region above the pixel threshold. Maps stream into a temporary folder batch by
batch (never all in memory) that becomes DIR once every image is written.

The pixel threshold ``fpr:A`` is the map value exceeded by a share A of the pixels of the run's
held-out normal images (the sample every run keeps), so it needs no anomaly labels.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from oddeye.errors import InputError, OddeyeError
from oddeye.evaluation import NAME_BYTES, PATH_COLUMN, ImageRowsCsv
from oddeye.io import atomic_dir, json_text
from oddeye.pixel_metrics import EXACT_PIXELS, FPR_LIMIT, PixelEvaluation, PixelEvaluator
from oddeye.thresholds import parse_rule

if TYPE_CHECKING:
    from oddeye.data.imageset import ImageSet
    from oddeye.data.masks import GroundTruth

MAPS_CSV, MAPS_JSON, FORMAT = "maps.csv", "maps.json", "oddeye-maps/1"
MAP_COLUMN, OVERLAY_COLUMN = "map", "overlay"
DEFAULT_PIXEL_RULE = "fpr:0.01"
OVERLAY_SIDE = 256  # overlays are enlarged by a whole factor until the shorter side reaches this
OVERLAY_ALPHA = 0.5  # the heat colour's weight where the map is at the top of its scale
OUTLINE = (0.0, 1.0, 1.0)  # cyan: the region above the pixel threshold
TRUE_OUTLINE = (0.2, 1.0, 0.2)  # green: the true region (a mask)
COLORMAP = "inferno"


@dataclass(frozen=True)
class PixelThreshold:
    """A map value above which a pixel is anomalous; ``rule`` says how it was chosen."""

    value: float
    rule: str  # "fpr:0.01" (from held-out maps) or a fixed value
    n_maps: int = 0  # the held-out maps it was chosen from (0: a fixed value)
    low: float | None = None  # the held-out pixels' median: the bottom of the overlay's colours

    def describe(self) -> str:
        if not self.n_maps:
            return f"pixel threshold {self.value:.5g} (a fixed value)"
        return f"pixel threshold {self.rule} = {self.value:.5g} from {self.n_maps} held-out maps"

    def flag(self, amap: np.ndarray) -> np.ndarray:
        return amap > self.value


def pixel_threshold(rule: str, heldout_maps: np.ndarray | None) -> PixelThreshold | None:
    """The threshold ``rule`` asks for: ``fpr:A`` from ``heldout_maps`` (N, H, W) of normal
    images (None when there are none), or a fixed value."""
    kind, param = parse_rule(rule)
    if kind == "value":
        return PixelThreshold(param, rule)
    if kind != "fpr":
        raise OddeyeError(f"pixel threshold: expected fpr:A or a value, found {rule!r}")
    if heldout_maps is None or len(heldout_maps) == 0:
        return None
    pixels = np.asarray(heldout_maps, dtype=np.float64).ravel()
    value = float(np.quantile(pixels, 1.0 - param, method="higher"))  # at most a share A above it
    return PixelThreshold(value, f"fpr:{param:g}", len(heldout_maps), float(np.median(pixels)))


def map_names(paths: Sequence[str] | None, n: int) -> list[str]:
    """Each image's map file, relative to the maps folder: its path with ``.npy`` for its suffix
    (the whole name + ``.npy`` where two files differ only by suffix), or ``<Id>.npy``."""
    if paths is None:
        return [f"{i}.npy" for i in range(n)]
    names = [PurePosixPath(p).with_suffix(".npy").as_posix() for p in paths]
    twice = Counter(names)
    return [name if twice[name] == 1 else f"{p}.npy" for p, name in zip(paths, names, strict=True)]


class MapWriter:
    """Writes maps batch by batch (``write``) into a temporary folder that becomes ``folder`` when
    the ``with`` block succeeds. An existing ``folder`` is replaced only if it holds maps written
    before (a ``maps.csv``); any other non-empty folder is refused, before anything is scored.

    ``data``: the scored images, for the overlays (``png``); ``about``: what ``maps.json`` says
    besides the format, the number of maps and the threshold (the detector, the maps' shape).
    """

    def __init__(
        self,
        folder: str | Path,
        paths: Sequence[str] | None,
        n: int,
        *,
        png: bool = False,
        data: ImageSet | None = None,
        threshold: PixelThreshold | None = None,
        about: dict[str, Any] | None = None,
    ) -> None:
        self.folder, self.paths, self.names = Path(folder), paths, map_names(paths, n)
        self.png, self.data, self.threshold, self.about = png, data, threshold, about or {}
        self.written = 0
        check_maps_folder(self.folder)

    def __enter__(self) -> MapWriter:
        about = {
            "format": FORMAT,
            "n_maps": len(self.names),
            **self.about,
            "pixel_threshold": asdict(self.threshold) if self.threshold is not None else None,
        }
        with contextlib.ExitStack() as stack:
            self.tmp = stack.enter_context(atomic_dir(self.folder, force=True))
            (self.tmp / MAPS_JSON).write_text(json_text(about))
            columns = ("Id", MAP_COLUMN, OVERLAY_COLUMN) if self.png else ("Id", MAP_COLUMN)
            self._csv = stack.enter_context(ImageRowsCsv(self.tmp / MAPS_CSV, columns, self.paths))
            self._stack = stack.pop_all()
        return self

    def write(self, maps: np.ndarray) -> None:
        """The next images' maps, (B, H, W)."""
        start, rows = self.written, []
        images = self.data.display(np.arange(start, start + len(maps))) if self.png and self.data else None
        for k, amap in enumerate(np.asarray(maps, dtype=np.float32)):
            name = self.names[start + k]
            target = self.tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, amap, allow_pickle=False)
            row = [name]
            if images is not None:
                png = PurePosixPath(name).with_suffix("").as_posix() + "_overlay.png"
                overlay(images[k], amap, self.threshold).save(self.tmp / png)
                row.append(png)
            rows.append(row)
        self._csv.write_rows(rows)
        self.written += len(maps)

    def __exit__(self, *exc: object) -> bool:
        return self._stack.__exit__(*exc)  # maps.csv complete, then the folder renamed (or removed)


def check_maps_folder(folder: Path) -> None:
    """A maps folder must be new, empty, or one written by ``--maps`` before (it is replaced)."""
    if folder.exists() and not folder.is_dir():
        raise OddeyeError(f"{folder}: expected a folder for the maps, found a file")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MAPS_CSV).is_file():
        raise OddeyeError(
            f"{folder}: expected a new or empty folder for the maps (or maps written before), found other "
            "files; give another --maps"
        )


def overlay(
    image: np.ndarray, amap: np.ndarray, threshold: PixelThreshold | None, truth: np.ndarray | None = None
) -> Image.Image:
    """``image`` (H, W, C) in [0, 1] under ``amap`` (H, W) as a heat overlay, enlarged for
    viewing, with the outline of the pixels above ``threshold`` in cyan, and that of a true
    region (a mask of the image's size) in green."""
    from matplotlib import colormaps
    from scipy import ndimage

    h, w = amap.shape
    scale = max(1, math.ceil(OVERLAY_SIDE / min(h, w)))
    big = (w * scale, h * scale)
    pixels = (image * 255).round().astype(np.uint8)
    base = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    rgb = np.asarray(base.resize(big, Image.Resampling.BILINEAR)) / 255.0
    heat = resize_map(amap, (h * scale, w * scale))
    level = heat_level(heat, amap, threshold)
    colours = colormaps[COLORMAP](level)[..., :3]
    alpha = OVERLAY_ALPHA * level[..., None]
    out = (1 - alpha) * rgb + alpha * colours
    width = max(1, scale // 4, min(h, w) * scale // 256)
    for region, colour in ((truth, TRUE_OUTLINE), (threshold.flag(heat) if threshold else None, OUTLINE)):
        if region is not None:
            if region.shape != heat.shape:
                region = np.asarray(Image.fromarray(region).resize(big, Image.Resampling.NEAREST))
            out[region & ~ndimage.binary_erosion(region, iterations=width)] = colour
    return Image.fromarray((out * 255).round().astype(np.uint8))


def heat_level(heat: np.ndarray, amap: np.ndarray, threshold: PixelThreshold | None) -> np.ndarray:
    """``heat`` (``amap`` or a resized copy) on the overlays' colour scale, clipped to [0, 1]."""
    lo, hi = colour_range(amap, threshold)
    return np.clip((heat - lo) / (hi - lo), 0.0, 1.0)


def colour_range(amap: np.ndarray, threshold: PixelThreshold | None) -> tuple[float, float]:
    """The overlay's colour scale: from the held-out median to as far past the threshold (the
    threshold mid-scale), or the map's own range without one."""
    if threshold is not None and threshold.low is not None and threshold.value > threshold.low:
        return threshold.low, 2 * threshold.value - threshold.low
    lo, hi = float(amap.min()), float(amap.max())
    return lo, hi if hi > lo else lo + 1.0


def resize_map(amap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``amap`` (H, W) resized bilinearly to ``shape`` (H, W) as float32 (unchanged at that size)."""
    if amap.shape == tuple(shape):
        return np.asarray(amap, dtype=np.float32)
    im = Image.fromarray(np.ascontiguousarray(amap, dtype=np.float32))  # mode F
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


@dataclass(frozen=True)
class MapFiles:
    """A maps folder as written by ``--maps``: ``map(i)`` reads image i's map, lazily."""

    folder: Path
    files: tuple[Path, ...]
    paths: tuple[str, ...] | None
    threshold: PixelThreshold | None

    def __len__(self) -> int:
        return len(self.files)

    def map(self, i: int) -> np.ndarray:
        f = self.files[i]
        try:
            amap = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f, "an anomaly map as a .npy file", f"unreadable data ({e})") from None
        if amap.ndim != 2 or amap.dtype.kind not in "fiu":
            raise InputError(f, "an anomaly map of numbers (H, W)", f"shape {amap.shape}, dtype {amap.dtype}")
        if not np.isfinite(amap).all():
            raise InputError(f, "finite map values", "NaN or inf")
        return amap.astype(np.float32, copy=False)


def read_maps(folder: str | Path) -> MapFiles:
    """The maps of ``folder`` (its ``maps.csv``: ids 0..N-1 in order, files inside the folder)."""
    folder = Path(folder)
    index = folder / MAPS_CSV
    try:
        with open(index, encoding="utf-8", errors=NAME_BYTES, newline="") as f:
            head, *rows = [r for r in csv.reader(f) if r]
    except FileNotFoundError:
        raise InputError(
            folder, f"a maps folder written by oddeye score --maps (with {MAPS_CSV})", "none"
        ) from None
    except (OSError, csv.Error, ValueError) as e:
        raise InputError(index, "the maps' index", f"unreadable data ({e})") from None
    named = len(head) > 1 and head[1] == PATH_COLUMN
    at = head.index(MAP_COLUMN) if MAP_COLUMN in head else None
    if at is None or not rows:
        raise InputError(index, f"a header Id[,path],{MAP_COLUMN} and a row per map", ",".join(head))
    root, files = folder.resolve(), []
    for i, row in enumerate(rows):
        if len(row) != len(head) or row[0] != str(i):
            raise InputError(
                index, f"rows with ids 0..{len(rows) - 1} in order", f"{','.join(row)!r} on row {i}"
            )
        f = (folder / row[at]).resolve()
        if not f.is_relative_to(root):
            raise InputError(index, "map files inside the maps folder", repr(row[at]))
        files.append(f)
    threshold = None
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        saved = json.loads((folder / MAPS_JSON).read_text())["pixel_threshold"]
        threshold = PixelThreshold(**saved) if saved else None
    return MapFiles(folder, tuple(files), tuple(r[1] for r in rows) if named else None, threshold)


def evaluate_maps(
    maps: MapFiles,
    truth: GroundTruth,
    fpr_limit: float = FPR_LIMIT,
    exact_pixels: int | None = EXACT_PIXELS,
) -> PixelEvaluation:
    """Pixel AUROC and AUPRO of ``maps`` against ``truth``'s masks, each map resized bilinearly
    to its mask's size (the size of the image's file); the maps must be the scored images'.
    Read one pair at a time, in a fixed shuffled order (so the first ones represent the set if
    the evaluator has to bin)."""
    if truth.masks is None and truth.images is not None:  # an MVTec AD category without ground_truth/
        raise InputError(Path(truth.source) / "ground_truth", "masks for the pixel metrics (--maps)", "none")
    if truth.masks is None:
        raise OddeyeError("pixel metrics need masks: give --dataset CATEGORY, or --masks with --labels")
    index = maps.folder / MAPS_CSV
    if len(maps) != len(truth):
        raise InputError(index, f"{len(truth)} maps (one per scored image)", f"{len(maps)}")
    if maps.paths is not None and truth.paths is not None:
        for i, (want, got) in enumerate(zip(truth.paths, maps.paths, strict=True)):
            if want != got:
                raise InputError(
                    index, f"maps of the scored images in order ({want!r} on row {i})", repr(got)
                )
    evaluator = PixelEvaluator(fpr_limit, exact_pixels)
    for i in np.random.default_rng(0).permutation(len(maps)):
        mask = truth.masks.mask(int(i))
        evaluator.add(resize_map(maps.map(int(i)), mask.shape), mask)
    return evaluator.result()
