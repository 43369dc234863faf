"""A review session: a run, the images it scored, their marks, and the pictures the page shows.

Nothing here knows about HTTP (:mod:`oddeye.review.app` serves it). What is kept in memory is a few
numbers per image (score, calibrated score, rank); every picture is made when first asked for and
kept in a cache folder on disk, never in memory:

- ``images-KEY/``: thumbnails (``thumbs/ID.jpg``) and full-size pictures of array images
  (``full/ID.png``), for one set of images (KEY: its files' names, sizes and times);
- ``run-KEY/``: the scores (``scores.npy``, so a restart does not score again), the anomaly maps
  (``maps/ID.png``, coloured, transparent where the map is low) and reconstructions, for one run
  on that set (KEY: the run's folder and its weights' size and time).

"Add the images marked normal to the model" runs :func:`oddeye.update` into a new run folder and
scores the set again in a background thread; the session then works on the new run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oddeye.api import load, update, updated_path
from oddeye.data.decode import decode, reason
from oddeye.data.masks import GroundTruth, ground_truth, mvtec_category
from oddeye.detectors.base import needs_training
from oddeye.errors import OddeyeError
from oddeye.estimator import Detector, ImagesLike
from oddeye.io import atomic_path
from oddeye.maps import COLORMAP, PixelThreshold, heat_level
from oddeye.progress import Task
from oddeye.review.marks import NORMAL, MarksFile
from oddeye.runs import save_threshold
from oddeye.scoring import infer, iter_results
from oddeye.thresholds import Threshold
from oddeye.training.update import images_sha256

THUMB_SIDE = 160  # thumbnails fit in THUMB_SIDE x THUMB_SIDE (never enlarged)
PAGE_SIZE = 60
VIEWS = 16  # frozen listings kept (each: one id per image it lists)
SORTS = ("score", "score-asc", "id")
FILTERS = ("all", "flagged", "unflagged", "unmarked", "marked", "normal", "anomalous")
WEB_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
HEAT_ALPHA = 0.85  # the map's opacity at the top of its colour scale (the page's slider scales it)


class Busy(OddeyeError):
    """The session cannot do that now (an update is running, or there is nothing to add)."""


@dataclass
class Job:
    """The update that runs in the background, as the page polls it."""

    state: str = "idle"  # idle | running | done | failed
    phase: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    result: dict[str, Any] | None = None
    started: float = 0.0

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(time.time() - self.started, 1) if self.started else 0.0
        return out


@dataclass
class Scored:
    """One run's numbers for the set under review, and where its pictures go."""

    det: Detector
    run: Path
    scores: np.ndarray  # (N,) float64, higher = more anomalous
    calibrated: np.ndarray | None  # fraction of held-out normal images scoring lower
    rank: np.ndarray  # (N,) 1 = the most anomalous
    cache: Path
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    pixel: PixelThreshold | None = None
    has_maps: bool | None = None  # known once a map was made
    has_recon: bool | None = None

    @property
    def threshold(self) -> Threshold | None:
        return self.det.threshold_

    def flagged(self, threshold: float | None = None) -> np.ndarray:
        """Images above ``threshold`` (the run's own when None) as bools; none without one."""
        if threshold is None:
            threshold = self.threshold.value if self.threshold is not None else None
        if threshold is None:
            return np.zeros(len(self.scores), bool)
        return self.scores > threshold


