"""Synthetic anomalies made from normal images, for detectors that learn normal-vs-corrupted.

Every function works on a whole normalised batch (B, C, H, W) in [-1, 1] at once (masks and
per-image parameters, no Python loop over images), so corrupting a batch costs little next to the
network's step. :func:`corrupt` gives every image one corruption of a kind drawn at random.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from oddeye.detectors.memory import gaussian_blur

KINDS = ("noise", "paste", "swap", "erase", "blur", "shift", "stretch", "local-noise")


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


@contextlib.contextmanager
def repeatable(x: torch.Tensor, seed: int = 0) -> Iterator[None]:
    """Fixed random draws inside the block (e.g. the same held-out corruptions every epoch)."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
