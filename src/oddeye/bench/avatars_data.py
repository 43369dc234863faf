"""The avatars data set: cartoon faces with one odd part, and each anomaly's exact mask.

Faces are DiceBear's ``avataaars`` style (Pablo Stanley's artwork, free for personal and
commercial use), drawn by ``avatars.mjs`` in node and rasterised by resvg on white. A normal face
is any face the style draws with its default options, less three values kept for the anomalies:
mouth ``vomit``, the shirt graphics ``skull`` and ``skullOutline``, facial hair
``moustacheMagnum``. An anomaly is a fresh face (a seed of its own, never a training seed) drawn
twice from the same seed, once as normal and once with one part forced; the style's seeded
generator makes the same draws whatever the options, so every other part stays, and the mask is
where the two drawings differ. Two defects replace a part every face has at its place (the mouth,
the graphic on a graphic shirt) and one adds a part (a moustache on a face drawn without facial
hair), so the change is always small and local. A change hardly visible at the size (a skull on
a white shirt or under a hijab, a moustache the colour of the skin) is drawn again from another
seed, ``SEED-rK``; ``avatars.json`` lists those.

Written as MVTec AD folders, one category per size: ``avatarsSIZE/train/good/000000.png``,
``test/good/``, ``test/DEFECT/`` and ``ground_truth/DEFECT/000000_mask.png`` (0/255, mode L),
plus ``avatars.json`` (counts, versions, mask areas). Everything follows from the seeds
(``train-I``, ``test-good-I``, ``test-DEFECT-I``): two runs write the same bytes.

``avatarsSIZE-strays`` (``oddeye bench avatars-data --strays N``) is the contamination pool of
``oddeye bench avatars --contamination``: faces drawn as the test faces are, from seeds of their own
(``strays-test-DEFECT-I``, never a training or test seed of another category), no training images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oddeye.bench.common import AVATARS_NPM_DIR
from oddeye.errors import OddeyeError

if TYPE_CHECKING:
    import numpy as np

RENDERER = Path(__file__).with_name("avatars.mjs")
PACKAGES = ("@dicebear/core@9.4.3", "@dicebear/avataaars@9.4.3", "@resvg/resvg-js@2.6.2")
# Values a normal face never draws: each is one anomaly's forced part.
EXCLUDED = {
    "mouth": ["vomit"],
    "clothingGraphic": ["skull", "skullOutline"],
    "facialHair": ["moustacheMagnum"],
}
TOLERANCE = 8  # a channel differing by more (of 255) is a changed pixel: the mask
VISIBLE = 32  # an anomaly's median difference over its mask is at least this, else it is redrawn
MIN_AREA = 0.003  # and its mask covers at least this share of the image (a skull under a hijab: not)
REDRAWS = 100  # attempts at a seed whose forced part shows hardly at all at the size


@dataclass(frozen=True)
class Defect:
    """One kind of anomaly: options forced in its drawing (``part``) and in both drawings
    (``both``: what makes the change local, e.g. the shirt that shows a graphic)."""

    name: str
    part: dict[str, Any]
    both: dict[str, Any] = field(default_factory=dict)


DEFECTS = (
    Defect("mouth_vomit", {"mouth": ["vomit"]}),
    Defect("graphic_skull", {"clothingGraphic": ["skull", "skullOutline"]}, {"clothing": ["graphicShirt"]}),
    Defect(
        "moustache_magnum",
        {"facialHair": ["moustacheMagnum"], "facialHairProbability": 100},
        {"facialHairProbability": 0},
    ),
)
DEFECT_NAMES = tuple(d.name for d in DEFECTS)


STRAYS_PREFIX = "strays-"  # the seeds of a contamination pool: no other category draws them


def strays_name(size: int) -> str:
    """``avatarsSIZE-strays``: the faces with one part changed that ``--contamination`` plants in
    a training set of that size."""
    return f"avatars{size}-strays"


def category_name(size: int, n_train: int | None = None) -> str:
    """``avatarsSIZE``, the benchmark's category of that size; ``avatarsSIZE-nN`` with ``n_train``:
    one of N training images (``oddeye bench avatars --n N``, the homework's size)."""
    return f"avatars{size}" + ("" if n_train is None else f"-n{n_train}")


# ----------------------------------------------------------------------------------------- renderer
def node_modules_ok(modules: str | Path) -> bool:
    """Whether ``modules/node_modules`` holds the three packages at their pinned versions."""
    for spec in PACKAGES:
        name, version = spec.rsplit("@", 1)
        try:
            meta = json.loads((Path(modules) / "node_modules" / name / "package.json").read_text())
        except (OSError, ValueError):
            return False
        if meta.get("version") != version:
            return False
    return True


def install_modules(modules: str | Path) -> Path:
    """``npm install`` the pinned packages into ``modules`` (kept if already there)."""
    modules = Path(modules)
    if node_modules_ok(modules):
        return modules
    if shutil.which("npm") is None:
        raise OddeyeError(f"npm is needed to install {', '.join(PACKAGES)} into {modules}; install node 18+")
    modules.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(modules), *PACKAGES]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not node_modules_ok(modules):
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit code {proc.returncode}"]
        raise OddeyeError(f"npm install {' '.join(PACKAGES)} failed: {lines[-1]}")
    return modules


