"""Typed training configuration, saved with every model; its fields also make the train flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oddeye.errors import OddeyeError


def _flag(help_text: str, metavar: str | None = None, **more: Any) -> dict[str, Any]:
    """Field metadata for the train command's generated flag (``flag=False``: none)."""
    return {"help": help_text, "metavar": metavar, **more}


AUTO = "auto"


def contamination_share(text: str) -> float | None:
    """The ``contamination`` setting as a share of the training images to set aside: None for
    ``auto`` (a robust rule decides), 0.0 for none; OddeyeError for anything else."""
    if str(text).strip().lower() == AUTO:
        return None
    try:
        share = float(text)
    except (TypeError, ValueError):
        share = float("nan")
    if not 0.0 <= share < 0.5:
        raise OddeyeError(
            f"training setting contamination expects auto, 0 or a fraction below 0.5, found {text!r}"
        )
    return share


@dataclass(frozen=True)
class TrainConfig:
    """How a detector is trained and scored. Saved with every model.

    ``min_delta`` is relative: an epoch counts as an improvement when the held-out loss drops below
    ``best * (1 - min_delta)``; training stops after ``patience`` epochs without one, or at
    ``epochs``. The weights of the best held-out epoch are kept.
    """

    epochs: int | None = field(
        default=None, metadata=_flag("epoch cap (default: each detector's own; 50 for the ladder)", "N")
    )
    batch_size: int = field(default=128, metadata=_flag("training batch size", "N"))
    lr: float = field(default=1e-3, metadata=_flag("Adam learning rate", "X"))
    seed: int = field(default=0, metadata=_flag("random seed (same seed, data and device: same scores)", "N"))
    val_fraction: float = field(default=0.05, metadata=_flag("share of training images held out", "X"))
    max_heldout: int = field(
        default=2048,
        metadata=_flag(
            "held-out images at most, whatever val_fraction gives (0: no cap); every held-out image is "
            "scored by every part, and fusion scales and thresholds need no more",
            "N",
        ),
    )
    patience: int = field(
        default=5, metadata=_flag("epochs without held-out improvement before stopping", "N")
    )
    min_delta: float = field(
        default=1e-3, metadata=_flag("relative held-out loss improvement that counts", "X")
    )
    device: str = field(default="auto", metadata=_flag("auto (default), cpu, cuda[:N] or mps", "DEVICE"))
    precision: str = field(
        default="auto", metadata=_flag("numeric precision of training", choices=("auto", "fp32", "bf16"))
    )
    score_batch_size: int = field(default=1024, metadata=_flag("batch size when scoring", "N"))
    compile: bool = field(default=False, metadata=_flag("torch.compile the training step (GPUs, long runs)"))
    budget: float | None = field(
        default=None,
        metadata=_flag(
            "time budget for the whole training, e.g. 20m, 1h30m or 900 (seconds); the parts that "
            "train share it, each pacing itself to its share (default: epoch caps only)",
            "TIME",
            parse=True,
        ),
    )
    progress: bool = field(default=True, metadata={"flag": False})  # the CLI's --quiet
    threshold: str = field(
        default="fpr:0.01",
        metadata=_flag("the run's operating threshold: VALUE or fpr:A (default fpr:0.01)", "RULE"),
    )
    contamination: str = field(
        default=AUTO,
        metadata=_flag(
            "training images that may not be normal: auto (default: set aside the ones a robust rule "
            "finds unlike the rest), a FRACTION (set aside that share, the oddest), or 0 (keep all)",
            "auto|FRACTION|0",
        ),
    )
    trim: bool = field(
        default=True,
        metadata=_flag(
            "detectors that train: after the first tenth of their epochs, set aside the training images "
            "the contamination rule finds atypical by their own scores, and train on the rest (runs "
            "before format 6: off)"
        ),
    )
    trim_members: bool = field(
        default=True,
        metadata=_flag(
            "with trim: an ensemble's members that train trim their training set too, each by its own "
            "scores, and the held-out images they set aside leave the ensemble's held-out set (runs "
            "before format 7: off)"
        ),
    )

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs is None or self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "val_fraction": 0.0 <= self.val_fraction < 1.0,
            "max_heldout": self.max_heldout >= 0,
            "patience": self.patience >= 1,
            "min_delta": 0.0 <= self.min_delta < 1.0,
            "precision": self.precision in ("auto", "fp32", "bf16"),
            "score_batch_size": self.score_batch_size >= 1,
            "budget": self.budget is None or self.budget > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        contamination_share(self.contamination)
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

    @classmethod
    def field_type(cls, name: str) -> type:
        """int, float, str or bool: the type a setting's values are coerced to."""
        annotation = {f.name: f.type for f in dataclasses.fields(cls)}[name]
        return {"int": int, "float": float, "str": str, "bool": bool}[str(annotation).removesuffix(" | None")]

    @classmethod
    def parses(cls, name: str) -> bool:
        """Whether ``name`` takes a text form parsed to a number (budget: '20m')."""
        return bool({f.name: f.metadata for f in dataclasses.fields(cls)}[name].get("parse"))

    @classmethod
    def optional(cls, name: str) -> bool:
        """Whether ``name`` may be None (``epochs``: the detector's own cap)."""
        annotation = {f.name: f.type for f in dataclasses.fields(cls)}[name]
        return str(annotation).endswith("| None")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied; unknown keys raise an error naming the valid ones."""
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise OddeyeError(
                f"unknown training setting {unknown[0]!r}; expected one of: {', '.join(self.fields())}"
            )
        return dataclasses.replace(self, **{k: coerce(k, v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Exactly the settings in ``data``, which must name every field (a saved run's)."""
        missing = [k for k in cls.fields() if k not in data]
        if missing:
            raise ValueError(f"the training settings have no {missing[0]!r}")
        return cls().replace(**data)


