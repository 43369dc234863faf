"""Training images that are not normal: which rows of a memory bank to set aside.

A user's folder of normal images always holds a few that are not, and a memory bank that keeps
one hides every test image that resembles it. Stray images rarely come alone (a few shoes among
bags): they vouch for each other, so a row's distance to its own few nearest rows says little.
Each row is measured instead against the bank's *typical* rows:

1. every row of a reference sample (at most ``REFERENCE`` rows) gets its mean distance to its
   ``K`` nearest reference rows, ``K`` a share (``DENSITY_SHARE``) of the sample, far more than a
   handful of strays of one kind: a crowd of strays is still far from most of the bank;
2. the half of the sample with the smallest such distance is the *core*;
3. each row's atypicality is its mean distance to its ``CORE_K`` nearest core rows (never itself),
   as a robust z-score: less the median, over 1.4826 x the median absolute deviation.

Ensembles average their members' z-scores (each member sees the images its own way). ``auto``
sets aside the rows beyond ``AUTO_CUT``; a fraction sets aside that share, the most atypical
first. Distances are computed on a fixed random projection to at most ``PROJECTED`` dimensions
(distances kept to a few percent: enough to rank, and cheap at any feature size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from oddeye.detectors.base import AnomalyModel, Batches

REFERENCE = 8192  # rows the density step compares (a random sample of larger banks)
DENSITY_SHARE = 0.035  # K of the density step, as a share of the reference sample
CORE_K = 5  # core rows a row's atypicality averages
AUTO_CUT = 2.0  # robust z-score beyond which ``auto`` sets a row aside
PROJECTED = 256  # dimensions distances are computed in, at most
MIN_ROWS = 20  # smaller banks are not screened (too few rows to tell typical from not)
SEED = 0  # the projection's and the reference sample's


@dataclass
class Screen:
    """What screening a bank found: each row's atypicality (robust z-score), and what a new row is
    measured against (the core rows, projected, and the z-score's centre and scale)."""

    z: torch.Tensor  # (n,) per bank row, on the CPU
    core: torch.Tensor  # (m, d) projected core rows
    projection: torch.Tensor | None  # (D, d), or None when D <= PROJECTED
    centre: float
    spread: float

    def measure(self, rows: torch.Tensor) -> torch.Tensor:
        """(B,) atypicality of new rows (held-out images) on the bank's scale, on the CPU."""
        d = _core_distance(_project(rows.to(self.core.device), self.projection), self.core, None)
        return ((d - self.centre) / self.spread).cpu()


def _project(rows: torch.Tensor, projection: torch.Tensor | None) -> torch.Tensor:
    rows = rows.float().flatten(1)
    return rows if projection is None else rows @ projection


def _core_distance(rows: torch.Tensor, core: torch.Tensor, self_index: torch.Tensor | None) -> torch.Tensor:
    """Mean distance of each row to its ``CORE_K`` nearest core rows; ``self_index[i]``: the core
    row that row ``i`` is (-1: none), never counted as its own neighbour."""
    k = max(1, min(CORE_K, core.shape[0] - 1))
    out = []
    for start in range(0, rows.shape[0], 2048):
        d = torch.cdist(rows[start : start + 2048], core)
        if self_index is not None:
            own = self_index[start : start + 2048]
            hit = own >= 0
            d[torch.nonzero(hit).flatten(), own[hit]] = float("inf")
        out.append(d.topk(k, 1, largest=False).values.mean(1))
    return torch.cat(out)


@torch.no_grad()
def screen(bank: torch.Tensor) -> Screen | None:
    """Atypicality of every row of ``bank`` (n, D) (None for a bank under ``MIN_ROWS`` rows)."""
    n = bank.shape[0]
    if n < MIN_ROWS:
        return None
    gen = torch.Generator().manual_seed(SEED)  # on the CPU: the same draw on every device
    device = bank.device
    dims = bank[0].numel()
    projection = None
    if dims > PROJECTED:
        projection = (torch.randn(dims, PROJECTED, generator=gen) / PROJECTED**0.5).to(device)
    rows = _project(bank, projection)
    sample = torch.randperm(n, generator=gen)[:REFERENCE].sort().values if n > REFERENCE else torch.arange(n)
    sample = sample.to(device)
    ref = rows[sample]
    k = max(2, min(len(sample) - 1, round(DENSITY_SHARE * len(sample))))
    density = []
    for start in range(0, len(sample), 2048):
        d = torch.cdist(ref[start : start + 2048], ref)
        own = torch.arange(d.shape[0], device=device)
        d[own, own + start] = float("inf")
        density.append(d.topk(k, 1, largest=False).values.mean(1))
    dens = torch.cat(density)
    core_rows = sample[dens <= dens.median()]
    position = torch.full((n,), -1, dtype=torch.long, device=device)
    position[core_rows] = torch.arange(len(core_rows), device=device)
    dist = _core_distance(rows, rows[core_rows], position)
    centre = float(dist.median())
    spread = float((dist - centre).abs().median() * 1.4826) or 1.0
    return Screen(((dist - centre) / spread).cpu(), rows[core_rows], projection, centre, spread)


def set_aside(z: torch.Tensor, share: float | None) -> np.ndarray:
    """(n,) bool: the rows to set aside by atypicality ``z``: those beyond ``AUTO_CUT`` (share
    None: ``auto``), or the ``share`` most atypical (0: none). Never every row."""
    z = z.float()
    n = len(z)
    if share is None:
        out = (z > AUTO_CUT).numpy()
    else:
        out = np.zeros(n, bool)
        count = int(round(share * n))
        if count:
            out[torch.argsort(z, descending=True, stable=True)[:count].numpy()] = True
    if out.all():
        out[:] = False
    return out


@dataclass
class Screening:
    """What screening a model's banks set aside: positions in the training pass and in the
    held-out pass, each with its atypicality, and the rule in words."""

    rule: str
    screened: int  # bank rows looked at
    positions: np.ndarray  # (s,) training-pass positions set aside
    scores: np.ndarray  # (s,) their atypicality
    heldout_positions: np.ndarray  # held-out-pass positions set aside
    heldout_scores: np.ndarray

    def kept_heldout(self, heldout: Callable[[], Iterator[torch.Tensor]]) -> Batches:
        """``heldout`` less the held-out images set aside."""
        gone = set(self.heldout_positions.tolist())
        try:
            count = len(heldout)  # type: ignore[arg-type]
        except TypeError:
            count = 0

        def gen() -> Iterator[torch.Tensor]:
            seen = 0
            for x in heldout():
                keep = [i for i in range(len(x)) if seen + i not in gone]
                seen += len(x)
                if len(keep) == len(x):
                    yield x
                elif keep:
                    yield x[torch.tensor(keep)]

        return Batches(gen, max(0, count - len(gone)))


def rule_text(share: float | None) -> str:
    if share is None:
        return f"auto: atypicality (robust z-score of the distance to typical images) above {AUTO_CUT:g}"
    return f"the {share:g} share of the training images with the highest atypicality"


BankFeatures = tuple[Any, Callable[[torch.Tensor], torch.Tensor]]  # (KNNBank, features of a batch)


@torch.no_grad()
def screen_banks(
    banks: list[BankFeatures], heldout: Callable[[], Iterator[torch.Tensor]], share: float | None
) -> Screening | None:
    """Screen ``banks`` together (banks holding the same images: their atypicality averaged), set
    aside the rows ``share`` asks for (None: ``auto``) from each, and find the held-out images the
    same rule sets aside. None when there is no bank to screen (or too few rows)."""
    groups: list[list[tuple[BankFeatures, Screen]]] = []
    for bank, features in banks:
        found = screen(bank.bank)
        if found is None or bank.positions is None:
            continue
        for group in groups:
            if np.array_equal(group[0][0][0].positions, bank.positions):
                group.append(((bank, features), found))
                break
        else:
            groups.append([((bank, features), found)])
    if not groups:
        return None
    positions, scores, cuts = [], [], []
    for group in groups:
        z = torch.stack([found.z for _, found in group]).mean(0)
        mask = set_aside(z, share)  # held-out images beyond the least atypical row set aside go too
        cuts.append(AUTO_CUT if share is None else float(z[mask].min()) if mask.any() else float("inf"))
        positions.append(group[0][0][0].positions[mask])
        scores.append(z.numpy()[mask])
        for (bank, _), _found in group:
            bank.drop(mask)
    held_positions, held_scores, seen = [], [], 0
    for x in heldout():
        gone = torch.zeros(len(x), dtype=torch.bool)
        worst = torch.full((len(x),), -float("inf"))
        for group, cut in zip(groups, cuts, strict=True):
            z = torch.stack([found.measure(bank.centred(feat(x))) for (bank, feat), found in group]).mean(0)
            gone |= z > cut
            worst = torch.maximum(worst, z)
        held_positions.append(torch.nonzero(gone).flatten().numpy() + seen)
        held_scores.append(worst[gone].numpy())
        seen += len(x)
    return Screening(
        rule_text(share),
        sum(len(group[0][1].z) for group in groups),
        np.concatenate(positions).astype(np.int64),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(held_positions or [np.zeros(0)]).astype(np.int64),
        np.concatenate(held_scores or [np.zeros(0)]).astype(np.float32),
    )


def screen_training(model: AnomalyModel, heldout: Callable[[], Iterator[torch.Tensor]]) -> Batches | None:
    """Set aside ``model``'s atypical bank images as its ``contamination`` asks (its ``banks()``
    screened together); ``model.screening_`` records what was set aside, and the held-out images
    kept come back (None when nothing was screened). Called by a model's ``fit_end`` once its
    banks are built."""
    share = model.contamination
    model.screening_ = None if share == 0 else screen_banks(model.banks(), heldout, share)
    return model.screening_.kept_heldout(heldout) if model.screening_ is not None else None
