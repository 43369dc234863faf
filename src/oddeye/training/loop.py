"""The one training loop every detector uses.

Batches are gathered by index from the raw (possibly memory-mapped) array, moved to the device as
uint8 and normalised there; a held-out slice of the normal images measures the loss each epoch;
training stops when that loss has converged (``patience``, relative ``min_delta``) or at the cap,
and the best weights are restored.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oddeye.config import TrainConfig, contamination_share
from oddeye.data.imageset import ImageSet, batch_images
from oddeye.detectors.base import AnomalyModel, Batches
from oddeye.detectors.memory import SKETCH_SIDE, coreset, layout_sketch
from oddeye.detectors.screening import AUTO_CUT, Screening, set_aside
from oddeye.progress import EpochProgress, Task, clock, say
from oddeye.training.budget import Budget, Pacer
from oddeye.training.checkpoint import Checkpoint, ScopeState
from oddeye.training.device import autocast, choose_precision
from oddeye.training.distributed import all_sum, shard, world, wrap
from oddeye.training.feed import Feed


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    images_per_s: float
    improved: bool


@dataclass
class SetAside:
    """Training images set aside as not normal (``contamination``): their indices in the training
    set, their atypicality, whether each was a bank image or a held-out one, and the rule."""

    rule: str
    screened: int  # bank images looked at
    indices: np.ndarray  # (s,) int64, ascending
    scores: np.ndarray  # (s,) atypicality (robust z-score), higher = odder
    heldout: np.ndarray  # (s,) bool: a held-out image (not in a bank)


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    val_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    members: list[tuple[str, TrainResult]] = field(default_factory=list)
    budget_reached: bool = False
    set_aside: SetAside | None = None  # training images screening set aside (contamination)

    def member_histories(self) -> dict[str, list[EpochRecord]]:
        """Per-epoch histories of the members that trained (ensembles), by member label."""
        out: dict[str, list[EpochRecord]] = {}
        for label, res in self.members:
            key = label if label not in out else f"{label}#{len(out) + 1}"
            if res.history:
                out[key] = res.history
        return out


def part_name(model: AnomalyModel, index: int | None = None, of: int = 0) -> str:
    """How progress lines and a budget's plan name a model (an ensemble member with its place)."""
    label = model.label or type(model).__name__
    return label if index is None else f"{label} (member {index + 1}/{of})"


def trained_parts(model: AnomalyModel) -> list[str]:
    """The names of the parts that train, in training order (members first, as the loop goes)."""
    members = model.members()
    names = [part_name(m, i, len(members)) for i, m in enumerate(members) if m.trainable]
    return names + ([part_name(model)] if model.trainable else [])


