"""A learned local detector: a small U-Net that marks, pixel by pixel, where a synthetic local
anomaly was put into a normal image, in the manner of NSA (Schlüter et al., ECCV 2022: patches of
other training images blended in) and CutPaste (Li et al., CVPR 2021: patches of the same image
moved). No external data, no pretrained weights: it learns from the normal images alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, InferenceBatch, pad_to_multiple
from oddeye.detectors.boss import conv_bn
from oddeye.detectors.memory import grow, reduced_size, shrink
from oddeye.detectors.params import Params, WorkSize, param
from oddeye.detectors.registry import register
from oddeye.detectors.synthetic import LOCAL_KINDS, local_anomalies, repeatable
from oddeye.errors import OddeyeError

SCORES = ("probability", "logit")


class UNet(nn.Module):
    """(B, C, H, W) -> (B, 1, H, W) logits; H and W multiples of 2**stages. Each stage down is a
    stride-2 then a plain 3x3 conv-BN-ReLU (channels doubling, at most 8x ``width``); each stage up
    scales bilinearly, joins the skip of its resolution and applies two 3x3 conv-BN-ReLU."""

    def __init__(self, in_ch: int, width: int, stages: int) -> None:
        super().__init__()
        widths = [width * 2 ** min(i, 3) for i in range(stages + 1)]
        self.down = nn.ModuleList([nn.Sequential(*conv_bn(in_ch, widths[0]), *conv_bn(widths[0], widths[0]))])
        for a, b in zip(widths, widths[1:]):
            self.down.append(nn.Sequential(*conv_bn(a, b, 2), *conv_bn(b, b)))
        pairs = list(zip(widths, widths[1:]))  # (finer, coarser)
        self.up = nn.ModuleList(nn.Sequential(*conv_bn(b + a, a), *conv_bn(a, a)) for a, b in reversed(pairs))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, finest first; the last is the bottleneck (B, 8w, H/2^s, W/2^s)."""
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        x = skips.pop()
        for stage in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], 1))
        return self.head(x)


@dataclass(frozen=True)
class LocalNetParams(Params):
    width: int = param(16, help="channels of the U-Net's first stage (doubled each stage, at most 8x)")
    stages: int = param(3, help="stages down (each halves the resolution) and as many up")
    max_side: int = param(64, help="work at most this many pixels a side (0: full size); maps are scaled up")
    coords: bool = param(True, help="give the network each pixel's position as two more input channels")
    reference: bool = param(
        False,
        help="give the network each pixel's distance from the training images' mean there, in their "
        "standard deviations (C more input channels; for aligned images)",
    )
    kinds: tuple[str, ...] = param(
        LOCAL_KINDS, help="synthetic local anomalies it learns to mark", choices=LOCAL_KINDS
    )
    share: float = param(0.5, help="share of training images given a synthetic anomaly")
    area_min: float = param(0.005, help="smallest synthetic anomaly, as a share of the image's area")
    area_max: float = param(0.08, help="largest synthetic anomaly, as a share of the image's area")
    tolerance: float = param(0.05, help="change (of the [-1, 1] range) a pixel needs to be marked anomalous")
    dice: float = param(1.0, help="weight of the soft dice loss beside the per-pixel cross-entropy")
    top: float = param(0.01, help="share of the map's pixels whose mean is the image score")
    score: str = param("probability", help="what the top pixels' mean is taken of", choices=SCORES)


