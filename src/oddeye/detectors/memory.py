"""Memory-bank detectors: no gradient training, a bank of training features, distance to it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, InferenceBatch
from oddeye.detectors.registry import register


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur of (B, C, H, W) (sigma in pixels); reflect padding, or replicate
    where an image side is too small to reflect the kernel's radius."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def blur_sigma(blur: float, shape: tuple[int, int, int]) -> float:
    """The blur in pixels for a ``blur`` given as a fraction of the shorter image side."""
    return blur * min(shape[:2])


def resize_bank_on_load(
    self: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """``_load_from_state_dict`` for modules with a ``bank`` buffer whose length is only known
    from the saved weights: resize the buffer first, then load as usual."""
    if prefix + "bank" in state_dict:
        self.bank = torch.empty_like(state_dict[prefix + "bank"])
    nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


@register("pixel-knn", "distance to the k nearest training images after a light blur (no training)")
class PixelKNN(AnomalyModel):
    """Mean Euclidean distance to the ``k`` nearest training images, both lightly blurred.

    ``blur`` is the Gaussian's sigma as a fraction of the image side (1/28: one pixel on 28x28
    Fashion-MNIST, 2.3 on 64x64 faces), fixed in advance so one setting serves every resolution.
    The bank holds at most ``max_bank`` training images (an evenly spaced subset beyond that).
    Derived and recorded: ``sigma``, the blur in pixels (:func:`blur_sigma`).
    """

    trainable = False
    derived_names = ("sigma",)

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        k: int = 3,
        blur: float = 1 / 28,
        max_bank: int = 20000,
        sigma: float | None = None,
    ) -> None:
        super().__init__(shape)
        self.k, self.max_bank = k, max_bank
        self.sigma = float(blur_sigma(blur, self.shape) if sigma is None else sigma)  # in pixels
        self.register_buffer("bank", torch.zeros(0, math.prod(self.shape)))

    latent = "the blurred pixels it compares"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x.float(), self.sigma).flatten(1)  # (B, C*H*W)

    embed = features

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        bank = torch.cat([self.features(x) for x in batches()])
        if len(bank) > self.max_bank:
            bank = bank[torch.linspace(0, len(bank) - 1, self.max_bank).long()]
        self.bank = bank

    def fit_end_work(self) -> str:
        return "memory bank"

    def infer(self, x: torch.Tensor) -> InferenceBatch:
        d = torch.cdist(self.features(x), self.bank)  # (B, N)
        k = min(self.k, self.bank.shape[0])
        return InferenceBatch(d.topk(k, dim=1, largest=False).values.mean(1))

    _load_from_state_dict = resize_bank_on_load


class FeatureBank(nn.Module):
    """A bank of L2-normalised feature vectors; score = mean distance to the ``k`` nearest.

    Used by learned-feature detectors (distance to training features in the space a network
    learned). Like :class:`PixelKNN`, the bank's length is known only once it is built or loaded.
    """

    def __init__(self, k: int = 3, max_bank: int = 20000) -> None:
        super().__init__()
        self.k, self.max_bank = k, max_bank
        self.register_buffer("bank", torch.zeros(0, 0))

    @torch.no_grad()
    def build(self, features: torch.Tensor) -> None:
        bank = F.normalize(features.float(), dim=1)
        if len(bank) > self.max_bank:
            bank = bank[torch.linspace(0, len(bank) - 1, self.max_bank).long()]
        self.bank = bank

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(F.normalize(features.float(), dim=1), self.bank)
        return d.topk(min(self.k, self.bank.shape[0]), dim=1, largest=False).values.mean(1)

    _load_from_state_dict = resize_bank_on_load
