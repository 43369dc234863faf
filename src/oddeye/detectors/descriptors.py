"""Hand-crafted image descriptors compared by k-NN: no training, each a different view of "unlike
the training images" from the pixels' own.

- ``color-knn``: the image's colour distribution (a joint histogram of its colours), which moves
  when the same content is drawn, lit or printed differently;
- ``hog-knn``: the image's local edge directions (gradient-orientation histograms on a grid of
  small cells, in the spirit of HOG), which moves with shape and line work, not with colour;
- ``shape-knn``: the image's silhouette (which pixels differ from the background, the colour of
  the image's border), blurred: the outline alone, whatever the shading, print or texture inside.

Both keep a bounded bank (:class:`~oddeye.detectors.memory.KNNBank`) built in one streamed pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oddeye.detectors.memory import (
    BankDetector,
    PixelKNN,
    PixelKNNParams,
    bank_dims_param,
    bank_select_param,
    grow,
    k_max_param,
    k_share_param,
    reduced_size,
    shrink,
)
from oddeye.detectors.params import Derived, Params, WorkSize, param
from oddeye.detectors.registry import register


def color_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, bins^C) square roots of the joint colour histogram (each
    image's fractions of pixels per colour cell; the square root makes Euclidean distance the
    Hellinger distance between the distributions)."""
    b, c, h, w = x.shape
    if torch.compiler.is_exporting():  # one graph for any batch size
        return _histogram(x, bins)
    step = max(1, HIST_PIXELS // (h * w))  # images per chunk: bounded temporaries at any size
    return torch.cat([_histogram(x[i : i + step], bins) for i in range(0, b, step)])


HIST_PIXELS = 1 << 21  # pixels per chunk of a colour histogram's work


def colour_cells(x: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, H*W) the histogram cell (joint colour level) of every pixel."""
    q = ((x.float() + 1) * (bins / 2)).floor_().clamp_(0, bins - 1).to(torch.int32)  # (B, C, H, W)
    cell = q[:, 0]
    for ch in range(1, x.shape[1]):
        cell = cell * bins + q[:, ch]
    return cell.flatten(1).long()


def _histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    b, c = x.shape[:2]
    flat = colour_cells(x, bins)  # (B, H*W)
    counts = torch.zeros(b, bins**c, device=x.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float)
    )
    return (counts / flat.shape[1]).sqrt()


def orientation_histograms(x: torch.Tensor, bins: int, cell: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, bins * cells) unit-length histograms of unsigned gradient directions,
    weighted by gradient strength, pooled over ``cell`` x ``cell`` pixel cells (of the gray image).

    Each pixel's strength is shared between the two nearest direction bins in proportion to how
    near it is (bins centred on k * pi / bins, wrapping around at pi), so the histogram changes
    smoothly with the direction: no pixel jumps from one bin to another on a rounding difference
    (an edge along an axis lies exactly on a boundary of hard bins)."""
    gray = x.float().mean(1, keepdim=True)  # (B, 1, H, W)
    gx = F.pad(gray, (1, 1, 0, 0), mode="replicate")
    gy = F.pad(gray, (0, 0, 1, 1), mode="replicate")
    gx = gx[..., :, 2:] - gx[..., :, :-2]
    gy = gy[..., 2:, :] - gy[..., :-2, :]
    strength = (gx.pow(2) + gy.pow(2)).sqrt()
    angle = torch.atan2(gy, gx)  # (-pi, pi]; unsigned directions are this modulo pi
    place = angle * (bins / math.pi)  # in bins; bin k's centre at k
    low = place.floor()
    upper = place - low  # the share of the bin above
    low_bin = low.long().remainder(bins)[:, 0]  # (B, H, W)
    high_bin = (low_bin + 1).remainder(bins)
    # each pixel's two shares written into its bins, laid out (B, H, W, bins) as a one-hot of its
    # bin would be: the same values, and 4x faster than multiplying one-hot masks
    strength, upper = strength[:, 0], upper[:, 0]
    per_pixel = torch.zeros(*low_bin.shape, bins, device=x.device)
    per_pixel.scatter_(-1, low_bin.unsqueeze(-1), (strength * (1 - upper)).unsqueeze(-1))
    per_pixel.scatter_(-1, high_bin.unsqueeze(-1), (strength * upper).unsqueeze(-1))
    per_bin = per_pixel.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    grid = (max(1, round(h / cell)), max(1, round(w / cell)))
    pooled = F.adaptive_avg_pool2d(per_bin, grid).flatten(1)
    return F.normalize(pooled, dim=1)


@dataclass(frozen=True)
class ColorKNNParams(Params):
    bins: int = param(8, help="levels per colour channel (gray images: 4x as many gray levels)")
    k: int = param(1, help="training images whose distances are averaged")
    max_bank: int = param(20000, help="training images the bank keeps at most (which: select)")
    k_share: float = k_share_param()
    k_max: int = k_max_param()
    dims: int = bank_dims_param()
    select: str = bank_select_param()


@register("color-knn", "distance to the k nearest training images' colour distributions (no training)")
class ColorKNN(BankDetector):
    """The joint colour histogram, ``bins`` levels per channel (``bins`` cubed cells for colour
    images), compared by the Hellinger distance. Gray images get a histogram of ``bins`` x 4
    gray levels instead."""

    latent = "the square roots of its colour histogram"
    map_meaning = (
        "each pixel's share of the colour-distribution distance to the nearest training image "
        "(bright: colours more frequent here than there)"
    )

    Params = ColorKNNParams

    def compares_places(self) -> bool:
        return False  # a distribution of colours, wherever they are

    def __init__(
        self,
        shape: tuple[int, int, int],
        params: ColorKNNParams | None = None,
        derived: Derived | None = None,
    ) -> None:
        super().__init__(shape, params, derived)
        self.bins = self.params.bins if self.shape[2] > 1 else 4 * self.params.bins

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return color_histogram(x, self.bins)

    def explain(self, x: torch.Tensor, f: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
        """Each pixel's share of the squared Hellinger distance: its colour cell's term, split
        evenly among the pixels in that cell (colours the training image has and this one lacks
        have no pixel to show them)."""
        cells = colour_cells(x, self.bins)  # (B, H*W)
        n = cells.shape[1]
        term = (f - near).pow(2) / (f.pow(2) * n).clamp_min(1e-12)  # (B, cells): per pixel in it
        return term.gather(1, cells).view(-1, *x.shape[-2:])


@dataclass(frozen=True)
class OrientationKNNParams(Params):
    bins: int = param(8, help="unsigned gradient directions")
    cell: int = param(4, help="cell side in pixels (at the working resolution)")
    max_side: int = param(64, help="the working resolution: pixels a side at most (0: full)")
    k: int = param(1, help="training images whose distances are averaged")
    max_bank: int = param(20000, help="training images the bank keeps at most (which: select)")
    k_share: float = k_share_param()
    k_max: int = k_max_param()
    dims: int = bank_dims_param()
    select: str = bank_select_param()


@register("hog-knn", "distance to the k nearest training images' edge-direction histograms (no training)")
class OrientationKNN(BankDetector):
    """Gradient-direction histograms (``bins`` unsigned directions) on cells of ``cell`` pixels,
    after reducing images to at most ``max_side`` pixels a side; the whole descriptor scaled to
    unit length. Derived and recorded: ``work_hw``, the resolution it is computed at."""

    latent = "its gradient-direction histograms"
    map_meaning = "how far each 4x4-pixel cell's edge directions are from the nearest training image's"
    Params = OrientationKNNParams
    Derived = WorkSize

    @classmethod
    def derive(cls, params: OrientationKNNParams, shape: tuple[int, int, int]) -> WorkSize:
        return WorkSize(reduced_size(shape, params.max_side))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        return orientation_histograms(shrink(x.float(), self.derived.work_hw), p.bins, p.cell)

    def explain(self, x: torch.Tensor, f: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
        """Each cell's squared difference to the nearest training image's descriptor, summed over
        directions, scaled up from the grid of cells to the input's size."""
        (h, w), cell = self.derived.work_hw, self.params.cell
        grid = (max(1, round(h / cell)), max(1, round(w / cell)))
        diff = (f - near).pow(2).view(-1, self.params.bins, *grid).sum(1, keepdim=True)
        return grow(diff, x.shape[-2:])[:, 0]


def silhouette(x: torch.Tensor, foreground: float) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, 1, H, W) in {-1, 1}: 1 where a pixel differs from the
    image's background by more than ``foreground`` (a fraction of the value range) in any channel.
    The background is each channel's median over the image's one-pixel border, so a border that
    the object touches here and there does not move it."""
    x = x.float()
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], -1)
    n = border.shape[-1]
    background = border.sort(-1).values[..., (n - 1) // 2]  # (B, C): the median (sort exports)
    away = (x - background[..., None, None]).abs().amax(1, keepdim=True)
    return (away > 2 * foreground).float() * 2 - 1


@dataclass(frozen=True)
class ShapeKNNParams(PixelKNNParams):
    foreground: float = param(0.02, help="how far from the border's colour a pixel is object (of the range)")


@register("shape-knn", "distance to the k nearest training silhouettes, blurred (no training)")
class ShapeKNN(PixelKNN):
    """:class:`~oddeye.detectors.memory.PixelKNN` on the image's silhouette: the pixels that differ
    from the background (the median colour of the image's border) by more than ``foreground`` of
    the value range (0.02: five gray levels of 255) in any channel. What it compares is the
    object's outline alone, so a shirt and a coat of the same print differ in it only where their
    shapes do. Meant for objects on a plain background; on full-frame photographs its mask follows
    whatever differs from the border."""

    latent = "its blurred (and reduced) silhouette"
    map_meaning = (
        "the squared difference of the blurred silhouette to the nearest training image's, per pixel "
        "(where the outline is not the training images')"
    )

    Params = ShapeKNNParams

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().features(silhouette(x, self.params.foreground))
