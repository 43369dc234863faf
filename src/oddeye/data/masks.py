"""Ground truth for local anomalies: labels, defect types and masks, paired with scored images.

Two layouts are read:

- MVTec AD's, as distributed: ``CATEGORY/train/good/``, ``CATEGORY/test/good/``,
  ``CATEGORY/test/<defect>/`` and ``CATEGORY/ground_truth/<defect>/<stem>_mask.png`` (normal test
  images have no mask). Training reads ``train/good``, scoring ``test/`` (:func:`images_of`), and
  the labels (``good`` = 0, any other folder = 1), defect types and masks come from the folders.
- anomalib's ``Folder`` convention: labels given apart, and masks in a folder matched to the
  scored images by file name (the same name, or the stem with ``_mask``, any image suffix), or
  one ``.npy`` of shape (N, H, W), one mask per scored image in order, all zero for normal ones.

Masks are read lazily, one at a time; a mask must be the size of its image's file and binary (0
and one other value, such as 255 or 1). Anomaly maps are resized to the masks to be evaluated.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

from oddeye.data.decode import reason, warnings_as_errors
from oddeye.data.loaders import _read_npy, image_files, load_labels
from oddeye.errors import InputError

Split = Literal["train", "test"]
T = TypeVar("T")
NORMAL = "good"  # MVTec AD's folder of normal images, and the defect type of a normal image
MASK_SUFFIX = "_mask"
ANOMALOUS = "anomalous"  # the defect type of an anomalous image whose type is unknown
RAW_MODES = ("1", "L", "P", "I", "F")  # read as they are (and I;16...); other modes become L
BINARY = "a binary mask (0 and one other value, e.g. 0/255)"


def mvtec_category(path: str | os.PathLike | object) -> Path | None:
    """``path`` as an MVTec AD category folder (it has ``train/good`` and ``test/``), else None."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    return p if (p / "train" / NORMAL).is_dir() and (p / "test").is_dir() else None


def images_of(images: T, split: Split) -> T | Path:
    """The images ``images`` means for ``split``: an MVTec AD category's ``train/good`` or
    ``test/`` folder; anything else unchanged. Training and scoring resolve their argument here."""
    category = mvtec_category(images)
    if category is None:
        _not_a_layout_misread(images)
        return images
    return category / "train" / NORMAL if split == "train" else category / "test"


def _not_a_layout_misread(images: object) -> None:
    """A folder that holds MVTec AD categories, or a category without ``train/good``, is not a
    folder of images: read as one, its test defects and masks would count as normal images."""
    if not isinstance(images, (str, os.PathLike)) or not Path(images).is_dir():
        return
    p = Path(images)
    try:
        with os.scandir(p) as entries:
            folders = sorted(e.name for e in entries if e.is_dir())
        categories = [name for name in folders if mvtec_category(p / name) is not None]
    except OSError:  # a folder that cannot be listed: reading it says so, in its own words
        return
    expected = "a folder of images or one MVTec AD category (train/good/, test/)"
    if categories:
        named = ", ".join(categories[:3]) + (", ..." if len(categories) > 3 else "")
        found = f"a folder of {len(categories)} categories ({named}): give one, e.g. {p / categories[0]}"
        raise InputError(p, expected, found)
    if "train" in folders and ("test" in folders or "ground_truth" in folders):
        found = "train/ and test/ or ground_truth/ but no train/good/ (normal training images go there)"
        raise InputError(p, expected, found)


class Masks:
    """N ground-truth masks, read one at a time: ``mask(i)`` is image i's (H, W) bool mask."""

    source: str

    def __len__(self) -> int:
        raise NotImplementedError

    def shape(self, i: int) -> tuple[int, int]:
        """(H, W) of mask i, without decoding it."""
        raise NotImplementedError

    def mask(self, i: int) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class MaskFiles(Masks):
    """Masks as image files, one per anomalous image (None: a normal image, all zero)."""

    files: tuple[Path | None, ...]
    shapes: tuple[tuple[int, int], ...]  # (H, W) of each mask (the image's size where it has none)
    source: str

    def __len__(self) -> int:
        return len(self.files)

    def shape(self, i: int) -> tuple[int, int]:
        return self.shapes[i]

    def mask(self, i: int) -> np.ndarray:
        f = self.files[i]
        return np.zeros(self.shapes[i], bool) if f is None else read_mask(f)


@dataclass(frozen=True)
class MaskArray(Masks):
    """Masks as one (N, H, W) array (often a memory map); those of normal images must be zero."""

    array: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.array)

    def shape(self, i: int) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[2])

    def mask(self, i: int) -> np.ndarray:
        values = np.asarray(self.array[i])
        mask = binary(values, f"{self.source} (mask {i})")
        if self.labels[i] == 0 and mask.any():
            expected = "all-zero masks for normal images (label 0)"
            raise InputError(self.source, expected, f"{int(mask.sum())} pixels set in mask {i}")
        return mask


