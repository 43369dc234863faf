"""The course's "boss" hints done properly: an autoencoder with a classifier trained against
synthetic anomalies, and a GAN-based one-class detector in the spirit of OCGAN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, InferenceBatch, pad_to_multiple
from oddeye.detectors.fusion import ScoreFusion, collect
from oddeye.detectors.memory import grow, reduced_size, shrink
from oddeye.detectors.params import Derived, Params, WorkSize, param
from oddeye.detectors.registry import register
from oddeye.detectors.synthetic import KINDS, corrupt, repeatable
from oddeye.errors import OddeyeError


def conv_bn(a: int, b: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(a, b, 3, stride, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]


def encoder_stages(in_ch: int, width: int) -> nn.Sequential:
    """(B, C, H, W) -> (B, 4w, H/4, W/4): three stages of two 3x3 conv-BN-ReLU, stride 2 between."""
    w = width
    return nn.Sequential(
        *conv_bn(in_ch, w),
        *conv_bn(w, w),
        *conv_bn(w, 2 * w, 2),
        *conv_bn(2 * w, 2 * w),
        *conv_bn(2 * w, 4 * w, 2),
        *conv_bn(4 * w, 4 * w),
    )


def decoder_stages(out_ch: int, width: int) -> nn.Sequential:
    """The mirror of :func:`encoder_stages`: (B, 4w, H/4, W/4) -> (B, C, H, W) in [-1, 1]."""
    w = width
    return nn.Sequential(
        nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, out_ch, 3, 1, 1),
        nn.Tanh(),
    )


SCORES = ("classifier", "reconstruction", "both")


@dataclass(frozen=True)
class BossParams(Params):
    width: int = param(32, help="channels of the first stage (then 2x and 4x)")
    recon_weight: float = param(1.0, help="weight of the reconstruction loss (0: no decoder)")
    kinds: tuple[str, ...] = param(KINDS, help="synthetic anomalies the classifier learns", choices=KINDS)
    score: str = param("both", help="what scores: the classifier, the error or both", choices=SCORES)
    max_side: int = param(0, before=0, help="work at most this many pixels a side (0: full size)")


@register(
    "boss",
    "autoencoder + classifier of normal vs synthetic anomalies (noise, pasted/swapped patches, "
    "blur, intensity shifts, stretches); score from the classifier, the error, or both",
)
class AutoencoderClassifier(AnomalyModel):
    """A shared convolutional encoder feeds a decoder (reconstruction of normal images) and a
    classifier head that tells normal images from corrupted copies of them (``kinds`` from
    :mod:`oddeye.detectors.synthetic`, one per image, drawn at random every step).

    Loss: ``recon_weight`` * MSE(normal) + binary cross-entropy(normal -> 0, corrupted -> 1).
    Score (``score``): the classifier's logit, the reconstruction error (sqrt of the summed squared
    error, as the ladder), or ``both`` fused as z-scores on held-out training images.
    ``max_side`` > 0: images are area-averaged down to at most that many pixels a side first (4x
    fewer operations per halving; maps and reconstructions are scaled back up). Derived and
    recorded: ``work_hw``, the resolution it works at.
    """

    Params = BossParams
    Derived = WorkSize

    @classmethod
    def derive(cls, params: BossParams, shape: tuple[int, int, int]) -> WorkSize:
        return WorkSize(reduced_size(shape, params.max_side))

    def __init__(
        self, shape: tuple[int, int, int], params: BossParams | None = None, derived: WorkSize | None = None
    ) -> None:
        super().__init__(shape, params, derived)
        p = self.params
        if p.recon_weight <= 0 and p.score != "classifier":
            raise OddeyeError(f"score={p.score} needs the decoder: recon_weight must be > 0")
        self.kinds, self.score_mode, self.recon_weight = p.kinds, p.score, p.recon_weight
        self.work_hw, width, recon_weight = self.derived.work_hw, p.width, p.recon_weight
        c = self.shape[2]
        self.encoder = encoder_stages(c, width)
        self.decoder = decoder_stages(c, width) if recon_weight > 0 else None  # 0: a plain classifier
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 1))
        self.fusion = ScoreFusion(2)

    def _forward(self, x: torch.Tensor, decode: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, w = x.shape[-2:]
        z = self.encoder(pad_to_multiple(x, 4))
        recon = self.decoder(z)[..., :h, :w] if decode and self.decoder is not None else None
        return self.head(z).squeeze(1).float(), recon

    latent = "the encoder's output, averaged over positions (the classifier's input)"

    @property
    def map_meaning(self) -> str:  # type: ignore[override]
        return {
            "classifier": "the classifier's logit (anomalous vs normal) at each position, before pooling",
            "reconstruction": "the squared reconstruction error per pixel, summed over channels",
            "both": "the classifier's logit map and the squared error, each on its fusion scale, averaged",
        }[self.score_mode]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = shrink(x, self.work_hw)
        return self.head[:2](self.encoder(pad_to_multiple(x, 4))).float()  # (B, 4 * width)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        x = shrink(x, self.work_hw)
        if self.training:
            bad = corrupt(x, self.kinds)
        else:  # held-out loss: the same corruptions every epoch, so epochs compare
            with repeatable(x):
                bad = corrupt(x, self.kinds)
        n = x.shape[0]
        logits, recon = self._forward(torch.cat([x, bad.to(x.dtype)]), decode=self.recon_weight > 0)
        target = torch.cat([torch.zeros(n, device=x.device), torch.ones(n, device=x.device)])
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if recon is not None:
            loss = loss + self.recon_weight * F.mse_loss(recon[:n].float(), x.float())
        return loss

    def _components(self, x: torch.Tensor, maps: bool = False) -> tuple[torch.Tensor, ...]:
        """(B, 2) [logit, error] scores (error 0 without a decoder), and with ``maps`` the
        (B, H, W) classifier and error maps and the reconstruction (None where there is none)."""
        size = x.shape[-2:]
        x = shrink(x, self.work_hw)
        h, w = x.shape[-2:]
        z = self.encoder(pad_to_multiple(x, 4))  # (B, 4w, H'/4, W'/4)
        logits = self.head(z).squeeze(1).float()
        recon = self.decoder(z)[..., :h, :w].float() if self.decoder is not None else None
        err = (recon - x.float()).pow(2) if recon is not None else None
        error = err.flatten(1).sum(1).sqrt() if err is not None else torch.zeros_like(logits)
        scores = torch.stack([logits, error], 1)
        if not maps:
            return (scores,)
        linear = self.head[2]  # the logit is the mean over positions of this map
        per_position = torch.einsum("bchw,oc->bohw", z.float(), linear.weight.float()) + linear.bias.float()
        padded = (4 * z.shape[-2], 4 * z.shape[-1])  # two stride-2 stages over the padded input
        logit_map = grow(grow(per_position, padded)[..., :h, :w], size)[:, 0]
        err_map = grow(err.sum(1, keepdim=True), size)[:, 0] if err is not None else None
        return scores, logit_map, err_map, grow(recon, size) if recon is not None else None

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        if self.score_mode == "both":
            self.fusion.fit(collect(lambda x: self._components(x)[0], heldout, batches))

    def fit_end_work(self) -> str:
        return "score scales" if self.score_mode == "both" else ""

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Maps: the classifier's logit at each position of the encoder's output (before the
        pooling that makes the score), the reconstruction's squared error per pixel, or for
        ``both`` the two, each divided by its score's fusion scale, averaged."""
        if not maps:
            (parts,) = self._components(x)
            return InferenceBatch(self._score(parts))
        parts, logit_map, err_map, recon = self._components(x, maps=True)
        if self.score_mode == "classifier":
            amap = logit_map
        elif self.score_mode == "reconstruction":
            amap = err_map
        else:
            amap = (logit_map / self.fusion.scale[0] + err_map / self.fusion.scale[1]) / 2
        return InferenceBatch(self._score(parts), amap, recon)

    def pass_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The score, or for ``both`` the classifier's part (the fusion scales come after)."""
        parts = self._components(x)[0]
        return parts[:, 1] if self.score_mode == "reconstruction" else parts[:, 0]

    def _score(self, parts: torch.Tensor) -> torch.Tensor:
        if self.score_mode == "classifier":
            return parts[:, 0]
        if self.score_mode == "reconstruction":
            return parts[:, 1]
        return self.fusion(parts)