@register(
    "local-net",
    "a small U-Net trained to mark synthetic local anomalies (patches of other or the same "
    "training images blended in, NSA/CutPaste-style; local noise, blur, flat colour, tints); "
    "map = the per-pixel probability, score = the mean of its top pixels",
)
class LocalNet(AnomalyModel):
    """Training: a ``share`` of each batch gets one synthetic local anomaly per image
    (:func:`oddeye.detectors.synthetic.local_anomalies`: a rectangle or ellipse of
    ``area_min``-``area_max`` of the image, feathered, its content of a kind from ``kinds``); the
    target is the mask of the pixels that changed by more than ``tolerance``. Loss: per-pixel
    binary cross-entropy + ``dice`` x soft dice over the batch. The held-out loss (for stopping)
    uses the same anomalies every epoch.

    Inference: the map is the sigmoid probability per pixel, at ``max_side`` pixels a side at
    most (derived and recorded: ``work_hw``), scaled up bilinearly to the input; the score is the
    mean of the map's ``top`` share of pixels (of the probabilities or, ``score=logit``, of the
    logits there, which do not saturate), at the working resolution.
    """

    Params = LocalNetParams
    Derived = WorkSize
    default_epochs = 100  # a budget or early stopping ends it sooner
    latent = "the U-Net's bottleneck features, averaged over positions"
    map_meaning = "the probability that each pixel belongs to a local anomaly (the U-Net's sigmoid)"

    @classmethod
    def derive(cls, params: LocalNetParams, shape: tuple[int, int, int]) -> WorkSize:
        return WorkSize(reduced_size(shape, params.max_side))

    def __init__(
        self,
        shape: tuple[int, int, int],
        params: LocalNetParams | None = None,
        derived: WorkSize | None = None,
    ) -> None:
        super().__init__(shape, params, derived)
        p = self.params
        checks = {
            "width": p.width >= 1,
            "stages": p.stages >= 1,
            "share": 0 < p.share <= 1,
            "area_min": 0 < p.area_min <= p.area_max,
            "area_max": p.area_max <= 1,
            "top": 0 < p.top <= 1,
            "tolerance": p.tolerance >= 0,
            "dice": p.dice >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise OddeyeError(f"parameter {bad[0]}={getattr(p, bad[0])!r} is out of range")
        self.work_hw = tuple(self.derived.work_hw)
        c = self.shape[2]
        if p.reference:  # set by fit_start from the training images, at the working size
            self.register_buffer("ref_mean", torch.zeros(c, *self.work_hw))
            self.register_buffer("ref_scale", torch.ones(c, *self.work_hw))
        self.net = UNet(c * (1 + p.reference) + 2 * p.coords, p.width, p.stages)

    def fit_start(self, batches: Callable[[], Iterator[torch.Tensor]]) -> None:
        """With ``reference``: the per-pixel mean and standard deviation of the training images."""
        if not self.params.reference:
            return
        total, squares, count = 0.0, 0.0, 0
        for x in batches():  # streamed sums: no (N, C, H, W) copy
            x = shrink(x, self.work_hw).float()
            total, squares, count = total + x.sum(0), squares + x.pow(2).sum(0), count + len(x)
        mean = total / max(count, 1)
        self.ref_mean.copy_(mean)
        self.ref_scale.copy_((squares / max(count, 1) - mean**2).clamp(min=0).sqrt() + 0.1)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) at the working size -> the padded network input, the distances from the
        training mean and the positions appended (as the parameters say)."""
        if self.params.reference:
            x = torch.cat([x, ((x - self.ref_mean) / self.ref_scale).clamp(-4, 4).to(x.dtype)], 1)
        if self.params.coords:
            b, _, h, w = x.shape
            ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) * (2 / h) - 1
            xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) * (2 / w) - 1
            pos = torch.stack([ys.view(h, 1).expand(h, w), xs.view(1, w).expand(h, w)])  # (2, h, w)
            x = torch.cat([x, pos.unsqueeze(0).expand(b, 2, h, w)], 1)
        return pad_to_multiple(x, 2**self.params.stages)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) per-pixel logits for images already at the working size."""
        h, w = x.shape[-2:]
        return self.net(self._input(x))[..., :h, :w].float()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(self._input(shrink(x, self.work_hw)))[-1].float().mean((2, 3))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        x = shrink(x, self.work_hw)
        if self.training:
            bad, target = self._anomalies(x)
        else:  # held-out loss: the same anomalies every epoch, so epochs compare
            with repeatable(x):
                bad, target = self._anomalies(x)
        logits = self._logits(bad.to(x.dtype))  # (B, 1, h, w)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if self.params.dice > 0:
            prob = torch.sigmoid(logits)
            dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
            loss = loss + self.params.dice * dice
        return loss

    def _anomalies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        return local_anomalies(x, p.kinds, p.share, (p.area_min, p.area_max), p.tolerance)

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Map: the per-pixel probability of a local anomaly, scaled up to the input's size."""
        size = x.shape[-2:]
        logits = self._logits(shrink(x, self.work_hw))  # (B, 1, h, w)
        prob = torch.sigmoid(logits)
        k = max(1, round(self.params.top * logits.shape[-2] * logits.shape[-1]))
        ranked = (logits if self.params.score == "logit" else prob).flatten(1)
        score = ranked.topk(k, dim=1).values.mean(1)
        return InferenceBatch(score, grow(prob, size)[:, 0] if maps else None)
