"""Typed detector parameters: one frozen dataclass per family, carried whole in every run.

A family's model class names two dataclasses: ``Params``, what a user may set (``--set k=5``,
``oddeye.create("pixel-knn", k=5)``), and ``Derived``, what the model computes from them and the
image size at build time and what its weights depend on (a blur in pixels, a list of
transformations). A run records both in full, and loading rebuilds the model from that record
alone: a default changed in the code never reaches a saved run. A subclass's dataclass extends its
parent's (``ShapeKNN.Params`` is ``PixelKNN.Params`` plus ``foreground``).

Adding a parameter to a family (the whole rule: no run format change, no migration table)
-------------------------------------------------------------------------------------------
1. Add a field to the family's ``Params`` dataclass with :func:`param`, giving its default and
   ``before=``: the value that does what the code did before the field existed. A run written
   before it lacks the field and rebuilds with ``before``, so it scores exactly as it did::

       gamma: float = param(2.0, before=1.0, help="...")   # 1.0: what every older run did

2. Read it in the model as ``self.params.gamma``.
3. Test that an older run still scores as written (the checked-in runs under ``tests/data`` do this
   for ``default``; ``tests/test_params.py`` shows the pattern for any family).

A field without ``before`` is one the family has had from its first run on; a record that lacks it
is refused as incomplete. ``choices=`` restricts a string (or each element of a tuple of strings).
Field types are checked and coerced where that is lossless: an ``int`` where a ``float`` is
declared, a list or a comma-separated string where a tuple is.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

from oddeye.errors import OddeyeError


def param(
    default: Any, *, before: Any = MISSING, help: str = "", choices: tuple[str, ...] | None = None
) -> Any:
    """A parameter field: its ``default``, ``before`` (what runs written before the field existed
    rebuild with), a ``help`` text and, for strings, the allowed ``choices``."""
    return field(default=default, metadata={"before": before, "help": help, "choices": choices})


@dataclass(frozen=True)
class Fields:
    """Base of :class:`Params` and :class:`Derived`: typed fields, checked and coerced on creation
    (``OddeyeError`` naming the field, what was expected and what was found)."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(getattr(self, f.name), hints[f.name], self._what(f.name))
            choices = f.metadata.get("choices")
            if choices:
                for item in value if isinstance(value, tuple) else (value,):
                    if item not in choices:
                        raise OddeyeError(
                            f"{self._what(f.name)} must be one of {', '.join(choices)}; found {item!r}"
                        )
            object.__setattr__(self, f.name, value)

    def _what(self, name: str) -> str:
        return f"parameter {name}"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field with the code's current default (read at call time)."""
        return {f.name: _default(f) for f in dataclasses.fields(cls)}

    @classmethod
    def from_record(cls, values: Mapping[str, Any], what: str) -> Fields:
        """The fields as a run recorded them: a field the record lacks takes its ``before`` value
        (runs written before it existed), and is an error (``ValueError``) when it has none; an
        unknown name is an error too. ``what``: the record's name, for the message."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        extra = sorted(set(values) - set(known))
        if extra:
            raise ValueError(f"the build record of {what} has unknown {cls._kind()} {extra[0]!r}")
        full = dict(values)
        for name, f in known.items():
            if name not in full:
                if f.metadata.get("before", MISSING) is MISSING:
                    raise ValueError(f"the build record of {what} has no value for {cls._kind()} {name!r}")
                full[name] = f.metadata["before"]
        return cls(**full)

    @classmethod
    def _kind(cls) -> str:
        return "parameter"

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(name, type, default, meaning) of every field, for ``oddeye detectors NAME``."""
        hints = _hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            default = jsonable(_default(f))
            text = (
                ",".join(map(str, default))
                if isinstance(default, list)
                else f"{default:.6g}"
                if isinstance(default, float)
                else str(default)
            )
            meaning = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                meaning += f" (one of {', '.join(f.metadata['choices'])})"
            rows.append((f.name, kind, text, meaning))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists), in field order."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Params(Fields):
    """A family's parameters (subclass it; every field made with :func:`param`)."""


@dataclass(frozen=True)
class Derived(Fields):
    """What a family computes at build time from its parameters and the image size (subclass it)."""

    def _what(self, name: str) -> str:
        return f"derived value {name}"

    @classmethod
    def _kind(cls) -> str:
        return "derived value"


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name} has no default")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, what: str) -> Any:
    """``value`` as type ``hint`` (int, float, str, bool, X | None, tuple[X, ...], tuple[X, Y],
    Any), converting only losslessly; anything else is an ``OddeyeError``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, what)
    if origin is tuple:
        return _tuple(value, args, what)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise OddeyeError(f"{what}: expected true or false, found {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        raise OddeyeError(f"{what}: expected an integer, found {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise OddeyeError(f"{what}: expected a number, found {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise OddeyeError(f"{what}: expected a string, found {value!r}")
    raise TypeError(f"{what}: unsupported parameter type {hint!r}")


def _tuple(value: Any, args: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    """A tuple from a list, tuple or comma-separated string ('pixel-knn,hog-knn', '16,32')."""
    variadic = len(args) == 2 and args[1] is Ellipsis
    kinds = [args[0]] if variadic else list(args)
    if isinstance(value, str):
        kind = kinds[0]
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            value = [kind(p) if kind in (int, float) else p for p in parts]
        except ValueError:
            name = getattr(kind, "__name__", str(kind))
            raise OddeyeError(f"{what}: expected a comma-separated list of {name}, found {value!r}") from None
    if not isinstance(value, (list, tuple)):
        raise OddeyeError(f"{what}: expected a list, found {value!r}")
    if not variadic and len(value) != len(kinds):
        raise OddeyeError(f"{what}: expected {len(kinds)} values, found {len(value)}")
    return tuple(_coerce(v, kinds[0] if variadic else kinds[i], what) for i, v in enumerate(value))


def jsonable(value: Any) -> Any:
    """Tuples as lists, recursively, and numpy or torch scalars as Python numbers: plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


@dataclass(frozen=True)
class NoParams(Params):
    """A family without parameters."""


@dataclass(frozen=True)
class NoDerived(Derived):
    """A family that derives nothing."""


@dataclass(frozen=True)
class WorkSize(Derived):
    """The resolution a family works at (images reduced to at most ``max_side`` pixels a side)."""

    work_hw: tuple[int, int]
