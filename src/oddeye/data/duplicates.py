"""Exact and near duplicates in a set of images, found in one streaming pass and bounded memory.

- **exact**: the same pixel values, byte for byte (a 128-bit BLAKE2b hash of each image's array as
  loaded: uint8 for image files);
- **near**: the same picture re-encoded (JPEG), resized, or slightly brightened or contrasted.
  Each image's *fingerprint* is a real-valued pHash: the grayscale image resized to 32x32, its
  2-D DCT, the 63 lowest frequencies (the 8x8 corner less the mean), divided by their length (a
  change of contrast leaves it as it is; a nearly flat image, below ``FLAT``, keeps its small
  length). Two images are near duplicates when their fingerprints lie within ``NEAR`` of each
  other (a correlation of about 0.995), and within a third (``RELATIVE``) of the distance from
  either to its 16th nearest image (``NEIGHBOURS``), and their mean brightness is within
  ``BRIGHTNESS`` of the value range. The second rule keeps look-alikes apart: among a thousand
  pairs of trousers, or one product photographed again and again, every image has close
  neighbours, and only a pair far closer than those is a copy (so an image with more than 16
  near copies, exact ones counted once, passes for a look-alike). Colour and fine texture (what
  the 8x8 lowest frequencies do not hold) are not looked at.

Groups are the connected sets of such pairs (a chain of near copies is one group). Every image is
compared with every other (exact copies once), in blocks: quadratic, a minute or two for 100,000
images on a CPU, with 64 numbers an image in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from oddeye.data.imageset import ImageSet, batch_images
from oddeye.progress import Task

SIDE = 32  # the fingerprint's image is resized to SIDE x SIDE
BLOCK = 8  # the BLOCK x BLOCK lowest DCT frequencies are kept (less the mean)
NEAR = 0.1  # fingerprints this close (unit length: correlation ~0.995) are near duplicates, at most
RELATIVE = 1 / 3  # and at most this share of the distance to either image's NEIGHBOURS-th nearest
BRIGHTNESS = 0.1  # and mean brightness this close, as a share of the value range
FLAT = 0.02  # low-frequency contrast (RMS, share of the range) below which an image counts as flat
NEIGHBOURS = 16  # near copies linked per image at most, and the neighbour that sets the local scale
BLOCK_CELLS = 1 << 24  # distances computed at once, at most (64 MiB of float32)


@dataclass
class Duplicates:
    """Which images have duplicates: ``group[i]``, the smallest index in image i's group (-1: no
    duplicate); ``exact[i]``, whether another image has exactly its pixels."""

    group: np.ndarray  # (N,) int64
    exact: np.ndarray  # (N,) bool

    def kind(self, i: int) -> str:
        """'exact', 'near' (in a group, with no identical copy) or '' (no duplicate)."""
        return "exact" if self.exact[i] else "near" if self.group[i] >= 0 else ""

    def groups(self) -> list[np.ndarray]:
        """Each group's indices, ascending; groups ordered by their smallest index."""
        members = np.flatnonzero(self.group >= 0)
        if not len(members):
            return []
        order = members[np.argsort(self.group[members], kind="stable")]
        starts = np.flatnonzero(np.diff(self.group[order], prepend=-2))
        return np.split(order, starts[1:])

    @property
    def n_groups(self) -> int:
        return int(len(np.unique(self.group[self.group >= 0])))

    def describe(self) -> str:
        """'3 groups holding 7 images (4 with an exact copy)', or 'none'."""
        n, held = self.n_groups, int((self.group >= 0).sum())
        if not n:
            return "none"
        exact = int(self.exact.sum())
        return f"{n:,} group{'s' if n != 1 else ''} holding {held:,} images ({exact:,} with an exact copy)"


def find_duplicates(data: ImageSet, batch_size: int = 1024, progress: bool = True) -> Duplicates:
    """The exact and near duplicates among ``data``'s images (see the module's docstring)."""
    digests, prints, means = fingerprints(data, batch_size, progress)
    first: dict[bytes, int] = {}
    copy_of = np.array([first.setdefault(d, i) for i, d in enumerate(digests)], np.int64)
    reps = np.flatnonzero(copy_of == np.arange(len(copy_of)))  # one image per set of exact copies
    pairs = reps[near_pairs(prints[reps], means[reps], progress)]  # (E, 2) image indices
    edges = np.concatenate([np.stack([np.arange(len(copy_of)), copy_of], 1), pairs])
    group = _smallest_in_component(len(copy_of), edges)
    counts = np.bincount(group, minlength=len(group))
    exact = np.bincount(copy_of, minlength=len(copy_of))[copy_of] > 1
    return Duplicates(np.where(counts[group] > 1, group, -1), exact)


