"""Synthetic anomalies made from normal images, for detectors that learn normal-vs-corrupted.

Every function works on a whole normalised batch (B, C, H, W) in [-1, 1] at once (masks and
per-image parameters, no Python loop over images), so corrupting a batch costs little next to the
network's step. :func:`corrupt` gives every image one corruption of a kind drawn at random;
:func:`local_anomalies` gives a share of the images one small local anomaly each (NSA- and
CutPaste-style patches, plain local corruptions) and the per-pixel mask of what changed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from oddeye.detectors.memory import gaussian_blur, grow

KINDS = ("noise", "paste", "swap", "erase", "blur", "shift", "stretch", "local-noise")
# local anomalies: a patch of another image of the batch (NSA), of the same image moved (CutPaste),
# or the region itself with noise, blur, a flat colour or a colour shift
LOCAL_KINDS = ("other", "same", "noise", "blur", "erase", "tint")


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, device=like.device, dtype=torch.float32) * (hi - lo) + lo


def rectangles(x: torch.Tensor, lo: float = 0.2, hi: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) float mask of one random rectangle per image, sides ``lo``-``hi`` of the image."""
    b, _, h, w = x.shape
    rh = (_uniform(b, lo, hi, x) * h).clamp(min=1)
    rw = (_uniform(b, lo, hi, x) * w).clamp(min=1)
    y0 = torch.rand(b, device=x.device) * (h - rh)
    x0 = torch.rand(b, device=x.device) * (w - rw)
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    inside = (
        (ys >= y0.view(-1, 1, 1))
        & (ys < (y0 + rh).view(-1, 1, 1))
        & (xs >= x0.view(-1, 1, 1))
        & (xs < (x0 + rw).view(-1, 1, 1))
    )
    return inside.unsqueeze(1).to(x.dtype)


