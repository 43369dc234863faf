"""Classical references in pixel space (scikit-learn): the bar every deep detector must clear.

Same ``fit`` / ``score`` contract as oddeye's detectors (higher = more anomalous), so the benchmark
harness runs them unchanged. Pixels are scaled to [0, 1] and flattened.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

CHUNK_BYTES = 2**27  # float64 rows scikit-learn's neighbour search holds per chunk of either side


def flatten(images: np.ndarray) -> np.ndarray:
    """(N, ...) uint8 images -> (N, D) float32 in [0, 1]."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


class PCAReconstruction:
    """Squared reconstruction error after projecting onto the components that keep ``variance``."""

    def __init__(self, variance: float = 0.9) -> None:
        self.variance = variance

    def get_params(self) -> dict[str, Any]:
        return {"variance": self.variance}

    def fit(self, images: np.ndarray) -> PCAReconstruction:
        self.pca_ = PCA(n_components=self.variance, svd_solver="full").fit(flatten(images))
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        x = flatten(images)
        recon = self.pca_.inverse_transform(self.pca_.transform(x))
        return ((x - recon) ** 2).sum(1).astype(np.float64)


class NearestNeighbour:
    """Euclidean distance to the ``k``-th nearest training image; its map (:meth:`score_maps`): the
    squared difference to that image at each pixel, summed over channels."""

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k}

    def fit(self, images: np.ndarray) -> NearestNeighbour:
        self.train_ = flatten(images)  # scikit-learn keeps this array itself (no copy)
        self.nn_ = NearestNeighbors(n_neighbors=self.k).fit(self.train_)
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        dist, _ = self._neighbours(flatten(images))
        return dist[:, -1].astype(np.float64)

    def score_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), maps (N, H, W) float32) of (N, H, W[, C]) images."""
        x = flatten(images)
        dist, idx = self._neighbours(x)
        squared = (x - self.train_[idx[:, -1]]) ** 2  # (N, H*W*C)
        maps = squared.reshape(images.shape[:3] + (-1,)).sum(-1)
        return dist[:, -1].astype(np.float64), maps

    def _neighbours(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's search in chunks of rows that fit ``CHUNK_BYTES`` as float64 (its default,
        256 rows, at 64x64x3; 1024x1024x3 images at that default took 12 GB beside the set)."""
        rows = max(20, min(256, CHUNK_BYTES // (8 * x.shape[1])))  # scikit-learn allows >= 20
        with sklearn.config_context(pairwise_dist_chunk_size=rows):
            return self.nn_.kneighbors(x)


CLASSICAL = {"pca": PCAReconstruction, "knn": NearestNeighbour}
CLASSICAL_DESCRIPTIONS = {
    "pca": "PCA reconstruction error, 90% variance (scikit-learn)",
    "knn": "distance to the nearest training image in pixel space (scikit-learn)",
}