def frozen(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``module(*inputs)`` with its parameters detached: gradients reach the inputs only.

    This lets one loss train a generator against a discriminator in the same backward pass
    without moving the discriminator toward the generator's goal.
    """
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, inputs)


class Critic(nn.Sequential):
    """Sequential that first pads images smaller than 4x4 (replicate), which two 4x4 stride-2
    convolutions need; larger images pass unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = max(0, 4 - x.shape[-2]), max(0, 4 - x.shape[-1])
        return super().forward(F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x)


def critic(in_ch: int, width: int) -> nn.Sequential:
    """Small convolutional discriminator/classifier (no BatchNorm, so :func:`frozen` is pure)."""
    w = width
    return Critic(
        nn.Conv2d(in_ch, w, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(w, 2 * w, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * w, 1),
    )


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float().squeeze(1)
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@dataclass(frozen=True)
class OCGANParams(Params):
    width: int = param(16, help="channels of the first stage (then 2x and 4x)")
    latent: int = param(32, help="dimensions of the tanh-bounded latent")
    noise: float = param(0.2, help="std of the denoising input noise")
    recon_weight: float = param(10.0, help="weight of the reconstruction loss")
    mining_steps: int = param(2, help="gradient steps of informative negative mining")
    mining_lr: float = param(0.5, help="step size of negative mining")


@register(
    "ocgan",
    "OCGAN-style: bounded latent space, latent and visual discriminators, a classifier and "
    "informative negative mining so every latent decodes to a normal-looking image",
)
class OneClassGAN(AnomalyModel):
    """In the spirit of OCGAN (Perera et al. 2019). A denoising autoencoder with a ``tanh``-bounded
    latent of ``latent`` dimensions; a latent discriminator pushes encodings toward the uniform
    distribution on [-1, 1]^d; a visual discriminator pushes decodings of random latents toward
    the normal images; a classifier tells reconstructions of real images from decodings of random
    latents, and ``mining_steps`` gradient steps move random latents to where the classifier sees
    the worst images (informative negatives), which the decoder then learns to make normal.

    Stability: all parts train in one backward pass of the one training loop: discriminator and
    classifier losses see detached generator outputs; generator losses see the discriminators with
    detached parameters (:func:`frozen`). Reconstruction is weighted ``recon_weight`` (10, as in
    the paper). Held-out loss (for stopping) and score: reconstruction error of the clean image.
    """

    Params = OCGANParams

    def __init__(
        self, shape: tuple[int, int, int], params: OCGANParams | None = None, derived: Derived | None = None
    ) -> None:
        super().__init__(shape, params, derived)
        p = self.params
        h, w, c = self.shape
        width, latent = p.width, p.latent
        self.noise, self.recon_weight = p.noise, p.recon_weight
        self.mining_steps, self.mining_lr, self.latent = p.mining_steps, p.mining_lr, latent
        self.grid = (-(-h // 4), -(-w // 4))
        flat = 4 * width * self.grid[0] * self.grid[1]
        self.encoder = nn.Sequential(
            encoder_stages(c, width), nn.Flatten(), nn.Linear(flat, latent), nn.Tanh()
        )
        self.expand = nn.Linear(latent, flat)
        self.decoder = decoder_stages(c, width)
        self.latent_disc = nn.Sequential(nn.Linear(latent, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))
        self.visual_disc = critic(c, width)
        self.classifier = critic(c, width)

    latent = "the bounded latent code"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(pad_to_multiple(x, 4))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h, w = self.shape[:2]
        grid = self.expand(z).view(z.shape[0], -1, *self.grid)
        return self.decoder(grid)[..., :h, :w]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def _mine(self, u: torch.Tensor) -> torch.Tensor:
        """Move random latents toward where the classifier judges their decodings worst."""
        u = u.detach()
        for _ in range(self.mining_steps):
            u.requires_grad_(True)
            with torch.enable_grad():
                realness = frozen(self.classifier, self.decode(u)).float().sum()
                (grad,) = torch.autograd.grad(realness, u)
            u = (u - self.mining_lr * grad.sign() / 10).clamp(-1, 1).detach()
        return u

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # held-out: the reconstruction error alone is comparable across epochs
            return F.mse_loss(self.reconstruct(x).float(), x.float())
        z = self.encode((x + self.noise * torch.randn_like(x)).clamp(-1, 1))
        recon = self.decode(z)
        u = torch.rand(len(x), self.latent, device=x.device) * 2 - 1
        fake = self.decode(self._mine(u))
        # discriminators and classifier, on detached generator outputs
        d_loss = (
            bce(self.latent_disc(u), 1.0)
            + bce(self.latent_disc(z.detach()), 0.0)
            + bce(self.visual_disc(x), 1.0)
            + bce(self.visual_disc(fake.detach()), 0.0)
            + bce(self.classifier(recon.detach()), 1.0)
            + bce(self.classifier(fake.detach()), 0.0)
        )
        # encoder and decoder, against the discriminators' current (detached) parameters
        g_loss = (
            self.recon_weight * F.mse_loss(recon.float(), x.float())
            + bce(frozen(self.latent_disc, z), 1.0)
            + bce(frozen(self.visual_disc, fake), 1.0)
        )
        return d_loss + g_loss

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Map: the reconstruction's squared error per pixel, summed over channels."""
        recon = self.reconstruct(x).float()
        err = (recon - x.float()).pow(2)
        return InferenceBatch(err.flatten(1).sum(1).sqrt(), err.sum(1), recon)
