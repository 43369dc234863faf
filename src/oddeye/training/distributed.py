"""Many processes, one per device, through PyTorch's own engine: ``torchrun`` and DDP.

``torchrun --nproc_per_node N -m oddeye train ...`` starts N copies of the CLI with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`session` joins them into one process group (NCCL on
CUDA, gloo on CPU) and every other part asks :func:`world` where it stands. What each part does:

- Training: every rank builds the same split and the same shuffled global batches from the same
  seed and takes its own contiguous shard of each batch (:func:`shard`); DistributedDataParallel
  averages the gradients, with each rank's loss weighted by its share of the batch, so a step is
  the step one process takes on the whole global batch. Held-out and training losses are summed
  over ranks, so early stopping is decided on the same number everywhere.
- BatchNorm: SyncBatchNorm on CUDA (statistics over the global batch). gloo has no SyncBatchNorm,
  so on CPU each rank normalises with its shard's statistics and DDP copies rank 0's running
  statistics to the others at every step: the documented choice for CPU runs.
- Scoring: each rank scores a contiguous shard and rank 0 gathers them in the original order.
- Files: only rank 0 writes the run folder, checkpoints, CSVs and reports, and only it prints.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from oddeye.errors import OddeyeError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)  # a rank waiting this long for the others gives up


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: rank 0 of 1 without torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def session(device: str | None = None) -> Iterator[World]:
    """Join the process group torchrun set up (NCCL for CUDA, gloo for CPU), for the block.

    ``device``: the user's --device; ``cpu`` forces gloo even where CUDA is present.
    """
    if not launched() or world().active:
        yield world()
        return
    if not dist.is_available():
        raise OddeyeError("started by torchrun, but this PyTorch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device or "auto") not in ("cpu", "mps")
    if cuda:
        if local >= (n := torch.cuda.device_count()):
            raise OddeyeError(f"torchrun started local rank {local}, but only {n} GPU(s) are visible")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """``cuda`` means this rank's own GPU when several ranks share a machine."""
    w = world()
    if w.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", w.local_rank)
    return device


def shard(indices: np.ndarray, w: World | None = None) -> np.ndarray:
    """This rank's contiguous part of ``indices`` (sizes differ by at most one)."""
    w = w or world()
    if not w.active:
        return indices
    return np.array_split(indices, w.size)[w.rank]


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (float64; the same result on every rank)."""
    if not world().active:
        return values
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_arrays(part: np.ndarray) -> np.ndarray:
    """Every rank's ``part`` concatenated in rank order, on every rank."""
    if not world().active:
        return part
    parts: list[Any] = [None] * world().size
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; an OddeyeError there is raised on every rank, so no rank is left
    waiting for a collective the others never reach. Other ranks get None."""
    w = world()
    if not w.active:
        return fn()
    result, error = None, None
    if w.main:
        try:
            result = fn()
        except OddeyeError as e:
            error = e
    box: list[Any] = [str(error) if error is not None else None]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] is not None:
        raise RelayedError(box[0])
    return result


class RelayedError(OddeyeError):
    """Rank 0's error, raised on the other ranks too; rank 0 alone prints it."""


def barrier() -> None:
    if world().active:
        dist.barrier()


class LossOf(nn.Module):
    """``model.loss`` as ``forward``: DDP synchronises gradients through a module's forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model.loss`` behind DistributedDataParallel (SyncBatchNorm first on CUDA); without
    torchrun, the plain loss."""
    if not world().active:
        return LossOf(model)
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    # every registered detector gives every parameter a gradient in every step (checked for all
    # of them with 2 gloo ranks), so DDP need not search the graph for unused ones
    return nn.parallel.DistributedDataParallel(LossOf(model), device_ids=ids)