def parse_duration(text: str) -> float:
    """Seconds from '900', '90s', '20m', '1.5h' or '1h30m'; ValueError otherwise."""
    rest, total, matched = text.strip().lower(), 0.0, False
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        number, sep, tail = rest.partition(unit)
        if sep:
            total, rest, matched = total + float(number) * scale, tail, True
    if rest.strip():
        if matched:
            raise ValueError(text)
        total = float(rest)
    return total


def coerce(key: str, value: Any) -> Any:
    """``value`` as the type of setting ``key`` ('0.2' -> 0.2 for lr, '20m' -> 1200.0 for budget);
    a clear error otherwise."""
    kind = TrainConfig.field_type(key)
    if isinstance(value, str) and TrainConfig.parses(key):
        try:
            value = parse_duration(value)
        except ValueError:
            expected = "a time like 20m, 1h30m or 900 (seconds)"
            raise OddeyeError(f"training setting {key} expects {expected}, found {value!r}") from None
    if value is None:
        if TrainConfig.optional(key):
            return None
        raise OddeyeError(f"training setting {key} expects {kind.__name__}, found None")
    try:
        if isinstance(value, bool) != (kind is bool):
            raise ValueError
        converted = kind(value)
        if kind is int and float(value) != converted:
            raise ValueError
        return converted
    except (TypeError, ValueError):
        raise OddeyeError(f"training setting {key} expects {kind.__name__}, found {value!r}") from None


def parse_setting(text: str) -> tuple[str, Any]:
    """'key=value' with a JSON value ('channels=[16,32,64]', 'lr=0.2'), or else a plain string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, found {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


# help of the options the commands share (oddeye.cli, oddeye.review.server)
SIZE_HELP = "resize a folder's image files to HxW (an array file must already be HxW)"
DEVICE_HELP = "auto (default), cpu, cuda[:N] or mps"
QUIET_HELP = "no progress (bars or lines)"


def parse_dims(text: str, n: tuple[int, ...] = (2, 3)) -> tuple[int, ...]:
    """'64x64x3' -> (64, 64, 3); '64x64' -> (64, 64)."""
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in n or min(dims, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes like 64x64 or 64x64x3, found {text!r}")
    return dims


def setting_arg(text: str) -> tuple[str, Any]:
    """:func:`parse_setting` as an argparse type (``--set KEY=VALUE``)."""
    try:
        return parse_setting(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_set_option(parser: argparse.ArgumentParser, dest: str, help_text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option (settings and detector parameters)."""
    parser.add_argument(
        "--set", dest=dest, type=setting_arg, action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


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
    if "detector" in data and not isinstance(data["detector"], str):
        raise OddeyeError(f'{path}: expected "detector" to be a name, found {data["detector"]!r}')
    return data
