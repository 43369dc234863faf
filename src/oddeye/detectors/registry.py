"""Explicit detector registry: ``@register`` on a model class, ``get`` by name, typo-friendly errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from oddeye.errors import OddeyeError

M = TypeVar("M", bound=type)


@dataclass(frozen=True)
class DetectorSpec:
    """What the registry knows about one detector family."""

    name: str
    description: str
    model_cls: type

    def arch_defaults(self) -> dict[str, Any]:
        """Architecture parameters the model accepts (besides ``shape``), with their defaults."""
        sig = inspect.signature(self.model_cls.__init__)
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in ("self", "shape") and p.kind is p.KEYWORD_ONLY
        }

    def build(self, shape: tuple[int, int, int], params: dict[str, Any]) -> Any:
        """The untrained model for images of ``shape``; unknown parameters raise an error naming
        the valid ones, and tuple parameters accept lists or comma-separated strings."""
        allowed = self.arch_defaults()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            valid = ", ".join(allowed) or "none"
            raise OddeyeError(
                f"detector {self.name} has no parameter {unknown[0]!r}; its parameters: {valid}"
            )
        coerced = {
            k: _as_tuple(v, allowed[k]) if isinstance(allowed[k], tuple) else v for k, v in params.items()
        }
        model = self.model_cls(shape, **coerced)
        model.label = self.name
        return model


def _as_tuple(value: Any, default: tuple[Any, ...]) -> tuple[Any, ...]:
    """A tuple parameter from a list, tuple or comma-separated string ('pixel-knn,boss', '16,32')."""
    if isinstance(value, str):
        kind = type(default[0]) if default else str
        try:
            return tuple(kind(part.strip()) for part in value.split(",") if part.strip())
        except ValueError:
            raise OddeyeError(
                f"expected a comma-separated list of {kind.__name__}, found {value!r}"
            ) from None
    return tuple(value)


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
