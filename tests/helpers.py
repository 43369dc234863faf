"""Small synthetic data for tests."""

from __future__ import annotations

from collections import Counter

import numpy as np

FAST = {"epochs": 2, "batch_size": 32, "progress": False}


def blobs(n: int, shape: tuple[int, int, int] = (16, 16, 3), seed: int = 0, anomalous: bool = False):
    """Smooth 'normal' images (a bright centred blob) or anomalies (the blob off-centre, noisier)."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    cy = rng.uniform(0.1, 0.3, n) if anomalous else rng.uniform(0.45, 0.55, n)
    cx = rng.uniform(0.1, 0.3, n) if anomalous else rng.uniform(0.45, 0.55, n)
    d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    img = np.exp(-d2 / 0.02)[..., None] * rng.uniform(0.7, 1.0, (n, 1, 1, c))
    img = img + rng.normal(0, 0.15 if anomalous else 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


# The registry-wide tests' data and settings (conftest.trained_run): tiny, a quarter held out for
# steadier fusion scales.
REGISTRY_SHAPE = (12, 12, 3)
REGISTRY_SETTINGS = {"epochs": 2, "batch_size": 16, "progress": False, "val_fraction": 0.25}
REGISTRY_TRAIN = blobs(60, REGISTRY_SHAPE)
REGISTRY_TEST = np.concatenate(
    [blobs(6, REGISTRY_SHAPE, seed=3), blobs(6, REGISTRY_SHAPE, seed=4, anomalous=True)]
)

# (test, outcome) -> number of fuzzing cases; printed in pytest's terminal summary
FUZZ_CASES: Counter[tuple[str, str]] = Counter()


def make_mvtec(root, size: int = 16, n_train: int = 24, seed: int = 0):
    """A tiny MVTec AD category folder under ``root``: train/good, test/good and two defect types
    (a bright square pasted on a normal image) with their ground_truth/<defect>/<stem>_mask.png.
    Returns the category's path."""
    from pathlib import Path

    from PIL import Image

    cat = Path(root) / "widget"
    rng = np.random.default_rng(seed)
    shape = (size, size, 3)

    def save(folder: Path, images: np.ndarray) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            Image.fromarray(im).save(folder / f"{i:03d}.png")

    save(cat / "train" / "good", blobs(n_train, shape, seed=seed + 1))
    save(cat / "test" / "good", blobs(4, shape, seed=seed + 2))
    for k, (defect, n) in enumerate((("scratch", 3), ("hole", 2))):
        images = blobs(n, shape, seed=seed + 3 + k)
        masks = np.zeros((n, size, size), np.uint8)
        for i in range(n):
            y, x = rng.integers(0, size - 5, 2)
            images[i, y : y + 5, x : x + 4] = 255 if k == 0 else 0
            masks[i, y : y + 5, x : x + 4] = 255
        save(cat / "test" / defect, images)
        (cat / "ground_truth" / defect).mkdir(parents=True)
        for i, m in enumerate(masks):
            Image.fromarray(m).save(cat / "ground_truth" / defect / f"{i:03d}_mask.png")
    return cat


def stripes(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """A texture: diagonal stripes of one period at a random phase in every image (nothing aligned)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    gray = 128 + 90 * np.sin((yy + xx)[None] * (2 * np.pi / 8) + phase) + rng.normal(0, 3, (n, size, size))
    return np.repeat(gray[..., None], 3, -1).clip(0, 255).astype(np.uint8)
