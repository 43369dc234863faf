"""Explicit detector registry: ``@register`` on a model class, ``get_spec`` by name, typo-friendly
errors, and the build record that rebuilds a model exactly, whatever the code's defaults are now."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from oddeye.detectors.params import Params, jsonable
from oddeye.errors import OddeyeError

M = TypeVar("M", bound=type)


@dataclass(frozen=True)
class Build:
    """How one model was built: the detector, every constructor parameter with its value, what was
    derived from them and the input shape at build time (``derived``: the weights depend on it), and
    the epoch cap it trains under (None: no training loop). Ensemble members are nested records in
    ``params["members"]``. Rebuilding from it consults no default of the code."""

    detector: str
    params: dict[str, Any]
    derived: dict[str, Any] = field(default_factory=dict)
    epoch_cap: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "params": jsonable(self.params),
            "derived": jsonable(self.derived),
            "epoch_cap": self.epoch_cap,
        }

    @classmethod
    def from_dict(
        cls, data: Any, keys: tuple[str, ...] = ("detector", "params", "derived", "epoch_cap")
    ) -> Build:
        """The record in ``data`` (a run's JSON); a malformed one raises ``ValueError`` naming what.
        ``keys``: those that must be present (the others default to empty)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a build record must be an object, found {type(data).__name__}")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"the build record has no {missing[0]!r}")
        data = {"derived": {}, "epoch_cap": None, **data}
        cap = data["epoch_cap"]
        if not isinstance(data["detector"], str) or not isinstance(data["params"], Mapping):
            raise ValueError("the build record needs a detector name and a params object")
        if not isinstance(data["derived"], Mapping):
            raise ValueError("the build record's derived values must be an object")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ValueError(f"epoch_cap must be a positive integer or null, found {cap!r}")
        return cls(data["detector"], dict(data["params"]), dict(data["derived"]), cap)

    def refit_params(self) -> dict[str, Any]:
        """The parameters for training this recipe again, on any data: nested members keep their
        parameters and epoch caps but not their derived values (those depend on the shape)."""
        params = dict(self.params)
        if isinstance(params.get("members"), list):
            params["members"] = [
                {k: v for k, v in m.items() if k != "derived"} if isinstance(m, Mapping) else m
                for m in params["members"]
            ]
        return params

    def describe(self) -> str:
        """Compact text: ``boss(width=32, score=classifier), 8 epochs``; members in brackets."""
        parts = []
        for key, value in self.params.items():
            builds = isinstance(value, (list, tuple)) and any(isinstance(m, Mapping) for m in value)
            if key == "members" or builds:  # members, local_members, gray_members, ...
                members = [Build.from_dict(m).describe() if isinstance(m, Mapping) else str(m) for m in value]
                parts.append(f"{key}=[{'; '.join(members)}]")
            else:
                parts.append(f"{key}={_short(value)}")
        cap = f", {self.epoch_cap} epochs" if self.epoch_cap else ""
        return f"{self.detector}({', '.join(parts)}){cap}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class DetectorSpec:
    """What the registry knows about one detector family."""

    name: str
    description: str
    model_cls: type

    @property
    def params_cls(self) -> type[Params]:
        """The family's parameter dataclass (see :mod:`oddeye.detectors.params`)."""
        return self.model_cls.Params

    def arch_defaults(self) -> dict[str, Any]:
        """The parameters a user may set, with the code's current defaults (derived values, which
        the model computes at build time, are not among them)."""
        return self.params_cls.defaults()

    def resolve(self, params: Mapping[str, Any]) -> Params:
        """Every parameter, from ``params`` or the current defaults, typed and checked; unknown
        names raise an error naming the valid ones."""
        allowed = self.arch_defaults()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            valid = ", ".join(allowed) or "none"
            raise OddeyeError(
                f"detector {self.name} has no parameter {unknown[0]!r}; its parameters: {valid}"
            )
        try:
            return self.params_cls(**{**allowed, **params})
        except OddeyeError as e:
            raise OddeyeError(f"detector {self.name}: {e}") from None

    def build(self, shape: tuple[int, int, int], params: Mapping[str, Any], epochs: int | None = None) -> Any:
        """The untrained model for images of ``shape``: missing parameters take the current
        defaults; ``epochs`` (the training config's) overrides every trained part's own cap.
        ``record_of(model)`` then says how it was built, fully resolved."""
        model = self.model_cls(shape, self.resolve(params))
        return _finish(model, self.name, epochs)

    def rebuild(self, record: Build, shape: tuple[int, int, int]) -> Any:
        """The model exactly as ``record`` says, consulting none of the code's defaults: a
        parameter the record lacks takes the value runs had before it existed (its ``before``);
        one with no such value, or a name the family does not know, is a ``ValueError``."""
        params = self.params_cls.from_record(record.params, self.name)
        derived = self.model_cls.Derived.from_record(record.derived, self.name)
        model = _finish(self.model_cls(shape, params, derived), self.name, None)
        if model.trainable:
            if record.epoch_cap is None:
                raise ValueError(f"the build record of {self.name} has no epoch cap")
            model.epoch_cap = record.epoch_cap
        return model

    def build_bytes(self, record: Build, shape: tuple[int, int, int]) -> int:
        """Bytes of the parameters and buffers the model of ``record`` is built with, counted on
        PyTorch's meta device, so nothing is allocated (a hostile record may ask for any size).
        Memory banks, sized by the weights they load, count as empty here."""
        import torch

        with torch.device("meta"):
            model = self.rebuild(record, shape)
        return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _finish(model: Any, name: str, epochs: int | None) -> Any:
    model.label = name
    if epochs is not None:
        for part in [model, *model.members()]:
            part.epoch_cap = epochs
    return model


def record_of(model: Any) -> Build:
    """The :class:`Build` of a model made by :meth:`DetectorSpec.build` or ``rebuild``."""
    if not model.label:
        raise OddeyeError(f"{type(model).__name__} was not built through the registry: no build record")
    cap = model.epoch_cap if model.trainable else None
    return Build(model.label, jsonable(model.record_params()), model.derived.to_dict(), cap)


_REGISTRY: dict[str, DetectorSpec] = {}


def register(name: str, description: str) -> Callable[[M], M]:
    """Class decorator adding an :class:`~oddeye.detectors.base.AnomalyModel` to the registry."""

    def wrap(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"detector {name!r} registered twice")
        _REGISTRY[name] = DetectorSpec(name, description, cls)
        return cls

    return wrap


def available() -> list[str]:
    """Registered detector names, in registration order."""
    return list(_REGISTRY)


def get_spec(name: str) -> DetectorSpec:
    """The spec for ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OddeyeError(f"unknown detector {name!r}; expected one of: {', '.join(available())}") from None