@dataclass(frozen=True)
class GroundTruth:
    """What is known about N scored images: 0/1 labels, defect types, masks (None: none known).

    ``paths``: the images' files relative to the folder scored, in order, where known;
    ``images``: those files themselves (MVTec AD layout), for checks and full-size pictures.
    """

    labels: np.ndarray  # (N,) int64, 1 = anomaly
    defects: tuple[str, ...]  # per image; "good" for normal ones
    masks: Masks | None
    source: str
    paths: tuple[str, ...] | None = None
    images: tuple[Path, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)


def read_mask(f: Path) -> np.ndarray:
    """A mask image file as (H, W) bool: any value but 0 is anomalous; it must be binary."""
    try:
        with warnings_as_errors(), Image.open(f) as im:
            raw = im.mode in RAW_MODES or im.mode.startswith("I;16")
            values = np.asarray(im if raw else im.convert("L"))
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many kinds on malformed files
        raise InputError(f, "a readable mask image", f"unreadable image data ({reason(e)})") from None
    return binary(values, f)


def binary(values: np.ndarray, source: str | Path) -> np.ndarray:
    """``values`` != 0 as bool, once they are checked to hold at most one value besides 0."""
    if values.ndim != 2:
        raise InputError(source, "a mask of one channel (H, W)", f"shape {values.shape}")
    on = values != 0
    set_values = values[on]
    if set_values.size and (set_values != set_values.flat[0]).any():
        found = np.unique(values)
        shown = ", ".join(f"{v:g}" for v in found[:5]) + (", ..." if len(found) > 5 else "")
        raise InputError(source, BINARY, f"{len(found)} values ({shown})")
    return on


def ground_truth(
    dataset: str | os.PathLike | None = None,
    *,
    n: int | None = None,
    paths: Sequence[str] | None = None,
    labels: str | os.PathLike | np.ndarray | None = None,
    masks: str | os.PathLike | np.ndarray | None = None,
    scores_source: str = "scores",
) -> GroundTruth:
    """The ground truth of ``n`` scored images, the one place scores are paired with it.

    ``dataset``: an MVTec AD category folder; the scored ``paths`` (the CSV's path column) must be
    its ``test/`` images in order (or, without paths, ``n`` must be their number). Otherwise
    ``labels`` (a file or array, as ``load_labels`` reads them) and optionally ``masks``: a folder
    of mask images matched to ``paths`` by file name, or an (N, H, W) array or ``.npy``.
    ``scores_source`` names the scores in errors.
    """
    if dataset is not None:
        if labels is not None or masks is not None:
            raise InputError(
                dataset, "a data set alone (it holds the labels and masks)", "labels or masks too"
            )
        truth = _dataset_truth(dataset)
        _check_paths(truth, n, paths, scores_source)
        return truth
    if labels is None:
        raise InputError(scores_source, "labels, or a data set in the MVTec AD layout", "neither")
    values = load_labels(labels, n=n)
    names = tuple(paths) if paths is not None else None
    defects = tuple(_defect(names[i] if names else None, y) for i, y in enumerate(values))
    source = str(labels) if not isinstance(labels, np.ndarray) else "<labels>"
    found = None if masks is None else _masks(masks, values, names, scores_source)
    return GroundTruth(values, defects, found, source, names)


def _defect(path: str | None, label: int) -> str:
    """An image's defect type without a data set: its folder's name if it has one."""
    if label == 0:
        return NORMAL
    return path.split("/")[0] if path is not None and "/" in path else ANOMALOUS


def _dataset_truth(dataset: str | os.PathLike) -> GroundTruth:
    category = mvtec_category(dataset)
    if category is None:
        found = "no such folder" if not Path(dataset).is_dir() else "no train/good and test/ folders"
        raise InputError(dataset, "an MVTec AD category folder (train/good/, test/, ground_truth/)", found)
    test = category / "test"
    files = image_files(test)
    if not files:
        raise InputError(test, "test images in good/ and one folder per defect type", "none")
    paths = tuple(f.relative_to(test).as_posix() for f in files)
    loose = next((p for p in paths if "/" not in p), None)
    if loose is not None:
        raise InputError(test / loose, "test images in good/ or a folder per defect type", "a file in test/")
    defects = tuple(p.split("/")[0] for p in paths)
    labels = np.array([d != NORMAL for d in defects], np.int64)
    masks = None  # no ground_truth/ at all: image labels and defect types alone
    if (category / "ground_truth").exists():
        sizes = [_size(f) for f in files]
        masks = _mask_files(category / "ground_truth", paths, labels, sizes, [str(f) for f in files])
    return GroundTruth(labels, defects, masks, str(category), paths, tuple(files))