class Review:
    """``oddeye review RUN IMAGES``: everything the page asks about, by image id only."""

    def __init__(
        self,
        run: str | Path,
        images: ImagesLike,
        *,
        labels: str | Path | np.ndarray | None = None,
        masks: str | Path | np.ndarray | None = None,
        marks: str | Path = "marks.csv",
        cache: str | Path | None = None,
        size: tuple[int, int] | None = None,
        device: str = "auto",
        progress: bool = True,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.device, self.progress, self.page_size = device, progress, page_size
        det = load(run, device=device, progress=progress)
        self.data = det.prepare(images, size=size)
        self.n = len(self.data)
        self.source = self.data.source
        self.category = mvtec_category(images)
        self.truth = self._truth(labels, masks)
        self.cache_root = Path(cache) if cache is not None else default_cache()
        self.image_cache = self.cache_root / f"images-{images_key(self.data, size)}"
        self.marks = MarksFile(marks, self.n, self.data.paths)
        self.lock = threading.RLock()  # the model in use: maps, and the switch to an updated run
        self.added: set[int] = set()  # ids added to the model by this session
        self.history: list[dict[str, Any]] = []
        self._views: OrderedDict[int, np.ndarray] = OrderedDict()  # frozen listings, newest last
        self._next_view = 0
        self._views_lock = threading.Lock()
        self.job = Job()
        self._job_lock = threading.Lock()
        self.current = self._scored(det, Path(run), progress)

    # -- what the page lists ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        s = self.current
        t = s.threshold
        return {
            "run": str(s.run),
            "detector": s.det.detector,
            "n": self.n,
            "shape": list(self.data.shape),
            "source": self.source,
            "folder": self.data.paths is not None,
            "threshold": None if t is None else {**t.to_dict(), "describe": t.describe()},
            "calibrated": s.calibrated is not None,
            "labels": self.truth is not None,
            "masks": self.truth is not None and self.truth.masks is not None,
            "marks": len(self.marks),
            "marks_file": str(self.marks.path),
            "resumed": self.marks.resumed,
            "to_add": len(self.pending()),
            "added": len(self.added),
            "history": self.history,
            "page_size": self.page_size,
            "images_key": self.image_cache.name.removeprefix("images-"),
            "run_key": s.cache.name,
            "job": self.job.state,
            "sorts": list(SORTS),
            "filters": list(FILTERS),
        }

    def scores_json(self) -> dict[str, Any]:
        """Every score (id order), for the histogram and the live count at a moved threshold."""
        s = self.current
        return {
            "scores": s.scores.tolist(),  # float64, as the flags on the server are drawn
            "labels": None if self.truth is None else self.truth.labels.astype(int).tolist(),
            "marks": {str(i): v for i, v in sorted(self.marks.snapshot().items())},
        }

    def page(
        self,
        sort: str = "score",
        filt: str = "all",
        page: int = 0,
        threshold: float | None = None,
        thumbs: bool = False,
        view: int | None = None,
    ) -> dict[str, Any]:
        """One page of ``page_size`` images in ``sort`` order among those ``filt`` keeps; with
        ``thumbs``, each item carries its thumbnail as a data URL (one request shows a page).

        The listing is frozen when it is made and named by the answer's ``view``: pages asked for
        with that ``view`` index the same list, so marking the images of a page shown "not marked"
        does not shift the next page past images never shown. A view that is gone (a few are
        kept) is made again."""
        s = self.current
        with self._views_lock:
            order = self._views.get(view) if view is not None else None
            if order is None:
                order = self._order(s, sort)
                if filt != "all":
                    order = order[self._keep(s, filt, threshold)[order]]
                view, self._next_view = self._next_view, self._next_view + 1
                self._views[view] = order
                while len(self._views) > VIEWS:
                    self._views.popitem(last=False)
        pages = max(1, -(-len(order) // self.page_size))
        page = min(max(page, 0), pages - 1)
        ids = order[page * self.page_size : (page + 1) * self.page_size]
        items = [self.item(int(i)) for i in ids]
        if thumbs:
            for item, data in zip(items, _pool().map(self._thumbnail_or_reason, [int(i) for i in ids])):
                if isinstance(data, bytes):
                    item["thumb"] = "data:image/jpeg;base64," + base64.b64encode(data).decode()
                else:  # a file gone or broken since it was scored: said, and the page goes on
                    item["thumb"], item["thumb_error"] = None, data
        listing = {"total": int(len(order)), "page": page, "pages": pages, "view": view}
        return {**listing, "items": items}

    def item(self, i: int) -> dict[str, Any]:
        s = self.current
        out: dict[str, Any] = {
            "id": i,
            "score": float(s.scores[i]),
            "calibrated": None if s.calibrated is None else float(s.calibrated[i]),
            "rank": int(s.rank[i]),
            "mark": self.marks.labels.get(i),
            "added": i in self.added,
        }
        if self.data.paths is not None:
            out["path"] = self.data.paths[i]
        if self.truth is not None:
            out["label"] = int(self.truth.labels[i])
            out["defect"] = self.truth.defects[i]
        return out

    def detail(self, i: int) -> dict[str, Any]:
        """An image's record with what its detail view can show (its map is made now, if new)."""
        s = self.current
        self.map_files(i)
        mask = self.truth is not None and self.truth.masks is not None and self.truth.labels[i] == 1
        return {**self.item(i), "map": bool(s.has_maps), "recon": bool(s.has_recon), "mask": bool(mask)}

    def _order(self, s: Scored, sort: str) -> np.ndarray:
        if sort not in s.orders:
            if sort == "score":
                s.orders[sort] = np.argsort(-s.scores, kind="stable")
            elif sort == "score-asc":
                s.orders[sort] = np.argsort(s.scores, kind="stable")
            else:
                s.orders[sort] = np.arange(self.n)
        return s.orders[sort]

    def _keep(self, s: Scored, filt: str, threshold: float | None) -> np.ndarray:
        keep = np.zeros(self.n, bool)
        given = self.marks.snapshot()
        marked = np.fromiter(given.keys(), np.int64, len(given))
        values = np.fromiter(given.values(), np.int64, len(given))
        if filt in ("flagged", "unflagged"):
            flagged = s.flagged(threshold)
            return flagged if filt == "flagged" else ~flagged
        if filt == "unmarked":
            keep[:] = True
            keep[marked] = False
        elif filt == "marked":
            keep[marked] = True
        else:
            keep[marked[values == (NORMAL if filt == "normal" else 1)]] = True
        return keep

    # -- marks --------------------------------------------------------------------------------
    def mark(self, i: int, label: int | None) -> dict[str, Any]:
        self.marks.set(i, label)
        return {"id": i, "mark": label, "marks": len(self.marks), "to_add": len(self.pending())}

    def undo(self) -> dict[str, Any] | None:
        done = self.marks.undo()
        if done is None:
            return None
        return {"id": done[0], "mark": done[1], "marks": len(self.marks), "to_add": len(self.pending())}

    def pending(self) -> list[int]:
        """Images marked normal that the model does not hold yet."""
        return [i for i in self.marks.with_label(NORMAL) if i not in self.added]

    # -- the threshold ------------------------------------------------------------------------
    def save_threshold(self, value: float) -> Threshold:
        """``value`` becomes the run's operating threshold, written into its model.json as
        ``oddeye score --threshold VALUE`` writes it."""
        if not np.isfinite(value):
            raise OddeyeError(f"threshold: expected a finite number, found {value!r}")
        if self.job.state == "running":  # it would go into the run being replaced
            raise Busy("an update is running; save the threshold once it has finished (into the new run)")
        s = self.current
        basis = (
            f"set in oddeye review, {int((s.scores > value).sum())} of {self.n} images of {self.source} above"
        )
        chosen = Threshold(repr(float(value)), float(value), basis)
        with self.lock:
            save_threshold(s.run, chosen)
            s.det.threshold_ = chosen
        return chosen

    # -- pictures -----------------------------------------------------------------------------
    def thumbnail(self, i: int) -> Path:
        f = self.image_cache / "thumbs" / f"{i}.jpg"
        if not f.exists():
            im = self._picture(i, draft=True)
            im.thumbnail(
                (THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS if im.width > 64 else Image.NEAREST
            )
            _save(im, f, "JPEG", quality=90)
        return f

    def _thumbnail_or_reason(self, i: int) -> bytes | str:
        try:
            return self.thumbnail(i).read_bytes()
        except OddeyeError as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - Pillow and the file system raise many kinds
            return f"{self._file(i) or f'image {i}'}: {reason(e)}"

    def full(self, i: int) -> tuple[Path, str]:
        """The image at its own size: a folder's file as it is where browsers show its format,
        else a PNG made once."""
        original = self._file(i)
        if original is not None:
            with Image.open(original) as im:
                kind = WEB_FORMATS.get(im.format or "")
            if kind is not None:
                return original, kind
        f = self.image_cache / "full" / f"{i}.png"
        if not f.exists():
            _save(self._picture(i), f, "PNG")
        return f, "image/png"

    def map_files(self, i: int) -> tuple[Path | None, Path | None]:
        """The anomaly map (coloured PNG) and reconstruction of image ``i``, made once per run."""
        s = self.current
        heat, recon = s.cache / "maps" / f"{i}.png", s.cache / "maps" / f"{i}-recon.png"
        if s.has_maps is None or (s.has_maps and not heat.exists()):
            with self.lock:
                if s.pixel is None and s.det.heldout_scores_ is not None:  # once per run, on first use
                    s.pixel = s.det.pixel_threshold()
                out = infer(
                    s.det.model_,
                    self.data,
                    s.det.device_,
                    1,
                    maps=True,
                    indices=np.array([i]),
                    progress=False,
                )
            s.has_maps = out.anomaly_maps is not None
            s.has_recon = out.reconstructions is not None
            if out.anomaly_maps is not None:
                _save(heat_picture(out.anomaly_maps[0], s.pixel), heat, "PNG")
            if out.reconstructions is not None:
                _save(self._recon_picture(out.reconstructions[0]), recon, "PNG")
        return (heat if s.has_maps else None), (recon if s.has_recon else None)

    def mask_file(self, i: int) -> Path | None:
        """The true region of an anomalous image (where the data has masks) as a green PNG."""
        if self.truth is None or self.truth.masks is None or self.truth.labels[i] == 0:
            return None
        f = self.image_cache / "masks" / f"{i}.png"
        if not f.exists():
            _save(mask_picture(self.truth.masks.mask(i)), f, "PNG")
        return f

    def _file(self, i: int) -> Path | None:
        return Path(self.source) / self.data.paths[i] if self.data.paths is not None else None

    def _picture(self, i: int, draft: bool = False) -> Image.Image:
        original = self._file(i)
        mode = "L" if self.data.shape[2] == 1 else "RGB"
        if original is not None:
            with Image.open(original) as im:
                if draft and im.format == "JPEG":  # no transparency: decoded at a fraction of the size
                    im.draft(mode, (THUMB_SIDE, THUMB_SIDE))
                    return im.convert(mode)
            return Image.fromarray(decode(original, mode))  # on white, as the model saw it
        pixels = (self.data.display(np.array([i]))[0] * 255).round().astype(np.uint8)
        return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)

    def _recon_picture(self, recon: np.ndarray) -> Image.Image:
        norm = self.data.normalisation
        pixels = np.clip((recon - norm.lo) / (norm.hi - norm.lo), 0, 1)
        pixels = (pixels * 255).round().astype(np.uint8)
        return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)

    # -- adding the images marked normal ------------------------------------------------------
    def start_update(self, out: str | Path | None = None) -> Job:
        """Start adding the images marked normal to the model (a new run), in the background."""
        with self._job_lock:
            if self.job.state == "running":
                raise Busy("an update is already running; wait for it to finish")
            ids = self.pending()
            if not ids:
                raise Busy("no images are marked normal that the model does not hold already")
            refusal = needs_training(self.current.det.model_)
            if refusal is not None:
                raise Busy(refusal)
            self.job = Job("running", "adding images", 0, len(ids), started=time.time())
        target = Path(out) if out is not None else next_run(self.current.run)
        threading.Thread(target=self._update, args=(ids, target), daemon=True, name="oddeye-update").start()
        return self.job

    def _update(self, ids: list[int], target: Path) -> None:
        job, before = self.job, self.current
        try:
            picked = np.asarray(ids)
            images = np.ascontiguousarray(self.data.array[picked])
            update(before.run, images, target, device=self.device, progress=False)
            det = load(target, device=self.device, progress=False)
            job.phase, job.done, job.total = "scoring", 0, self.n
            after = self._scored(det, target, progress=False, job=job)
            was, now = before.flagged(), after.flagged()
            result = {
                "run": str(target),
                "from": str(before.run),
                "added": len(ids),
                "flagged_before": int(was.sum()),
                "flagged_after": int(now.sum()),
                "added_flagged_before": int(was[picked].sum()),
                "added_flagged_after": int(now[picked].sum()),
                "threshold_before": None if before.threshold is None else before.threshold.value,
                "threshold_after": None if after.threshold is None else after.threshold.value,
            }
            with self.lock:
                self.current = after
                self.added.update(ids)
                self.history.append(result)
            job.result, job.state, job.phase = result, "done", "done"
            job.message = describe_update(result)
        except OddeyeError as e:
            job.state, job.message = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - a bug: said on the page, and the session goes on
            job.state, job.message = "failed", f"internal error ({type(e).__name__}: {e})"

    # -- scoring ------------------------------------------------------------------------------
    def _scored(self, det: Detector, run: Path, progress: bool, job: Job | None = None) -> Scored:
        cache = self.cache_root / f"run-{run_key(run)}-{self.image_cache.name.removeprefix('images-')}"
        kept = cache / "scores.npy"
        scores = None
        if kept.exists():
            try:
                scores = np.load(kept, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                scores = None
            if scores is not None and scores.shape != (self.n,):
                scores = None
        if scores is None:
            scores = self._score(det, progress, job)
            with atomic_path(kept) as tmp, open(tmp, "wb") as f:
                np.save(f, scores)
        calibrated = (
            det.calibrate(scores) if det.heldout_scores_ is not None and len(det.heldout_scores_) else None
        )
        order = np.argsort(-scores, kind="stable")  # the "score" listing's order, and the ranks
        rank = np.empty(self.n, np.int64)
        rank[order] = np.arange(1, self.n + 1)
        return Scored(det, run, scores, calibrated, rank, cache, orders={"score": order})

    def _score(self, det: Detector, progress: bool, job: Job | None) -> np.ndarray:
        batch = det._settings().score_batch_size
        parts = []
        with Task(f"scoring {self.n} images for review", self.n, "images", progress) as bar:
            for out in iter_results(det.model_, self.data, det.device_, batch, progress=False):
                parts.append(out.scores)
                bar.update(len(out.scores))
                if job is not None:
                    job.done += len(out.scores)
        return np.concatenate(parts) if parts else np.zeros(0)

    def _truth(self, labels: Any, masks: Any) -> GroundTruth | None:
        if self.category is not None:
            if labels is not None or masks is not None:
                found = "--labels or --masks too (its layout holds them)"
                raise OddeyeError(f"{self.category}: expected an MVTec AD category alone, found {found}")
            return ground_truth(self.category, n=self.n, paths=self.data.paths)
        if labels is None:
            if masks is not None:
                raise OddeyeError("--masks: give --labels too (which images are anomalous)")
            return None
        return ground_truth(
            n=self.n, paths=self.data.paths, labels=labels, masks=masks, scores_source=self.source
        )


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """Threads that make a page's thumbnails together (Pillow decodes and encodes without the GIL)."""
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="oddeye-thumbs")


def describe_update(r: dict[str, Any]) -> str:
    head = (
        f"added {r['added']} image{'s' if r['added'] != 1 else ''} marked normal to the model: {r['run']} "
        f"(from {r['from']}, unchanged)."
    )
    if r["threshold_before"] is None or r["threshold_after"] is None:
        which = "the old run had" if r["threshold_before"] is None else "the new run has"
        return f"{head} No flags to compare: {which} no threshold."
    return (
        f"{head} Flagged at each run's threshold ({r['threshold_before']:.4g}, then "
        f"{r['threshold_after']:.4g}): {r['flagged_before']} before, {r['flagged_after']} after; of the "
        f"images added, {r['added_flagged_before']} before and {r['added_flagged_after']} after."
    )


def heat_picture(amap: np.ndarray, pixel: PixelThreshold | None) -> Image.Image:
    """The map as RGBA: coloured by :data:`oddeye.maps.COLORMAP` on the overlays' scale, its
    opacity rising with the value (transparent where the map is low)."""
    from matplotlib import colormaps

    level = heat_level(amap, amap, pixel)
    rgba = colormaps[COLORMAP](level)
    rgba[..., 3] = HEAT_ALPHA * np.sqrt(level)
    return Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA")


def mask_picture(mask: np.ndarray) -> Image.Image:
    """A true region as RGBA: a light green fill with a solid outline, transparent elsewhere."""
    from scipy import ndimage

    width = max(1, min(mask.shape) // 128)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=width)
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = (50, 255, 50, 60)
    rgba[edge] = (50, 255, 50, 255)
    return Image.fromarray(rgba, "RGBA")


def _save(im: Image.Image, path: Path, fmt: str, **options: Any) -> None:
    """``im`` to ``path`` atomically (two requests for the same picture never see half of one)."""
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **options)


def default_cache() -> Path:
    """$XDG_CACHE_HOME/oddeye/review, or ~/.cache/oddeye/review."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oddeye" / "review"


def images_key(data: Any, size: tuple[int, int] | None) -> str:
    """A name for one set of images: its source, size and times (its files', for a folder)."""
    source = Path(data.source)
    if data.paths is None and not source.is_file():  # an array given in memory: its bytes
        return images_sha256(data)[:16]
    parts: list[Any] = [str(source.resolve()), list(data.shape), len(data), size]
    files = [source / p for p in data.paths] if data.paths is not None else [source]
    digest = hashlib.sha256(json.dumps(parts).encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def run_key(run: Path) -> str:
    """A name for one run: its folder and its weights' size and time (a threshold saved into its
    model.json changes no score, so it changes no key)."""
    weights = run / "model.safetensors"
    st = weights.stat()
    text = f"{run.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def next_run(run: Path) -> Path:
    """Where an update of ``run`` goes: RUN-updated, or RUN-updated-2, -3, ... if that exists (an
    updated run's own update counts on: runs/a-updated -> runs/a-updated-2)."""
    first = updated_path(run)
    first = first.with_name(re.sub(r"-updated(-\d+)?-updated$", "-updated", first.name))
    candidate, k = first, 2
    while candidate.exists():
        candidate = first.with_name(f"{first.name}-{k}")
        k += 1
    return candidate
