"""The model side of a detector: a plain ``nn.Module`` with a training loss and an inference hook.

Every detector returns the same :class:`InferenceBatch`, so training, scoring, evaluation and plots
never branch on the family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.params import Derived, NoDerived, NoParams, Params
from oddeye.errors import OddeyeError


class Batches:
    """A set of normalised images as batches, one pass per call (``for x in batches()``); ``len``
    is the number of images, so a bank can choose its rows before the pass. ``subset``, where the
    source can read some of its images alone (the training loop's passes): positions -> the
    batches of those images only (see :meth:`select`). ``cover``, where the source keeps what it
    computed for other banks of the same fit: m -> the positions of m images that cover the pass
    (see :func:`oddeye.detectors.memory.covering`), computed once for every bank that asks."""

    def __init__(
        self,
        make: Callable[[], Iterator[torch.Tensor]],
        n: int,
        subset: Callable[[np.ndarray], Batches] | None = None,
        cover: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.make, self.n, self.subset, self.cover = make, n, subset, cover

    def __call__(self) -> Iterator[torch.Tensor]:
        return self.make()

    def __len__(self) -> int:
        return self.n

    def select(self, positions: np.ndarray) -> Batches:
        """The images at the ascending ``positions`` of a pass, in order: read alone where the
        source can (a bank of 20,000 of 140,001 images decodes those, not all), else picked out of
        a whole pass."""
        positions = np.asarray(positions, np.int64)
        if self.subset is not None:
            return self.subset(positions)
        return Batches(lambda: picked(self, positions), len(positions))


def picked(batches: Callable[[], Iterator[torch.Tensor]], positions: np.ndarray) -> Iterator[torch.Tensor]:
    """The images at the ascending ``positions`` of one pass of ``batches()``, batch by batch."""
    seen = 0
    for x in batches():
        start, seen = seen, seen + len(x)
        lo, hi = np.searchsorted(positions, [start, seen])
        if hi > lo:
            yield x if hi - lo == len(x) else x[torch.from_numpy(positions[lo:hi] - start)]


def selected(batches: Callable[[], Iterator[torch.Tensor]], positions: np.ndarray) -> Iterator[torch.Tensor]:
    """One pass over the images at the ascending ``positions`` of ``batches``: :meth:`Batches.select`
    where it is one, else picked out of a whole pass."""
    if isinstance(batches, Batches):
        return batches.select(positions)()
    return picked(batches, np.asarray(positions, np.int64))


@dataclass
class InferenceBatch:
    """Per-image anomaly scores (higher = more anomalous) and, where the family has one, a map."""

    score: torch.Tensor  # (B,)
    anomaly_map: torch.Tensor | None = None  # (B, H, W)
    reconstruction: torch.Tensor | None = None  # (B, C, H, W), in the normalised [-1, 1] space


class AnomalyModel(nn.Module):
    """Base class: inputs are normalised (B, C, H, W) tensors in [-1, 1].

    Two measured speed hints for CPUs (see BENCHMARKS.md): ``channels_last`` (NHWC memory for
    convolutions) and ``cpu_bf16`` (bf16 autocast pays off on CPUs with AMX / AVX512-BF16).
    """

    channels_last: bool = False
    cpu_bf16: bool = True
    trainable: bool = True  # False: no epochs; the model is built by ``fit_end`` (memory banks)
    updatable: bool = False  # True: ``absorb`` adds normal images to it without training (banks)
    default_epochs: int = 50  # the family's epoch cap; ``epoch_cap`` is this model's own
    label: str = ""  # the registry name, set by ``DetectorSpec.build`` (names ensemble members)
    latent: str = "the input pixels"  # what ``embed`` returns, in words (the report's latent map)
    map_meaning: str = "where the image is anomalous"  # what ``infer(maps=True)`` shows, in words
    # The family's typed parameters and what it derives from them at build time (see
    # :mod:`oddeye.detectors.params`); subclasses name their own dataclasses.
    Params: type[Params] = NoParams
    Derived: type[Derived] = NoDerived
    # The share of training images to set aside before a bank is kept (None: ``auto``, a robust
    # rule decides; 0: none), set by the training loop from the ``contamination`` setting on the
    # model it trains (an ensemble screens its members' banks together, so they keep 0).
    contamination: float | None = 0.0
    screening_: Any = None  # after fit_end: what screening set aside (a Screening), or None

    def __init__(
        self, shape: tuple[int, int, int], params: Params | None = None, derived: Derived | None = None
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)  # (H, W, C)
        self.params = params if params is not None else type(self).Params()
        if not isinstance(self.params, type(self).Params):
            raise TypeError(f"{type(self).__name__} takes {type(self).Params.__name__}, not {type(params)}")
        # derived anew for this shape, or exactly as a saved run recorded them
        self.derived = derived if derived is not None else self.derive(self.params, self.shape)
        self.epoch_cap = self.default_epochs  # the training loop's cap (the config may override it)

    @classmethod
    def derive(cls, params: Params, shape: tuple[int, int, int]) -> Derived:
        """What this family computes from ``params`` and the image ``shape`` (H, W, C) at build
        time and records with the run (its weights depend on it); none by default."""
        return cls.Derived()

    def record_params(self) -> dict[str, object]:
        """Every parameter with its value, as the run records it (ensembles: members as records)."""
        return self.params.to_dict()

    def compares_places(self) -> bool:
        """Whether the score compares what an image shows at each place with what the training
        images show there (a blurred image, its edges, a patch at its place): meaningful where the
        images are aligned, noise on a texture. False for a colour distribution, or patches compared
        anywhere."""
        return True

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar training loss on a normalised batch."""
        raise NotImplementedError

    def fit_start(self, batches: Callable[[], Iterator[torch.Tensor]]) -> None:
        """Once before training; ``batches()`` yields the normalised training images (no grad)."""

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        """Once after training, best weights restored (e.g. to build a memory bank).

        ``heldout()`` yields the held-out normal images (possibly none): the place to fit score
        scales, since the training images themselves score too well.
        """

    def fit_end_work(self) -> str:
        """What :meth:`fit_end` builds, in words, for progress lines ('' when it does nothing)."""
        return ""

    def banks(self) -> list[tuple[Any, Callable[[torch.Tensor], torch.Tensor]]]:
        """The memory banks (``KNNBank``) whose rows are training images, each with the features
        of a batch it holds: what screening for contamination may trim (none by default; see
        :func:`oddeye.detectors.screening.screen_training`)."""
        return []

    def set_aside_images(self, positions: np.ndarray) -> None:
        """Take out of the fitted model the training images an ensemble's screening set aside
        (``positions`` in the training pass) where its own banks were not screened with the rest
        (none by default: the screened banks have already dropped them)."""

    def pass_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) how odd each image of the normalised batch ``x`` looks to the model as trained so
        far, before :meth:`fit_end` (what the training loop trims the training set by, after a
        first pass): its score, unless that needs what ``fit_end`` builds (subclasses say)."""
        return self.infer(x).score

    def reference_scores(self) -> torch.Tensor | None:
        """Scores of normal images the fitted model gives without held-out images (a memory
        bank's leave-one-out scores), or None: more data to put scores on one scale."""
        return None

    def absorb(self, batches: Batches, heldout: Batches, seen: int) -> None:
        """Take the normal images ``batches()`` yields into the fitted model without training
        (``oddeye update``), then refit on ``heldout()`` what :meth:`fit_end` fits there (score
        scales). ``seen``: how many images the model's banks were built from, so that a full bank
        keeps old and new in proportion. Only ``updatable`` models can; others raise the one-line
        error of :func:`needs_training`."""
        raise OddeyeError(needs_training(self))

    def members(self) -> list[AnomalyModel]:
        """Sub-detectors the training loop fits first, each on its own (ensembles)."""
        return []

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Scores for a normalised batch, and with ``maps`` the (B, H, W) anomaly map at the
        input's resolution (each family says what its map means); eval mode, no gradients."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) latent codes (what ``latent`` says) for the report's 2-D map; eval mode, no grad."""
        return x.flatten(1).float()


def needs_training(model: AnomalyModel) -> str | None:
    """Why ``model`` cannot absorb new images, as one line saying what to do instead (None: it
    can, every part of it being ``updatable``)."""
    for part in (*model.members(), model):
        if not part.updatable:
            name = part.label or type(part).__name__
            where = f"{model.label or type(model).__name__} member " if part is not model else ""
            return (
                f"{where}{name} needs training: retrain with oddeye train on the old and new images together"
            )
    return None


class ReconstructionModel(AnomalyModel):
    """Autoencoder family: MSE training loss; score = sqrt of the per-image sum of squared error.

    The score is the course notebook's: ``sqrt(sum over pixels and channels of (x - x_hat)^2)``.
    """

    map_meaning = "the squared reconstruction error per pixel, summed over channels"

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.reconstruct(x).float(), x.float())

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Map: the squared reconstruction error per pixel, summed over channels (its sum is the
        score squared); always given, it costs nothing more."""
        recon = self.reconstruct(x).float()
        err = (recon - x.float()).pow(2)  # (B, C, H, W)
        return InferenceBatch(err.flatten(1).sum(1).sqrt(), err.sum(1), recon)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad H and W up to a multiple (strided conv stacks need it); crop with ``[..., :h, :w]``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