def _rolled(x: torch.Tensor) -> torch.Tensor:
    """The batch moved by one random offset (wrapping): a region's content comes from elsewhere."""
    h, w = x.shape[-2:]
    dy = int(torch.randint(h // 4, max(h // 4 + 1, 3 * h // 4), (1,)))
    dx = int(torch.randint(w // 4, max(w // 4 + 1, 3 * w // 4), (1,)))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def stretch(x: torch.Tensor, lo: float = 0.7, hi: float = 1.3) -> torch.Tensor:
    """Each image scaled by its own random factors along y and x (about the centre)."""
    b = x.shape[0]
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = _uniform(b, lo, hi, x)
    theta[:, 1, 1] = _uniform(b, lo, hi, x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # sample x + 1 with zero padding, so the border fills with -1 (the darkest value)
    return F.grid_sample(x.float() + 1, grid, align_corners=False, padding_mode="zeros") - 1


def corrupted_views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every kind of corruption applied to the whole batch (each image its own random parameters)."""
    x = x.float()
    b, c = x.shape[:2]
    side = min(x.shape[-2:])
    mask = rectangles(x)
    offset = (_uniform(b * c, -0.8, 0.8, x)).view(b, c, 1, 1)
    other = x[torch.randperm(b, device=x.device)]
    return {
        "noise": torch.rand_like(x) * 2 - 1,
        "paste": torch.lerp(x, _rolled(other), mask),  # a patch of another image (CutPaste)
        "swap": torch.lerp(x, _rolled(x), mask),  # a patch of the same image, moved
        "erase": torch.lerp(x, _uniform(b * c, -1, 1, x).view(b, c, 1, 1).expand_as(x), mask),
        "blur": torch.lerp(x, gaussian_blur(x, 2.5 * side / 28), mask),
        "shift": (x + offset * torch.where(torch.rand(b, 1, 1, 1, device=x.device) < 0.5, mask, 1.0)).clamp(
            -1, 1
        ),
        "stretch": stretch(x),
        "local-noise": (x + 0.5 * torch.randn_like(x) * mask).clamp(-1, 1),
    }


def corrupt(x: torch.Tensor, kinds: tuple[str, ...] = KINDS) -> torch.Tensor:
    """One corrupted copy of each image, its kind drawn uniformly from ``kinds`` per image."""
    with torch.autocast(x.device.type, enabled=False):  # plain fp32 image arithmetic
        views = corrupted_views(x)
    pick = torch.randint(len(kinds), (x.shape[0],), device=x.device)
    out = torch.empty_like(x, dtype=torch.float32)
    for i, kind in enumerate(kinds):
        sel = pick == i
        out[sel] = views[kind][sel]
    return out.to(x.dtype)


def _log_uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    return _uniform(n, math.log(lo), math.log(hi), like).exp()


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) rotation matrices for (B,) angles in radians."""
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def local_regions(x: torch.Tensor, lo: float = 0.005, hi: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """One random region per image: (B, 1, H, W) soft masks in [0, 1] and their (B, 2) centres
    in pixels (x, y).

    Each region is a rectangle or an ellipse (even odds) of ``lo``-``hi`` of the image's area
    (log-uniform), an aspect ratio of up to 2.5, a random rotation, a random place inside the
    image, and an edge feathered over up to half its smaller radius (a hard edge sometimes).
    """
    b, _, h, w = x.shape
    area = _log_uniform(b, lo, hi, x) * h * w
    aspect = _log_uniform(b, 0.4, 2.5, x)
    rounded = torch.rand(b, device=x.device) < 0.5
    core = area / torch.where(rounded, math.pi, 4.0)  # radius_x * radius_y
    radii = torch.stack([(core * aspect).sqrt(), (core / aspect).sqrt()], -1)  # (B, 2): x, y
    radii = torch.minimum(radii.clamp(min=0.5), torch.tensor([w / 2, h / 2], device=x.device))
    size = torch.tensor([w, h], device=x.device, dtype=torch.float32)
    centre = radii + torch.rand(b, 2, device=x.device) * (size - 2 * radii).clamp(min=0)
    ys = torch.arange(h, device=x.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2): x, y
    offset = grid.view(1, h, w, 2) - centre.view(b, 1, 1, 2)  # (B, H, W, 2)
    turn = _rotation(_uniform(b, 0, math.pi, x)).view(b, 1, 1, 2, 2)
    turned = turn[..., 0] * offset[..., :1] + turn[..., 1] * offset[..., 1:]  # rotated offsets
    scaled = (turned / radii.view(b, 1, 1, 2)).abs()
    dist = torch.where(rounded.view(b, 1, 1), scaled.norm(dim=-1), scaled.amax(-1))  # 1 on the edge
    feather = _uniform(b, 0.0, 0.5, x) * (torch.rand(b, device=x.device) < 0.8)
    alpha = ((1 - dist) / feather.clamp(min=1e-3).view(b, 1, 1)).clamp(0, 1)
    return alpha.unsqueeze(1).to(x.dtype), centre


def moved_patches(donor: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``donor`` (B, C, H, W) moved so that a random place of it, scaled 0.75-1.33x and turned by
    up to 30 degrees, lands on ``centre`` (B, 2) pixels (x, y); the border repeats outside."""
    b, _, h, w = donor.shape
    size = torch.tensor([w, h], device=donor.device, dtype=torch.float32)
    source = torch.rand(b, 2, device=donor.device) * size
    linear = _rotation(_uniform(b, -math.pi / 6, math.pi / 6, donor)) * _log_uniform(
        b, 0.75, 4 / 3, donor
    ).view(b, 1, 1)
    # in affine_grid's normalised coordinates (-1..1 across each side): scale by 2 / size
    to_norm, from_norm = torch.diag(2 / size), torch.diag(size / 2)
    theta_linear = to_norm @ linear @ from_norm
    target = centre * 2 / size - 1
    shift = (source * 2 / size - 1).unsqueeze(-1) - theta_linear @ target.unsqueeze(-1)  # (B, 2, 1)
    theta = torch.cat([theta_linear, shift], -1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(donor.shape), align_corners=False)
    return F.grid_sample(donor.float(), grid, align_corners=False, padding_mode="border")


def _matched(patch: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``patch`` shifted per channel so its mean under ``alpha`` is ``x``'s there (NSA's
    intensity matching, which makes a pasted patch blend in rather than stand out by colour)."""
    weight = alpha / alpha.sum((2, 3), keepdim=True).clamp(min=1e-6)
    return patch + ((x - patch) * weight).sum((2, 3), keepdim=True)


def _coarse_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """About :func:`gaussian_blur` at ``sigma`` pixels, done at a resolution ``sigma / 2`` times
    coarser (a wide blur at full size is a slow depthwise convolution)."""
    f = max(1, int(sigma / 2))
    small = F.avg_pool2d(x, f, ceil_mode=True) if f > 1 else x
    return grow(gaussian_blur(small, sigma / f), x.shape[-2:])


def local_anomalies(
    x: torch.Tensor,
    kinds: tuple[str, ...] = LOCAL_KINDS,
    share: float = 0.5,
    area: tuple[float, float] = (0.005, 0.08),
    tolerance: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A share of the images with one local anomaly each: (B, C, H, W) images and the (B, 1, H, W)
    0/1 mask of the pixels that changed by more than ``tolerance`` in some channel (a pasted
    patch that matches what it covers is no anomaly, and is not marked).

    The region comes from :func:`local_regions` (``area``: its share of the image), its content
    from a kind drawn uniformly from ``kinds`` per image (see ``LOCAL_KINDS``); a patch is
    intensity-matched to what it covers half of the time. ``share`` of the images are changed.
    """
    with torch.autocast(x.device.type, enabled=False):  # plain fp32 image arithmetic
        x = x.float()
        b, c = x.shape[:2]
        alpha, centre = local_regions(x, *area)
        alpha = alpha * (torch.rand(b, 1, 1, 1, device=x.device) < share)
        pick = torch.randint(len(kinds), (b,), device=x.device)
        same = torch.tensor([kinds[int(i)] == "same" for i in range(len(kinds))], device=x.device)[pick]
        others = x.roll(int(torch.randint(1, max(b, 2), (1,))), 0)  # another image, where b > 1
        patch = moved_patches(torch.where(same.view(b, 1, 1, 1), x, others), centre)
        match = torch.rand(b, 1, 1, 1, device=x.device) < 0.5
        patch = torch.where(match, _matched(patch, x, alpha), patch)
        side = min(x.shape[-2:])
        views = {
            "other": patch,
            "same": patch,
            "noise": x + _uniform(b, 0.2, 0.6, x).view(b, 1, 1, 1) * torch.randn_like(x),
            "blur": _coarse_blur(x, 0.04 * side),
            "erase": _uniform(b * c, -1, 1, x).view(b, c, 1, 1).expand_as(x),
            "tint": x + _uniform(b * c, -0.6, 0.6, x).view(b, c, 1, 1),
        }
        content = torch.stack([views[k] for k in kinds])[pick, torch.arange(b, device=x.device)]
        bad = torch.lerp(x, content.clamp(-1, 1), alpha)
        target = ((bad - x).abs().amax(1, keepdim=True) > tolerance).float()
    return bad, target


@contextlib.contextmanager
def repeatable(x: torch.Tensor, seed: int = 0) -> Iterator[None]:
    """Fixed random draws inside the block (e.g. the same held-out corruptions every epoch)."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
