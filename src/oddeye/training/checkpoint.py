"""Checkpoints: after every epoch, everything the loop needs to go on exactly as if never stopped.

One safetensors file (tensors only; loading never unpickles) written atomically (temp + rename): a
kill during the write leaves the previous checkpoint whole. Per training scope ("" for a detector,
"members.0." ... for an ensemble's members) it holds the weights, the best epoch's weights, the
Adam state, the torch and numpy random states at the epoch boundary, the epoch, the history and the
early-stopping counters; the JSON metadata also holds a fingerprint of the settings and data, so a
resume with different ones is refused. The learning rate is constant (no scheduler to save).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from oddeye.errors import OddeyeError, first_line
from oddeye.io import atomic_path
from oddeye.training.distributed import world

FORMAT = "oddeye-checkpoint/1"
CHECKPOINT = "checkpoint.safetensors"


@dataclass
class ScopeState:
    """The loop's state for one trained model, at an epoch boundary (or when it finished)."""

    epoch: int
    done: bool
    history: list[dict[str, Any]]
    best_epoch: int
    best_loss: float
    waited: int
    stopped_early: bool
    numpy_rng: dict[str, Any]
    optim_groups: list[dict[str, Any]] = field(default_factory=list)
    trimmed: dict[str, Any] | None = None  # the training images trimmed after a first pass, if yet


class Checkpoint:
    """The checkpoint file of one training run; ``save`` after each epoch, ``state`` to resume."""

    def __init__(self, path: str | Path, fingerprint: dict[str, Any], resume: bool = False) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.meta: dict[str, dict[str, Any]] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        if resume:
            self._load()

    # -- reading ------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            raise OddeyeError(f"{self.path}: expected a checkpoint to resume from, found nothing there")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                header = f.metadata() or {}
            tensors = load_file(str(self.path))
            if header.get("format") != FORMAT:
                raise ValueError(f"format {header.get('format')!r}")
            saved_fp = json.loads(header["fingerprint"])
            scopes = json.loads(header["scopes"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
            raise OddeyeError(
                f"{self.path}: expected an oddeye checkpoint, found unreadable data ({first_line(e)})"
            ) from None
        diff = _first_difference(saved_fp, self.fingerprint)
        if diff is not None:
            raise OddeyeError(
                f"{self.path}: expected the settings and data it was made with to resume, found {diff} "
                "changed (rerun with the original ones, or --force to start over)"
            )
        self.meta, self.tensors = scopes, tensors

    def state(self, scope: str) -> ScopeState | None:
        """The saved state of ``scope``, or None when it never finished an epoch."""
        if scope not in self.meta:
            return None
        try:
            return ScopeState(**self.meta[scope])
        except TypeError as e:
            raise OddeyeError(f"{self.path}: expected a complete checkpoint, found a problem: {e}") from None

    def restore(
        self, scope: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
    ) -> tuple[ScopeState, dict[str, torch.Tensor] | None] | None:
        """Load ``scope``'s weights, Adam state and torch random state; returns its loop state and
        the best epoch's weights, or None when there is nothing saved for it."""
        state = self.state(scope)
        if state is None:
            return None
        try:
            model.load_state_dict(self._group(f"{scope}model."))
            if optimizer is not None and not state.done:
                optimizer.load_state_dict(self._optimizer_state(scope, state))
            torch.set_rng_state(self.tensors[f"{scope}rng.torch"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise OddeyeError(
                f"{self.path}: expected weights matching this detector, found: {first_line(e)}"
            ) from None
        best = self._group(f"{scope}best.") or None
        return state, best

    def _group(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def _optimizer_state(self, scope: str, state: ScopeState) -> dict[str, Any]:
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in self._group(f"{scope}optim.").items():
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
        return {"state": per_param, "param_groups": state.optim_groups}

    # -- writing ------------------------------------------------------------------------------
    def save(
        self,
        scope: str,
        state: ScopeState,
        model: torch.nn.Module,
        best: dict[str, torch.Tensor] | None,
        optimizer: torch.optim.Optimizer | None,
    ) -> None:
        """Record ``scope`` at an epoch boundary (``state.done``: finished) and rewrite the file
        (rank 0 only, under torchrun: the ranks hold the same state)."""
        if not world().main:
            return
        for key in [k for k in self.tensors if k.startswith(scope) and _in_scope(k, scope)]:
            del self.tensors[key]
        self.tensors.update(_prefixed(f"{scope}model.", model.state_dict()))
        if best is not None and not state.done:
            self.tensors.update(_prefixed(f"{scope}best.", best))
        if optimizer is not None and not state.done:
            opt = optimizer.state_dict()
            state.optim_groups = opt["param_groups"]
            for index, values in opt["state"].items():
                self.tensors.update(_prefixed(f"{scope}optim.{index}.", values))
        self.tensors[f"{scope}rng.torch"] = torch.get_rng_state()
        self.meta[scope] = dataclasses.asdict(state)
        self._write()

    def _write(self) -> None:
        header = {
            "format": FORMAT,
            "fingerprint": json.dumps(self.fingerprint),
            "scopes": json.dumps(self.meta),
        }
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.tensors.items()}
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata=header)


def _in_scope(key: str, scope: str) -> bool:
    """True for ``scope``'s own keys, not a nested member's (``members.0.`` inside ``""``)."""
    rest = key[len(scope) :]
    return rest.split(".", 1)[0] in ("model", "best", "optim", "rng")


def _prefixed(prefix: str, tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v if isinstance(v, torch.Tensor) else torch.tensor(v) for k, v in tensors.items()}


def _first_difference(saved: Any, now: Any, path: str = "") -> str | None:
    """The first key whose value differs between two JSON-like values, as 'config.lr'."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            diff = _first_difference(saved.get(key), now.get(key), f"{path}.{key}" if path else key)
            if diff is not None:
                return diff
        return None
    return None if saved == now else (path or "the fingerprint")


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Source, count, shape and a hash of 64 evenly spaced images: cheap, and catches other data."""
    n = len(data)
    sample = np.unique(np.linspace(0, n - 1, min(n, 64)).astype(np.int64))
    digest = hashlib.sha256(np.ascontiguousarray(data.batch(sample).numpy()).tobytes()).hexdigest()
    return {"source": str(data.source), "n": n, "shape": list(data.shape), "sample_sha256": digest[:16]}