def split_indices(
    n: int, val_fraction: float, rng: np.random.Generator, max_heldout: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) index arrays: ``val_fraction`` of the images held out, at most
    ``max_heldout`` (0: no cap); the held-out slice is empty when there is too little data."""
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction)) if n >= 4 else 0
    n_val = min(n_val, max_heldout) if max_heldout > 0 else n_val
    n_val = min(max(n_val, 1 if val_fraction > 0 and n >= 4 else 0), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_model(
    model: AnomalyModel,
    data: ImageSet,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    ckpt: Checkpoint | None = None,
    scope: str = "",
    name: str = "",
    budget: Budget | None = None,
    covers: dict[tuple[str, int], np.ndarray] | None = None,
    trim_share: float | None = 0.0,
) -> TrainResult:
    """Train ``model`` in place on ``data`` for at most ``model.epoch_cap`` epochs; returns the
    per-epoch history and the held-out split. ``name`` labels its progress (default its label).
    ``budget``: the fit's time budget; a trained part paces itself to its share of it.
    ``trim_share``: an ensemble member's trimming rule (its ensemble's ``contamination``, or 0
    for none); the model trained itself trims by the config's ``contamination``. A member that
    trims trains on the images it kept; the ensemble then leaves out of its held-out images
    (fusion scales, threshold) the held-out images any member set aside, and records them all.

    With ``ckpt``, the state is saved after every epoch and, where the checkpoint already holds
    this ``scope``, training continues from it exactly (same weights as an uninterrupted run).
    """
    name = name or part_name(model)
    covers = {} if covers is None else covers  # the members' banks share their coresets
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    train_idx, val_idx = split_indices(len(data), config.val_fraction, rng, config.max_heldout)
    optimizer = prepare(model, device, config.lr)

    shown = config.progress and world().main  # under torchrun, rank 0 alone shows progress
    step = batch_images(config.score_batch_size, data.shape)

    def batches_of(indices: np.ndarray, which: str, whole: bool = True) -> Batches:
        def gen() -> Iterator[torch.Tensor]:
            model.eval()
            desc = f"{name}: pass over the {which} images"
            with Task(desc, len(indices), "images", shown, leave=False, final_line=False) as bar:
                for i in range(0, len(indices), step):
                    idx = indices[i : i + step]
                    yield feed(idx)  # fp32, one pass
                    data.release(idx)  # in order: a bounded resident set
                    bar.update(len(idx))

        def cover(m: int) -> np.ndarray:  # the same for every bank of this fit: computed once
            if (which, m) not in covers:
                covers[which, m] = coreset(torch.cat(list(layouts())), m)
            return covers[which, m]

        def layouts() -> Iterator[torch.Tensor]:  # image_sketch, pooled from the stored images
            desc = f"{name}: layouts of the {which} images"
            with Task(desc, len(indices), "images", shown, leave=False, final_line=False) as bar:
                for i in range(0, len(indices), step):
                    idx = indices[i : i + step]
                    pooled = F.adaptive_avg_pool2d(feed.raw(idx).to(feed.device).float(), SKETCH_SIDE)
                    yield layout_sketch(data.normalisation.apply(pooled)).cpu()
                    data.release(idx)
                    bar.update(len(idx))

        def subset(positions: np.ndarray) -> Batches:
            return batches_of(indices[positions], which, whole=False)

        return Batches(gen, len(indices), subset, cover if whole else None)

    train_batches, heldout_batches = batches_of(train_idx, "training"), batches_of(val_idx, "held-out")
    result = TrainResult(val_indices=val_idx)
    if not scope:  # the model trained, not an ensemble's member: its banks are screened together
        model.contamination = contamination_share(config.contamination)
        trim_share = model.contamination
    members = model.members()
    member_share = model.contamination if config.trim_members else 0.0
    for i, member in enumerate(members):  # ensembles: each member through this loop, same split
        member_precision = choose_precision(config.precision, device, member.cpu_bf16)
        member_name = part_name(member, i, len(members))
        member_result = fit_model(
            member,
            data,
            config,
            device,
            member_precision,
            ckpt,
            f"{scope}members.{i}.",
            member_name,
            budget,
            covers,
            member_share,
        )
        result.members.append((member.label, member_result))
    trims = [r.set_aside for _, r in result.members if r.set_aside is not None]
    if trims:  # members' trims: their held-out images leave the ensemble's held-out set too
        result.set_aside = _joined(*trims)
        val_idx = val_idx[~np.isin(val_idx, result.set_aside.indices[result.set_aside.heldout])]
        heldout_batches = batches_of(val_idx, "held-out")
        result.val_indices = val_idx
    feed = Feed(data, device, model.channels_last)  # after the members: one resident copy at a time
    saved = ckpt.restore(scope, model, optimizer) if ckpt is not None and model.trainable else None
    state = saved[0] if saved is not None else None
    if state is not None and state.done:  # finished before the interruption: its final weights
        _restore_result(result, state)
        if state.trimmed is not None:
            done = Trimmed.from_dict(state.trimmed)
            result.set_aside, result.val_indices = done.set_aside(), done.kept(train_idx, val_idx)[1]
        model.eval()
        return result
    max_epochs = model.epoch_cap if model.trainable else 0
    trim_after = trim_epoch(model, config, len(train_idx), trim_share)
    trimmed: Trimmed | None = None
    best_loss, best_state, waited, first = float("inf"), None, 0, 1
    if state is None:
        with torch.no_grad():
            model.fit_start(train_batches)
    else:
        rng.bit_generator.state = state.numpy_rng
        best_loss, best_state, waited, first = state.best_loss, saved[1], state.waited, state.epoch + 1
        _restore_result(result, state)
        if state.trimmed is not None:  # trimmed before the interruption: the same images stay out
            trimmed = Trimmed.from_dict(state.trimmed)
            train_idx, val_idx = trimmed.kept(train_idx, val_idx)
        if state.stopped_early:
            first = max_epochs + 1
    bar = EpochProgress(name, first, max_epochs, shown) if model.trainable and first <= max_epochs else None
    pacer = budget.pacer(name, config.batch_size) if budget is not None and bar is not None else None
    engine = wrap(model, device) if model.trainable else None  # DDP under torchrun
    if engine is not None and config.compile:
        engine = torch.compile(engine)
    for epoch in range(first, max_epochs + 1):
        if trim_after and epoch == trim_after + 1 and trimmed is None:
            trimmed = trim_training(
                model, feed, (train_idx, val_idx), config, device, precision, trim_after, name, trim_share
            )
            say(f"{name}: {trimmed.describe()}", shown)
            train_idx, val_idx = trimmed.kept(train_idx, val_idx)
            best_loss, best_state, waited = float("inf"), None, 0  # a new held-out set: a new best
        start = time.perf_counter()
        desc = f"{name} epoch {epoch}/{max_epochs}"
        train_loss, trained = _train_epoch(
            engine, feed, train_idx, optimizer, config, device, precision, rng, desc, pacer
        )
        seconds = time.perf_counter() - start
        val_loss = (
            evaluate_loss(model, feed, val_idx, config, device, precision) if len(val_idx) else train_loss
        )
        improved = val_loss < best_loss * (1.0 - config.min_delta)
        if improved:
            best_loss, best_state, waited = val_loss, copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        else:
            waited += 1
        result.history.append(EpochRecord(epoch, train_loss, val_loss, seconds, trained / seconds, improved))
        if bar is not None:
            bar.epoch(epoch, train_loss, val_loss, trained / seconds, result.best_epoch)
        result.stopped_early = waited >= config.patience
        if pacer is not None:
            pacer.epoch_end(time.perf_counter() - start - seconds)
            result.budget_reached = pacer.done and not result.stopped_early
        if ckpt is not None:
            loop = _scope_state(result, epoch, False, best_loss, waited, rng, trimmed)
            ckpt.save(scope, loop, model, best_state, optimizer)
        if result.stopped_early or result.budget_reached:
            break
    if pacer is not None:
        pacer.finish()
        say(f"{name}: {pacer.describe()}", shown)
    if bar is not None:
        bar.close(_summary(result))
    if best_state is not None:
        model.load_state_dict(best_state)
    if trimmed is not None:  # the banks and scales after training see the images kept only
        train_batches, heldout_batches = batches_of(train_idx, "training"), batches_of(val_idx, "held-out")
        result.set_aside, result.val_indices = trimmed.set_aside(), val_idx
    started = time.perf_counter()
    with torch.no_grad():
        model.fit_end(train_batches, heldout_batches)
    if model.screening_ is not None:
        screened, result.val_indices = _set_aside(model.screening_, train_idx, val_idx)
        result.set_aside = screened if result.set_aside is None else _joined(result.set_aside, screened)
        say(f"{name}: {describe_set_aside(screened)}", shown)
    if model.fit_end_work():
        say(f"{name}: {model.fit_end_work()} built in {clock(time.perf_counter() - started)}", shown)
    model.eval()
    if ckpt is not None and model.trainable:
        epoch = result.history[-1].epoch if result.history else 0
        ckpt.save(
            scope, _scope_state(result, epoch, True, best_loss, waited, rng, trimmed), model, None, None
        )
    return result


def _set_aside(
    screening: Screening, train_idx: np.ndarray, val_idx: np.ndarray
) -> tuple[SetAside, np.ndarray]:
    """What screening set aside, as training-set indices, and the held-out indices kept."""
    found = set_aside_record(
        screening.rule,
        screening.screened,
        (train_idx[screening.positions], screening.scores),
        (val_idx[screening.heldout_positions], screening.heldout_scores),
    )
    return found, np.delete(val_idx, screening.heldout_positions)


def set_aside_record(
    rule: str, screened: int, training: tuple[np.ndarray, np.ndarray], heldout: tuple[np.ndarray, np.ndarray]
) -> SetAside:
    """A :class:`SetAside` from (indices, atypicality) of the training and the held-out images."""
    indices = np.concatenate([training[0], heldout[0]]).astype(np.int64)
    scores = np.concatenate([training[1], heldout[1]]).astype(np.float32)
    held = np.concatenate([np.zeros(len(training[0]), bool), np.ones(len(heldout[0]), bool)])
    order = np.argsort(indices, kind="stable")
    return SetAside(rule, screened, indices[order], scores[order], held[order])


def _joined(first: SetAside, *then: SetAside) -> SetAside:
    """Rounds of setting aside (trimmed after a first pass, by each member that trains, then a
    bank's screening) as one; an image set aside twice is listed once, with its first round's score."""
    rounds = (first, *then)
    indices, scores, held = (
        np.concatenate([getattr(r, f) for r in rounds]) for f in ("indices", "scores", "heldout")
    )
    _, first_seen = np.unique(indices, return_index=True)
    indices, scores, held = indices[first_seen], scores[first_seen], held[first_seen]
    training, heldout = (indices[~held], scores[~held]), (indices[held], scores[held])
    rule = "; then ".join(r.rule for r in rounds)
    return set_aside_record(rule, first.screened, training, heldout)


TRIM_AFTER_SHARE = 0.1  # a trained model's training set is trimmed after this share of its epoch cap,
TRIM_MIN_STEPS = 100  # and after at least this many optimisation steps (small sets: more epochs),
TRIM_LATEST = 0.5  # but never later than this share of the cap


def trim_epoch(model: AnomalyModel, config: TrainConfig, n_train: int, share: float | None) -> int:
    """The epoch after which ``model``'s training set is trimmed (0: never), for a model that
    trains, with ``trim`` on and a contamination rule ``share`` (None: ``auto``; 0: none): after
    a tenth of its epoch cap and at least ``TRIM_MIN_STEPS`` steps (a model that has barely
    trained ranks its images by chance), at the latest after half the cap; a cap of one epoch
    leaves nothing to train after trimming."""
    if not (model.trainable and config.trim and share != 0) or n_train < 1:
        return 0
    cap = model.epoch_cap
    steps = -(-n_train // config.batch_size)  # per epoch
    after = max(1, round(TRIM_AFTER_SHARE * cap), -(-TRIM_MIN_STEPS // steps))
    return min(after, int(TRIM_LATEST * cap))


@dataclass
class Trimmed:
    """The training and held-out images trimmed after a first pass (indices into the training
    set, with their robust z-scores), the epoch and the rule."""

    epoch: int
    rule: str
    screened: int
    indices: np.ndarray
    scores: np.ndarray
    heldout_indices: np.ndarray
    heldout_scores: np.ndarray

    def kept(self, train_idx: np.ndarray, val_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return train_idx[~np.isin(train_idx, self.indices)], val_idx[~np.isin(val_idx, self.heldout_indices)]

    def describe(self) -> str:
        return f"after epoch {self.epoch}, {describe_set_aside(self.set_aside(), 'training')}"

    def set_aside(self) -> SetAside:
        training, heldout = (self.indices, self.scores), (self.heldout_indices, self.heldout_scores)
        return set_aside_record(self.rule, self.screened, training, heldout)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "rule": self.rule,
            "screened": self.screened,
            "indices": self.indices.tolist(),
            "scores": self.scores.tolist(),
            "heldout_indices": self.heldout_indices.tolist(),
            "heldout_scores": self.heldout_scores.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trimmed:
        return cls(
            int(d["epoch"]),
            str(d["rule"]),
            int(d["screened"]),
            np.asarray(d["indices"], np.int64),
            np.asarray(d["scores"], np.float32),
            np.asarray(d["heldout_indices"], np.int64),
            np.asarray(d["heldout_scores"], np.float32),
        )


@torch.no_grad()
def pass_scores(
    model: AnomalyModel,
    feed: Feed,
    indices: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    desc: str = "scoring",
) -> np.ndarray:
    """(n,) float64 :meth:`~AnomalyModel.pass_scores` of the images ``indices``, in order, a batch at
    a time, with progress (every rank scores them all under torchrun: the same weights give the
    same scores)."""
    model.eval()
    out = []
    step = batch_images(config.score_batch_size, feed.data.shape)
    shown = config.progress and world().main
    with Task(desc, len(indices), "images", shown, leave=False, final_line=False) as bar:
        for i in range(0, len(indices), step):
            idx = indices[i : i + step]
            with autocast(device, precision):
                out.append(model.pass_scores(feed(idx)).float().cpu())
            feed.data.release(idx)
            bar.update(len(idx))
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def trim_training(
    model: AnomalyModel,
    feed: Feed,
    split: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    device: torch.device,
    precision: str,
    epoch: int,
    name: str = "",
    share: float | None = None,
) -> Trimmed:
    """The training images the contamination rule finds atypical by the scores of ``model`` as
    trained for ``epoch`` epochs: robust z-scores (less the median, over 1.4826 x the median
    absolute deviation of the training images' scores), beyond 2 (``auto``) or the given share
    of the oddest; held-out images beyond the same z (the least of those set aside, for a share).
    The rule names ``name`` (which part trimmed)."""
    train_idx, val_idx = split
    train = pass_scores(
        model, feed, train_idx, config, device, precision, f"{name}: trimming, training images"
    )
    held = pass_scores(model, feed, val_idx, config, device, precision, f"{name}: trimming, held-out images")
    centre = float(np.median(train)) if len(train) else 0.0
    spread = float(1.4826 * np.median(np.abs(train - centre))) if len(train) else 0.0
    spread = spread if spread > 0 and np.isfinite(spread) else 1.0
    z, zh = (train - centre) / spread, (held - centre) / spread
    finite = np.nan_to_num(z, nan=-np.inf)  # a score that is not a number sets nothing aside
    mask = set_aside(torch.from_numpy(finite), share) if len(z) else np.zeros(0, bool)
    cut = AUTO_CUT if share is None else float(finite[mask].min()) if mask.any() else float("inf")
    gone = np.nan_to_num(zh, nan=-np.inf) > cut
    which = (
        f"auto: robust z-score above {AUTO_CUT:g}" if share is None else f"the {share:g} share, the oddest"
    )
    rule = f"{which}, of {name or 'the model'}'s own scores after epoch {epoch}"
    return Trimmed(
        epoch,
        rule,
        len(train_idx),
        train_idx[mask],
        z[mask].astype(np.float32),
        val_idx[gone],
        zh[gone].astype(np.float32),
    )


def describe_set_aside(s: SetAside, kind: str = "bank") -> str:
    """One progress line's account of ``s``: its ``kind`` of images (bank or training) and the
    held-out ones set aside, and the rule."""
    held = int(s.heldout.sum())
    return (
        f"set aside {len(s.indices) - held} of {s.screened} {kind} images and {held} held-out images "
        f"as unlike the rest ({s.rule})"
    )


def _summary(result: TrainResult) -> str:
    stop = "converged (early stop)" if result.stopped_early else "reached the epoch cap"
    stop = "used its share of the budget" if result.budget_reached else stop
    return f"{len(result.history)} epochs, {stop}, kept epoch {result.best_epoch}"


def _scope_state(
    result: TrainResult,
    epoch: int,
    done: bool,
    best_loss: float,
    waited: int,
    rng: np.random.Generator,
    trimmed: Trimmed | None = None,
) -> ScopeState:
    return ScopeState(
        trimmed=trimmed.to_dict() if trimmed is not None else None,
        epoch=epoch,
        done=done,
        history=[dataclasses.asdict(r) for r in result.history],
        best_epoch=result.best_epoch,
        best_loss=best_loss,
        waited=waited,
        stopped_early=result.stopped_early,
        numpy_rng=rng.bit_generator.state,
    )


def _restore_result(result: TrainResult, state: ScopeState) -> None:
    result.history = [EpochRecord(**r) for r in state.history]
    result.best_epoch, result.stopped_early = state.best_epoch, state.stopped_early


def _train_epoch(
    engine: torch.nn.Module,
    feed: Feed,
    train_idx: np.ndarray,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    rng: np.random.Generator,
    desc: str = "batches",
    pacer: Pacer | None = None,
) -> tuple[float, int]:
    """One epoch (or its part, when ``pacer`` says the budget's share is used): the mean training
    loss and the number of images trained on."""
    engine.train()
    w = world()
    total, count, trained = 0.0, 0, 0
    batches = epoch_batches(train_idx, config.batch_size, rng, min_size=max(2, w.size))
    shards = [shard(idx, w) for idx in batches]  # the whole batches without torchrun
    weights = [len(part) * w.size / len(idx) for part, idx in zip(shards, batches, strict=True)]
    shown = config.progress and w.main
    with Task(desc, len(train_idx), "images", shown, leave=False, final_line=False) as bar:
        for (mine, x), weight, idx in zip(feed.stream(shards), weights, batches, strict=True):
            loss = train_step(engine, x, optimizer, device, precision, weight)
            total += loss * len(mine)
            count += len(mine)
            bar.update(len(idx))
            bar.set_postfix(loss=f"{loss:.4g}")
            trained += len(idx)
            if pacer is not None:
                pacer.step(len(idx))
                if pacer.done:
                    break
    total, count = all_sum([total, count], device)
    return total / count, trained


def epoch_batches(
    train_idx: np.ndarray, batch_size: int, rng: np.random.Generator, min_size: int = 2
) -> list[np.ndarray]:
    """One epoch's shuffled index batches, each sorted for sequential memory-map reads.

    A last batch smaller than ``min_size`` joins the one before: a batch of one breaks
    BatchNorm, and under torchrun every rank needs at least one image of every batch.
    """
    order = rng.permutation(train_idx)
    batches = [np.sort(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_size:
        batches[-2] = np.sort(np.concatenate(batches[-2:]))
        batches.pop()
    return batches


def train_step(
    engine: torch.nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    precision: str,
    weight: float = 1.0,
) -> float:
    """One optimisation step on the normalised batch ``x`` (from a :class:`Feed`); returns its
    mean loss.

    ``engine``: the model's loss as a module (:func:`~oddeye.training.distributed.wrap`), DDP
    under torchrun. ``weight`` (this rank's share of the global batch x the number of ranks)
    makes DDP's average of the ranks' gradients the gradient of the global batch's mean loss.
    """
    with autocast(device, precision):
        loss = engine(x)
    optimizer.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    optimizer.step()
    return loss.item()


def prepare(model: AnomalyModel, device: torch.device, lr: float) -> torch.optim.Optimizer | None:
    """Move ``model`` to ``device`` in its preferred memory format; its Adam optimizer, if trainable."""
    model.to(device)
    if model.channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.optim.Adam(model.parameters(), lr=lr) if model.trainable else None


@torch.no_grad()
def evaluate_loss(
    model: AnomalyModel,
    feed: Feed,
    indices: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    precision: str,
) -> float:
    """Mean training loss over ``indices`` in eval mode (the held-out convergence signal); under
    torchrun each rank takes a shard and the sums are shared, so every rank gets the same value."""
    model.eval()
    mine = shard(indices)
    total = 0.0
    step = batch_images(config.score_batch_size, feed.data.shape)
    for i in range(0, len(mine), step):
        idx = mine[i : i + step]
        x = feed(idx)
        with autocast(device, precision):
            total += model.loss(x).item() * len(idx)
    total, count = all_sum([total, len(mine)], device)
    return total / count