class Renderer:
    """A node process drawing faces of ``size`` pixels: ``draw(seed, force)`` -> (H, W, 3) uint8."""

    def __init__(self, modules: str | Path, size: int) -> None:
        if shutil.which("node") is None:
            raise OddeyeError("node is needed to draw the avatars (node 18+, https://nodejs.org)")
        if not node_modules_ok(modules):
            raise OddeyeError(
                f"{modules}: expected node_modules with {', '.join(PACKAGES)}; run make bench-data"
            )
        self.size = size
        cmd = ["node", str(RENDERER), str(Path(modules).resolve()), str(size), json.dumps(EXCLUDED)]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def draw(self, seed: str, force: dict[str, Any] | None = None) -> np.ndarray:
        [image] = self.draw_all([(seed, force or {})])
        return image

    def draw_all(self, jobs: Sequence[tuple[str, dict[str, Any]]]) -> Iterator[np.ndarray]:
        """The drawings of ``jobs`` (seed, forced options), in order; the jobs go to node from a
        thread while the drawings come back, so node never waits on a round trip."""
        import threading

        import numpy as np

        assert self._proc.stdin is not None and self._proc.stdout is not None
        lines = b"".join((json.dumps({"seed": s, "force": f}) + "\n").encode() for s, f in jobs)
        feeder = threading.Thread(target=self._send, args=(lines,), daemon=True)
        feeder.start()
        n = self.size * self.size * 4
        for seed, _ in jobs:
            data = self._proc.stdout.read(n)
            if len(data) != n:
                raise OddeyeError(f"{RENDERER.name} stopped drawing at seed {seed!r}: {self._error()}")
            yield np.frombuffer(data, np.uint8).reshape(self.size, self.size, 4)[..., :3]
        feeder.join()

    def _send(self, lines: bytes) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(lines)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # node stopped: the reader reports its error

    def _error(self) -> str:
        self._proc.kill()
        err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
        return (err.splitlines() or ["no message"])[-1]

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) uint8: the largest channel difference of two drawings at each pixel."""
    import numpy as np

    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1).astype(np.uint8)


def pair_jobs(defect: Defect, seed: str) -> list[tuple[str, dict[str, Any]]]:
    """The two drawings of an anomaly: the face as normal, then with the defect's part forced."""
    return [(seed, defect.both), (seed, {**defect.both, **defect.part})]


def visible_mask(normal: np.ndarray, odd: np.ndarray) -> np.ndarray | None:
    """The mask of an anomaly's change, or None when it is hardly visible: faint (its median
    difference under ``VISIBLE``: a skull on a white shirt, a moustache the colour of the skin) or
    tiny (under ``MIN_AREA`` of the image: a shirt's graphic all but hidden by a hijab)."""
    import numpy as np

    diff = difference(normal, odd)
    mask = diff > TOLERANCE
    return mask if mask.mean() >= MIN_AREA and np.median(diff[mask]) >= VISIBLE else None