def _smallest_in_component(n: int, edges: np.ndarray) -> np.ndarray:
    """(n,) the smallest node of each node's connected component in the graph of ``edges``."""
    from scipy.sparse import coo_matrix  # scipy comes with scikit-learn
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    smallest = np.full(label.max() + 1, n, np.int64)
    np.minimum.at(smallest, label, np.arange(n))
    return smallest[label]


@torch.no_grad()
def fingerprints(
    data: ImageSet, batch_size: int = 1024, progress: bool = True
) -> tuple[list[bytes], torch.Tensor, torch.Tensor]:
    """Per image: the BLAKE2b digest of its array, its fingerprint (N, 63) and its mean
    brightness (N,) in [0, 1], in one pass over ``data``."""
    step = batch_images(batch_size, data.shape)
    digests: list[bytes] = []
    prints, means = [], []
    with Task("looking for duplicates", len(data), "images", progress) as task:
        for start in range(0, len(data), step):
            index = slice(start, start + step)
            raw = data.batch(index)  # (B, C, H, W) as stored
            digests += [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in raw.numpy()]
            gray = (data.normalisation.apply(raw) + 1).mul_(0.5).mean(1)  # (B, H, W) in [0, 1]
            found, mean = fingerprint(gray)
            prints.append(found)
            means.append(mean)
            data.release(index)
            task.update(len(raw))
    return digests, torch.cat(prints), torch.cat(means)


def fingerprint(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 63) fingerprints and (B,) mean brightness of (B, H, W) grayscale images in [0, 1]."""
    x = gray.float()[:, None]
    if min(x.shape[-2:]) >= SIDE:
        x = F.interpolate(x, size=(SIDE, SIDE), mode="area")
    else:
        x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    x = x[:, 0]  # (B, SIDE, SIDE)
    d = _dct_matrix(SIDE)
    low = (d @ x @ d.T)[:, :BLOCK, :BLOCK].flatten(1)[:, 1:] / SIDE  # (B, 63), RMS units of the range
    return low / low.norm(dim=1, keepdim=True).clamp_min(FLAT), x.mean((1, 2))


def _dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n): ``D @ x @ D.T`` is the 2-D DCT of an n x n image."""
    k, i = np.arange(n)[:, None], np.arange(n)[None]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return torch.from_numpy(m.astype(np.float32))


def near_pairs(prints: torch.Tensor, means: torch.Tensor, progress: bool = True) -> np.ndarray:
    """(E, 2) row pairs of near duplicates (see the module's docstring), each row with at most
    its ``NEIGHBOURS`` closest."""
    m = len(prints)
    if m < 2:
        return np.zeros((0, 2), np.int64)
    k = min(NEIGHBOURS, m - 1)
    rows_at_once = max(1, BLOCK_CELLS // m)
    scale = torch.empty(m)  # each row's distance to its k-th nearest other row
    pairs, lengths = [torch.zeros((0, 2), dtype=torch.long)], [torch.zeros(0)]
    with Task("comparing images for near duplicates", m, "images", progress) as task:
        for start in range(0, m, rows_at_once):
            d = torch.cdist(prints[start : start + rows_at_once], prints)  # (b, m)
            b = len(d)
            d[torch.arange(b), torch.arange(start, start + b)] = float("inf")  # not itself
            values, cols = d.topk(k, dim=1, largest=False)  # (b, k) ascending
            scale[start : start + b] = values[:, -1]
            here = torch.arange(start, start + b)[:, None].expand_as(cols)
            ok = (values <= NEAR) & ((means[here] - means[cols]).abs() <= BRIGHTNESS)
            pairs.append(torch.stack([here[ok], cols[ok]], 1))
            lengths.append(values[ok])
            task.update(b)
    pairs_t = torch.cat(pairs)
    local = torch.minimum(scale[pairs_t[:, 0]], scale[pairs_t[:, 1]])
    return pairs_t[torch.cat(lengths) <= RELATIVE * local].numpy()