def _check_paths(truth: GroundTruth, n: int | None, paths: Sequence[str] | None, source: str) -> None:
    """The scored images must be the data set's test images, in the same order."""
    if paths is None:
        if n is not None and n != len(truth):
            raise InputError(source, f"{len(truth)} scores (one per test image of {truth.source})", f"{n}")
        return
    expected = truth.paths or ()
    for i, (want, got) in enumerate(zip(expected, paths)):
        if want != got:
            raise InputError(
                source, f"the test images of {truth.source} in order ({want!r} on row {i})", repr(got)
            )
    if len(paths) != len(expected):
        raise InputError(
            source, f"{len(expected)} scores (one per test image of {truth.source})", f"{len(paths)}"
        )


def _size(f: Path) -> tuple[int, int]:
    """(H, W) of an image or mask file, from its header."""
    try:
        with warnings_as_errors(), Image.open(f) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - as in read_mask
        raise InputError(f, "a readable image", f"unreadable image data ({reason(e)})") from None
    return h, w


def _masks(
    masks: str | os.PathLike | np.ndarray, labels: np.ndarray, paths: tuple[str, ...] | None, scores: str
) -> Masks:
    if isinstance(masks, np.ndarray):
        return _mask_array(masks, labels, "<masks>")
    p = Path(masks)
    if p.is_dir():
        if paths is None:
            expected = (
                "scores with a path column (a scored folder) to match mask files to; or a .npy of masks"
            )
            raise InputError(scores, expected, "scores without paths")
        return _mask_files(p, paths, labels)
    if not p.exists():
        raise InputError(p, "a folder of masks or a .npy of (N, H, W) masks", "nothing there")
    if p.suffix.lower() != ".npy":
        raise InputError(p, "a folder of masks or a .npy of (N, H, W) masks", f"a '{p.suffix}' file")
    return _mask_array(_read_npy(p, mmap=True), labels, str(p))


def _mask_array(array: np.ndarray, labels: np.ndarray, source: str) -> MaskArray:
    if array.ndim != 3:
        raise InputError(source, "masks as (N, H, W)", f"shape {array.shape}")
    if len(array) != len(labels):
        raise InputError(source, f"{len(labels)} masks (one per scored image)", f"{len(array)}")
    if array.dtype.kind not in "biuf":
        raise InputError(source, BINARY, f"dtype {array.dtype}")
    return MaskArray(array, labels, source)


def _mask_files(
    folder: Path,
    paths: Sequence[str],
    labels: np.ndarray,
    sizes: Sequence[tuple[int, int]] | None = None,
    images: Sequence[str] | None = None,
) -> MaskFiles:
    """A mask file for every anomalous image (``sizes``, ``images``: the image files' sizes and
    names, which the masks must match), matched by name; normal images get none."""
    if not folder.is_dir():
        raise InputError(folder, "a folder of masks", "nothing there" if not folder.exists() else "a file")
    found = image_files(folder)
    by_path, by_name = defaultdict(list), defaultdict(list)
    for f in found:
        rel = f.relative_to(folder).with_suffix("").as_posix()
        by_path[rel].append(f)
        by_name[rel.rsplit("/", 1)[-1]].append(f)
    files: list[Path | None] = []
    for path, label in zip(paths, labels, strict=True):
        files.append(_mask_for(folder, path, by_path, by_name) if label else None)
    shapes = [_size(f) if f is not None else None for f in files]
    if sizes is not None:
        for i, (f, got) in enumerate(zip(files, shapes, strict=True)):
            if f is not None and got != sizes[i]:
                what = f"a mask of {sizes[i][0]}x{sizes[i][1]} (HxW), the size of its image {images[i]}"
                raise InputError(f, what, f"{got[0]}x{got[1]}")
    common = Counter(s for s in shapes if s is not None).most_common(1)
    fallback = common[0][0] if common else (1, 1)
    full = tuple(
        s if s is not None else (sizes[i] if sizes is not None else fallback) for i, s in enumerate(shapes)
    )
    return MaskFiles(tuple(files), full, str(folder))


def _mask_for(
    folder: Path, path: str, by_path: dict[str, list[Path]], by_name: dict[str, list[Path]]
) -> Path:
    """The mask of the image ``path``: the same relative path, else (when the folder has no
    subfolder of that name, as in MVTec AD's ground_truth/<defect>/) the same file name; either
    as it is or with ``_mask`` after the stem, any image suffix."""
    stem = PurePosixPath(path).with_suffix("")
    name, parent = stem.name, stem.parent.as_posix()
    hits = [*by_path.get(stem.as_posix(), []), *by_path.get(stem.as_posix() + MASK_SUFFIX, [])]
    named = [*by_name.get(name, []), *by_name.get(name + MASK_SUFFIX, [])]
    if not hits and (parent == "." or not (folder / parent).is_dir()) and len(named) == 1:
        hits = named
    if len(hits) > 1:
        shown = ", ".join(h.relative_to(folder).as_posix() for h in hits[:3])
        raise InputError(folder, f"one mask for the image {path}", f"{len(hits)} ({shown})")
    if hits:
        return hits[0]
    where = f"{stem}{MASK_SUFFIX}.png or {stem}.png (any image suffix)"
    raise InputError(folder, f"a mask for the anomalous image {path}: {where}", "none")
