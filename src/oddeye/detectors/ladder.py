"""The course's reference ladder (sample notebook), at any input size and channel count.

Parameter counts at 64x64x3: fcn 3,176,419; cnn 47,355; cnn-bn 47,595; vae 65,835.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from oddeye.detectors.base import ReconstructionModel, pad_to_multiple
from oddeye.detectors.params import Derived, Params, param
from oddeye.detectors.registry import register


@dataclass(frozen=True)
class FCNParams(Params):
    hidden: tuple[int, ...] = param((128, 64, 12, 3), help="encoder layer widths (the decoder mirrors them)")


@register("fcn", "fully connected autoencoder (course 'simple'): D-128-64-12-3, mirrored, Tanh")
class FCNAutoencoder(ReconstructionModel):
    Params = FCNParams

    def __init__(
        self, shape: tuple[int, int, int], params: FCNParams | None = None, derived: Derived | None = None
    ) -> None:
        super().__init__(shape, params, derived)
        dims = [math.prod(self.shape), *self.params.hidden]
        self.encoder = _mlp(dims, last_activation=None)
        self.decoder = _mlp(dims[::-1], last_activation=nn.Tanh())

    latent = "the bottleneck code"

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x.flatten(1))  # (B, hidden[-1])
        return self.decoder(z).view_as(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1)).float()


def _mlp(dims: list[int], last_activation: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    if last_activation is not None:
        layers.append(last_activation)
    return nn.Sequential(*layers)


def conv_stack(chans: list[int], batchnorm: bool, transpose: bool, last: nn.Module | None):
    """k4/s2/p1 (transposed) convolutions; BN + ReLU after every layer except a given last one."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        layers.append(conv(a, b, 4, stride=2, padding=1))
        if last is not None and i == len(chans) - 2:
            layers.append(last)
        else:
            layers += [nn.BatchNorm2d(b)] if batchnorm else []
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ConvParams(Params):
    channels: tuple[int, ...] = param((12, 24, 48), help="encoder channels, k4 s2 each (the decoder mirrors)")


@register("cnn", "convolutional autoencoder (course 'medium'): C-12-24-48, k4 s2, mirrored, Tanh")
class ConvAutoencoder(ReconstructionModel):
    batchnorm = False
    channels_last = True  # measured faster on CPU without BatchNorm, slower with it

    Params = ConvParams

    def __init__(
        self, shape: tuple[int, int, int], params: ConvParams | None = None, derived: Derived | None = None
    ) -> None:
        super().__init__(shape, params, derived)
        chans = [self.shape[2], *self.params.channels]
        self.multiple = 2 ** len(self.params.channels)
        self.encoder = conv_stack(chans, self.batchnorm, transpose=False, last=None)
        self.decoder = conv_stack(chans[::-1], self.batchnorm, transpose=True, last=nn.Tanh())

    latent = "the encoder's output (flattened)"

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        z = self.encoder(pad_to_multiple(x, self.multiple))  # (B, channels[-1], H/8, W/8)
        return self.decoder(z)[..., :h, :w]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(pad_to_multiple(x, self.multiple)).flatten(1).float()


@register("cnn-bn", "cnn with BatchNorm after each hidden layer (course 'strong')")
class ConvBNAutoencoder(ConvAutoencoder):
    batchnorm = True
    channels_last = False


@dataclass(frozen=True)
class VAEParams(ConvParams):
    kld_weight: float = param(1.0, help="weight of the KL divergence (summed over elements)")


@register("vae", "convolutional VAE (course notebook): C-12-24, mu/logvar heads 24-48, mirrored")
class ConvVAE(ReconstructionModel):
    """Loss = MSE (mean) + ``kld_weight`` * KL divergence summed over elements, as in the notebook.

    Scoring decodes the posterior mean, so scores are deterministic.
    """

    Params = VAEParams

    def __init__(
        self, shape: tuple[int, int, int], params: VAEParams | None = None, derived: Derived | None = None
    ) -> None:
        super().__init__(shape, params, derived)
        chans = [self.shape[2], *self.params.channels]
        self.multiple = 2 ** len(self.params.channels)
        self.kld_weight = self.params.kld_weight
        self.encoder = conv_stack(chans[:-1], False, transpose=False, last=None)
        self.mu_head = conv_stack(chans[-2:], False, transpose=False, last=None)
        self.logvar_head = conv_stack(chans[-2:], False, transpose=False, last=None)
        self.decoder = conv_stack(chans[::-1], False, transpose=True, last=nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(pad_to_multiple(x, self.multiple))
        return self.mu_head(h), self.logvar_head(h)  # each (B, channels[-1], H/8, W/8)

    latent = "the posterior mean (flattened)"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0].flatten(1).float()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(x)
        return self.decoder(mu)[..., : x.shape[-2], : x.shape[-1]]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.decoder(z)[..., : x.shape[-2], : x.shape[-1]].float()
        mse = nn.functional.mse_loss(recon, x.float())
        kld = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().sum()
        return mse + self.kld_weight * kld
