"""Typed training configuration: defaults -> JSON file -> explicit overrides; unknown keys rejected."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oddeye.errors import OddeyeError


@dataclass(frozen=True)
class TrainConfig:
    """How a detector is trained and scored. Saved with every model.

    ``min_delta`` is relative: an epoch counts as an improvement when the held-out loss drops below
    ``best * (1 - min_delta)``; training stops after ``patience`` epochs without one, or at
    ``epochs``. The weights of the best held-out epoch are kept.
    """

    epochs: int | None = None  # None: the detector's own cap (50 for the ladder)
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.05
    patience: int = 5
    min_delta: float = 1e-3
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | bf16
    score_batch_size: int = 1024
    compile: bool = False  # torch.compile the training step (pays off on GPUs for long runs)
    progress: bool = True
    threshold: str = "fpr:0.01"  # the run's operating threshold: VALUE or fpr:A (see thresholds.py)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs is None or self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "val_fraction": 0.0 <= self.val_fraction < 1.0,
            "patience": self.patience >= 1,
            "min_delta": 0.0 <= self.min_delta < 1.0,
            "precision": self.precision in ("auto", "fp32", "bf16"),
            "score_batch_size": self.score_batch_size >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise OddeyeError(f"invalid training setting {bad[0]}={getattr(self, bad[0])!r}")
        from oddeye.thresholds import parse_rule

        if parse_rule(self.threshold)[0] not in ("value", "fpr"):
            raise OddeyeError(
                f"threshold={self.threshold!r} at training time: expected VALUE or fpr:A "
                "(top:Q and f1 depend on the images scored; give them to 'oddeye score --threshold')"
            )

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied; unknown keys raise an error naming the valid ones."""
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise OddeyeError(
                f"unknown training setting {unknown[0]!r}; expected one of: {', '.join(self.fields())}"
            )
        types = {f.name: f.type for f in dataclasses.fields(self)}
        coerced = {k: _coerce(k, v, types[k]) for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    kind = {"int": int, "float": float, "str": str, "bool": bool}[str(type_name).removesuffix(" | None")]
    try:
        if isinstance(value, bool) != (kind is bool):
            raise ValueError
        converted = kind(value)
        if kind is int and float(value) != converted:
            raise ValueError
        return converted
    except (TypeError, ValueError):
        raise OddeyeError(f"training setting {key} expects {kind.__name__}, found {value!r}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON object of settings: training keys, plus optional ``detector`` and ``params``."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OddeyeError(f"{path}: expected a JSON config file, found nothing there") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OddeyeError(f"{path}: expected a JSON config file, found unreadable data ({e})") from None
    if not isinstance(data, dict):
        raise OddeyeError(f"{path}: expected a JSON object, found {type(data).__name__}")
    allowed = {"detector", "params", *TrainConfig.fields()}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise OddeyeError(f"{path}: expected keys among {', '.join(sorted(allowed))}, found {unknown[0]!r}")
    if not isinstance(data.get("params", {}), dict):
        raise OddeyeError(f'{path}: expected "params" to be an object, found {data["params"]!r}')
    return data
