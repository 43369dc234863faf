"""Denoising autoencoder: the input is corrupted, the target is the clean image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oddeye.detectors.base import ReconstructionModel, pad_to_multiple
from oddeye.detectors.boss import decoder_stages, encoder_stages
from oddeye.detectors.params import Derived, Params, param
from oddeye.detectors.registry import register


@dataclass(frozen=True)
class DAEParams(Params):
    width: int = param(16, help="channels of the first stage (then 2x and 4x)")
    noise: float = param(0.3, help="std of the Gaussian input noise")
    drop: float = param(0.2, help="fraction of pixels dropped from the input")


@register("dae", "denoising autoencoder: Gaussian noise + dropped pixels in, clean image out")
class DenoisingAutoencoder(ReconstructionModel):
    """Encoder/decoder as in ``boss`` (three conv stages, width ``width``). Training inputs get
    Gaussian noise of std ``noise`` (in the [-1, 1] space) and a fraction ``drop`` of pixels set to
    -1; the loss is the MSE against the clean image. Scoring reconstructs the clean test image and
    scores its error like the ladder (sqrt of the summed squared error)."""

    Params = DAEParams

    def __init__(
        self, shape: tuple[int, int, int], params: DAEParams | None = None, derived: Derived | None = None
    ) -> None:
        super().__init__(shape, params, derived)
        self.noise, self.drop, width = self.params.noise, self.params.drop, self.params.width
        self.encoder = encoder_stages(self.shape[2], width)
        self.decoder = decoder_stages(self.shape[2], width)

    latent = "the encoder's output, averaged over positions"

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.decoder(self.encoder(pad_to_multiple(x, 4)))[..., :h, :w]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(pad_to_multiple(x, 4)).float().mean((2, 3))  # (B, 4 * width)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x + self.noise * torch.randn_like(x)
        keep = torch.rand_like(x[:, :1]) >= self.drop  # drop whole pixels (all channels)
        noisy = torch.where(keep, noisy, torch.full_like(x, -1.0)).clamp(-1, 1)
        return F.mse_loss(self.reconstruct(noisy).float(), x.float())