def redrawn(renderer: Renderer, defect: Defect, seed: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(image, mask, K) for a seed whose change was hardly visible: drawn again as ``SEED-rK``, the first
    K = 1, 2, ... that shows one."""
    for k in range(1, REDRAWS):
        normal, odd = renderer.draw_all(pair_jobs(defect, f"{seed}-r{k}"))
        mask = visible_mask(normal, odd)
        if mask is not None:
            return odd, mask, k
    raise OddeyeError(
        f"{defect.name}: {REDRAWS} seeds from {seed!r} drew no visible change at {renderer.size}px"
    )


# -------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Item:
    """One image to write: its folder under the category, index and seed; ``defect`` for anomalies."""

    folder: str  # train/good, test/good or test/DEFECT
    index: int
    seed: str
    defect: str | None = None

    @property
    def file(self) -> str:
        return f"{self.folder}/{self.index:06d}.png"

    @property
    def mask_file(self) -> str:
        return f"ground_truth/{self.defect}/{self.index:06d}_mask.png"


def defect_counts(n_anomalous: int) -> dict[str, int]:
    """The anomalous test images per defect: a third each, the first ones taking the remainder."""
    k = len(DEFECTS)
    return {d.name: n_anomalous // k + (i < n_anomalous % k) for i, d in enumerate(DEFECTS)}


def items(n_train: int, n_test: int, prefix: str = "") -> list[Item]:
    """Every image of a category: ``n_train`` normal, then ``n_test`` test (half normal, rounded
    down); every seed starts with ``prefix`` (a contamination pool's: :data:`STRAYS_PREFIX`)."""
    out = [Item("train/good", i, f"{prefix}train-{i}") for i in range(n_train)]
    out += [Item("test/good", i, f"{prefix}test-good-{i}") for i in range(n_test // 2)]
    for name, n in defect_counts(n_test - n_test // 2).items():
        out += [Item(f"test/{name}", i, f"{prefix}test-{name}-{i}", name) for i in range(n)]
    return out


def _write_items(root: str, modules: str, size: int, todo: Sequence[Item]) -> list[tuple[Item, float, int]]:
    """Draw and write ``todo`` under ``root`` (one worker's share): (item, mask share, K) of each
    anomaly, K > 0 where it was redrawn as ``SEED-rK``. The first drawings stream through node; the
    few seeds redrawn come after."""
    from PIL import Image

    by_name = {d.name: d for d in DEFECTS}

    def jobs(item: Item) -> list[tuple[str, dict[str, Any]]]:
        return [(item.seed, {})] if item.defect is None else pair_jobs(by_name[item.defect], item.seed)

    def save(item: Item, image: np.ndarray, mask: np.ndarray | None = None) -> None:
        Image.fromarray(image, "RGB").save(Path(root, item.file))
        if mask is not None:
            Image.fromarray(mask.astype("uint8") * 255, "L").save(Path(root, item.mask_file))

    out, again = [], []
    with Renderer(modules, size) as renderer:
        drawings = renderer.draw_all([j for item in todo for j in jobs(item)])
        for item in todo:
            image = next(drawings)
            if item.defect is None:
                save(item, image)
                continue
            odd = next(drawings)
            mask = visible_mask(image, odd)
            if mask is None:
                again.append(item)
                continue
            save(item, odd, mask)
            out.append((item, float(mask.mean()), 0))
        for item in again:
            odd, mask, k = redrawn(renderer, by_name[item.defect], item.seed)
            save(item, odd, mask)
            out.append((item, float(mask.mean()), k))
    return out


def _chunks(seq: Sequence[Item], k: int) -> Iterator[Sequence[Item]]:
    step = max(1, -(-len(seq) // k))
    for start in range(0, len(seq), step):
        yield seq[start : start + step]


def rules() -> dict[str, Any]:
    """How a category is drawn, besides its size and counts (JSON-like: as ``avatars.json`` has it)."""
    return {
        "packages": list(PACKAGES),
        "excluded_from_normal": EXCLUDED,
        "defects": {d.name: {"forced": d.part, "both_drawings": d.both} for d in DEFECTS},
        "tolerance": TOLERANCE,
        "visible": VISIBLE,
        "min_area": MIN_AREA,
    }


@dataclass
class Category:
    """What :func:`generate` wrote (the contents of ``avatars.json``)."""

    path: Path
    size: int
    n_train: int
    n_test_good: int
    anomalous: dict[str, int]
    redrawn: dict[str, str]  # file -> the seed it was drawn from, where not its own
    mask_share: dict[str, dict[str, float]]  # per defect: mean, min, max share of the image
    seconds: float = 0.0
    kept: bool = False  # already complete: nothing drawn
    prefix: str = ""  # every seed's start (a contamination pool's: STRAYS_PREFIX)

    def record(self) -> dict[str, Any]:
        return {
            "category": self.path.name,
            "size": self.size,
            **rules(),
            "seeds": f"{self.prefix}train-I, {self.prefix}test-good-I, {self.prefix}test-DEFECT-I (SEED-rK "
            "where a change was faint or tiny)",
            "seed_prefix": self.prefix,
            "n_train": self.n_train,
            "n_test_good": self.n_test_good,
            "anomalous": self.anomalous,
            "redrawn": self.redrawn,
            "redrawn_per_defect": {d: sum(f.split("/")[1] == d for f in self.redrawn) for d in DEFECT_NAMES},
            "mask_share": self.mask_share,
        }


def generate(
    out_dir: str | Path,
    size: int,
    n_train: int,
    n_test: int,
    modules: str | Path = AVATARS_NPM_DIR,
    workers: int | None = None,
    name: str | None = None,
    prefix: str = "",
) -> Category:
    """Write the category ``name`` (default ``avatarsSIZE``) under ``out_dir`` (kept if complete):
    drawn into a temporary folder by ``workers`` processes, renamed when whole, so an interrupted run
    leaves nothing that looks complete. Every seed starts with ``prefix`` (see :func:`items`)."""
    import time

    import numpy as np

    from oddeye.io import atomic_dir, write_text

    path = Path(out_dir) / (name or category_name(size))
    done = _read_done(path, size, n_train, n_test, prefix)
    if done is not None:
        return done
    least = 0 if prefix else 1  # a contamination pool has no training images
    if size < 8 or n_train < least or n_test < 2:
        raise OddeyeError(
            f"avatars: expected size >= 8, n_train >= {least}, n_test >= 2; found {size}, {n_train}, {n_test}"
        )
    Renderer(modules, size).close()  # node and the packages are there: fail before forking
    start = time.perf_counter()
    todo = items(n_train, n_test, prefix)
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    with atomic_dir(path, force=True) as tmp:
        for folder in {i.folder for i in todo} | {f"ground_truth/{d}" for d in DEFECT_NAMES}:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(workers) as pool:
            parts = list(_chunks(todo, workers * 4))
            jobs = [pool.submit(_write_items, str(tmp), str(modules), size, p) for p in parts]
            drawn = [row for job in jobs for row in job.result()]
        shares = {d: np.array([s for item, s, _ in drawn if item.defect == d]) for d in DEFECT_NAMES}
        category = Category(
            path,
            size,
            n_train,
            n_test // 2,
            defect_counts(n_test - n_test // 2),
            {
                item.file: f"{item.seed}-r{k}"
                for item, _, k in sorted(drawn, key=lambda row: row[0].file)
                if k
            },
            {
                d: {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
                for d, v in shares.items()
                if v.size
            },
            prefix=prefix,
        )
        write_text(tmp / "avatars.json", json.dumps(category.record(), indent=2) + "\n")
    category.seconds = time.perf_counter() - start
    return category


def _read_done(path: Path, size: int, n_train: int, n_test: int, prefix: str = "") -> Category | None:
    """The category at ``path`` when complete with these counts and rules; an error when it holds
    others (nothing is removed that someone may be using)."""
    try:
        rec = json.loads((path / "avatars.json").read_text())
    except (OSError, ValueError):
        if path.exists() and any(path.iterdir()):
            raise OddeyeError(
                f"{path}: expected an avatars category (avatars.json), found other files"
            ) from None
        return None
    wanted = (size, n_train, n_test // 2, defect_counts(n_test - n_test // 2))
    found = (rec.get("size"), rec.get("n_train"), rec.get("n_test_good"), rec.get("anomalous"))
    if found != wanted:
        raise OddeyeError(
            f"{path}: expected size {size}, {n_train} train, {n_test} test images, found size {found[0]}, "
            f"{found[1]} train, {found[2]} + {sum((found[3] or {}).values())} test; remove it to draw again"
        )
    changed = sorted(k for k, v in {**rules(), "seed_prefix": prefix}.items() if rec.get(k, "") != v)
    if changed:
        raise OddeyeError(
            f"{path}: expected a category drawn by this generator, found one drawn with other "
            f"{', '.join(changed)}; remove it to draw again"
        )
    return Category(
        path,
        size,
        n_train,
        rec["n_test_good"],
        rec["anomalous"],
        rec["redrawn"],
        rec["mask_share"],
        kept=True,
        prefix=prefix,
    )


# ------------------------------------------------------------------------------------------- CLI
def run(args: Any) -> int:
    """``oddeye bench avatars-data``: install the packages if needed, write one category, say so."""
    if args.strays is not None and args.strays < 1:  # before npm: nothing to install for nothing
        raise OddeyeError(f"--strays: expected at least 1 face to draw, found {args.strays}")
    install_modules(args.modules)
    if args.strays is not None:  # the contamination pool: as many anomalous faces (and normal ones)
        name = args.name or strays_name(args.size)
        c = generate(args.out, args.size, 0, 2 * args.strays, args.modules, args.workers, name, STRAYS_PREFIX)
    else:
        c = generate(args.out, args.size, args.n_train, args.n_test, args.modules, args.workers, args.name)
    if c.kept:
        print(f"{c.path}: present ({c.n_train} train, {c.n_test_good} + {sum(c.anomalous.values())} test)")
        return 0
    shares = ", ".join(f"{d} {v['mean'] * 100:.2f}%" for d, v in c.mask_share.items())
    print(
        f"{c.path}: {c.n_train} train, {c.n_test_good} good + {sum(c.anomalous.values())} anomalous test "
        f"in {c.seconds:.1f} s; mask area {shares}; redrawn {c.record()['redrawn_per_defect']}"
    )
    return 0
