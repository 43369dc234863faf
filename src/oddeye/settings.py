"""The one place settings are resolved, for the CLI and the Python API alike.

Layers, later wins: the defaults, then a JSON ``--config`` file, then ``--set KEY=VALUE`` (in the
order given; the last of a repeated key wins), then explicit flags or keyword arguments. A key is
a training setting (:class:`~oddeye.config.TrainConfig`), ``detector``, or a parameter of the
chosen detector; any other key is refused with the valid ones listed. Explicit values of None
count as not given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oddeye.config import TrainConfig, read_config_file
from oddeye.detectors import DEFAULT_DETECTOR, get_spec
from oddeye.errors import OddeyeError


@dataclass(frozen=True)
class Settings:
    """A detector name, its training settings and the detector parameters asked for (unset ones take
    the detector's defaults when it is built; the run records every one)."""

    detector: str = DEFAULT_DETECTOR
    config: TrainConfig = field(default_factory=TrainConfig)
    params: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # key -> the layer its value came from
    overridden: list[str] = field(default_factory=list)  # keys a later layer set again, in words


def resolve_settings(
    detector: str | None = None,
    config_file: str | Path | None = None,
    sets: Sequence[tuple[str, Any]] = (),
    explicit: Mapping[str, Any] | None = None,
    explicit_name: str = "flags",
) -> Settings:
    """Merge the layers: defaults < ``config_file`` < ``sets`` < ``detector`` and ``explicit``
    (flags or keyword arguments: training settings and detector parameters)."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), _file_layer(config_file)))
    layers.append(("--set", dict(sets)))
    given = {k: v for k, v in (explicit or {}).items() if v is not None}
    if detector is not None:
        given["detector"] = detector
    layers.append((explicit_name, given))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    overridden = []
    for layer, values in layers:
        for key, value in values.items():
            if key in merged and sources[key] != layer and merged[key] != value:
                overridden.append(
                    f"{key}={value!r} from {layer} replaces {merged[key]!r} from {sources[key]}"
                )
            merged[key], sources[key] = value, layer
    name = merged.pop("detector", DEFAULT_DETECTOR)
    if not isinstance(name, str):
        raise OddeyeError(f"detector: expected a registry name, found {name!r} (from {sources['detector']})")
    arch = get_spec(name).arch_defaults()
    training: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in merged.items():
        if key in TrainConfig.fields():
            try:
                TrainConfig().replace(**{key: value})  # type and range, blamed on its layer
            except OddeyeError as e:
                raise OddeyeError(f"{e} (from {sources[key]})") from None
            training[key] = value
        elif key in arch:
            params[key] = value
        else:
            raise OddeyeError(_unknown(key, sources[key], name, list(arch)))
    get_spec(name).resolve(params)  # types and choices checked now, not at the first fit
    return Settings(name, TrainConfig().replace(**training), params, sources, overridden)


def _file_layer(path: str | Path) -> dict[str, Any]:
    """A config file's keys, its ``params`` object flattened in (detector parameters)."""
    data = read_config_file(path)
    params = data.pop("params", None) or {}
    clash = sorted(set(params) & {"detector", *TrainConfig.fields()})
    if clash:
        raise OddeyeError(
            f'{path}: expected detector parameters in "params", found the setting {clash[0]!r} '
            "(training settings go at the top level)"
        )
    return {**data, **params}


def _unknown(key: str, source: str, detector: str, arch: list[str]) -> str:
    params = ", ".join(arch) or "none"
    return (
        f"unknown setting {key!r} (from {source}); expected a training setting "
        f"({', '.join(TrainConfig.fields())}), detector, or a parameter of {detector} ({params})"
    )
