"""Older run formats, upgraded to the current one as plain JSON before anything is built.

A run folder means the same thing for good. Format 1 (``oddeye-run/1``) recorded only the
parameters the user typed, so its meaning is fixed here by what format-1 code did: the defaults,
epoch caps and derivations of that code, frozen in these tables and functions. Today's defaults
never reach an old run.

Since format 2 (``oddeye-run/2``) every run records every parameter it was built with, and a
parameter added later needs no step here: its field says the value older runs had
(``before=``, see :mod:`oddeye.detectors.params`), which a record that lacks it rebuilds with.
Format 3 only marked the first such addition (``default``'s ``gray_members``); a format-2 record
reads as format 3 unchanged. Format 4 added a training setting, ``contamination`` (training images
set aside before the banks are kept); a format-3 record reads with ``"0"``, what its code did.
Format 5 added ``max_heldout`` (at most that many images held out); a format-4 record reads with
``0``, no cap, what its code did. Format 6 added ``trim`` (detectors that train set aside, after a
first pass, the training images their own scores find atypical); a format-5 record reads with
``false``, what its code did. Format 7 added ``trim_members`` (an ensemble's members that train
trim their training set too); a format-6 record reads with ``false``, what its code did.
A change of the record's structure (not a new parameter) adds an upgrade step and a test that
loads a run written by the previous format.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from oddeye.detectors.ensemble import parse_member

# Every detector format 1 knew: its parameters' defaults (tuples as lists), as the code had them.
V1_DEFAULTS: dict[str, dict[str, Any]] = {
    "pixel-knn": {"k": 3, "blur": 1 / 28, "max_bank": 20000},
    "boss": {
        "width": 32,
        "recon_weight": 1.0,
        "kinds": ["noise", "paste", "swap", "erase", "blur", "shift", "stretch", "local-noise"],
        "score": "both",
    },
    "ocgan": {
        "width": 16,
        "latent": 32,
        "noise": 0.2,
        "recon_weight": 10.0,
        "mining_steps": 2,
        "mining_lr": 0.5,
    },
    "dae": {"width": 16, "noise": 0.3, "drop": 0.2},
    "ensemble": {"members": ["pixel-knn", "boss"]},
    "default": {
        "members": [
            "pixel-knn",
            "boss:score=classifier;recon_weight=0;width=32;epochs=8",
            "transform:score=knn;width=16;epochs=3",
        ]
    },
    "fcn": {"hidden": [128, 64, 12, 3]},
    "cnn": {"channels": [12, 24, 48]},
    "cnn-bn": {"channels": [12, 24, 48]},
    "vae": {"channels": [12, 24, 48], "kld_weight": 1.0},
    "deep-svdd": {"width": 16, "dim": 32, "score": "center", "k": 3},
    "transform": {"width": 32, "flips": True, "rotations": 4, "shift": 0.0, "score": "ce", "k": 3},
}
V1_EPOCH_CAP = 50  # every family's cap in format 1, unless the config or a member text set one
V1_UNTRAINED = ("pixel-knn", "ensemble", "default")
V1_ENSEMBLES = ("ensemble", "default")
V1_CONFIG: dict[str, Any] = {
    "epochs": None,
    "batch_size": 128,
    "lr": 1e-3,
    "seed": 0,
    "val_fraction": 0.05,
    "patience": 5,
    "min_delta": 1e-3,
    "device": "auto",
    "precision": "auto",
    "score_batch_size": 1024,
    "compile": False,
    "progress": True,
    "threshold": "fpr:0.01",
}


# Training settings added after format 1, with the value that does what format-1 code did.
V1_CONFIG_LATER: dict[str, Any] = {"budget": None}


def _v1_derived(name: str, params: dict[str, Any], shape: tuple[int, int, int]) -> dict[str, Any]:
    """What format-1 code derived at build time (and at run time, for the transform's shift)."""
    h, w = shape[:2]
    if name == "pixel-knn":
        return {"sigma": params["blur"] * min(h, w), "blur_hw": [h, w], "bank_hw": [h, w]}
    if name == "transform":
        shifts = [-1, 0, 1] if params["shift"] > 0 else [0]
        flips = [0, 1] if params["flips"] else [0]
        transforms = [list(t) for t in itertools.product(flips, range(params["rotations"]), shifts, shifts)]
        shift_px = int(round(params["shift"] * max(h, w)))
        return {"transforms": transforms, "shift_px": shift_px, "work_hw": [h, w]}
    if name == "boss":
        return {"work_hw": [h, w]}
    return {}


def _v1_list(value: Any, default: list[Any]) -> list[Any]:
    """Format 1's reading of a tuple parameter: a list, or a comma-separated string."""
    if isinstance(value, str):
        kind = type(default[0]) if default else str
        return [kind(part.strip()) for part in value.split(",") if part.strip()]
    return list(value)


def v1_build(
    name: str,
    params: dict[str, Any],
    shape: tuple[int, int, int],
    epochs: int | None,
    own_cap: int | None = None,
) -> dict[str, Any]:
    """The format-2 build record of a format-1 detector: ``params`` as typed, completed with
    format 1's defaults; ``epochs`` the config's cap, ``own_cap`` a member text's ``epochs=``."""
    if name not in V1_DEFAULTS:
        raise ValueError(f"detector {name!r} did not exist in format 1")
    defaults = V1_DEFAULTS[name]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"detector {name} had no parameter {unknown[0]!r} in format 1")
    full = {k: params.get(k, v) for k, v in defaults.items()}
    full = {k: _v1_list(v, defaults[k]) if isinstance(defaults[k], list) else v for k, v in full.items()}
    if name in V1_ENSEMBLES:
        full["members"] = [_v1_member(text, shape, epochs) for text in full["members"]]
    # parameters added since take their ``before`` value (what format-1 code did) when rebuilt
    cap = None if name in V1_UNTRAINED else (epochs or own_cap or V1_EPOCH_CAP)
    return {"detector": name, "params": full, "derived": _v1_derived(name, full, shape), "epoch_cap": cap}


def _v1_member(text: Any, shape: tuple[int, int, int], epochs: int | None) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ValueError(f"ensemble member {text!r}: expected 'name:key=value;...' text in format 1")
    name, params = parse_member(text)
    if name in V1_ENSEMBLES:
        raise ValueError("an ensemble cannot contain another ensemble")
    own = params.pop("epochs", None)
    return v1_build(name, params, shape, epochs, own)


def upgrade_v1(meta: dict[str, Any]) -> dict[str, Any]:
    """A format-1 model.json as format 2 (``ValueError`` naming what is missing or wrong)."""
    for key in ("detector", "params", "config", "input_shape"):
        if key not in meta:
            raise ValueError(f"format 1 metadata has no {key!r}")
    if not isinstance(meta["params"], dict) or not isinstance(meta["config"], dict):
        raise ValueError("format 1 metadata needs params and config objects")
    config = {**V1_CONFIG, **meta["config"], **V1_CONFIG_LATER}
    shape = tuple(int(s) for s in meta["input_shape"])
    build = v1_build(str(meta["detector"]), meta["params"], shape, config["epochs"])  # type: ignore[arg-type]
    upgraded = {k: v for k, v in meta.items() if k not in ("params",)}
    upgraded.update(build)
    upgraded["config"] = config
    upgraded["format"] = "oddeye-run/2"
    upgraded["upgraded_from"] = "oddeye-run/1"
    return upgraded


def upgrade_v2(meta: dict[str, Any]) -> dict[str, Any]:
    """A format-2 model.json as format 3: the same record (parameters added since format 2 are
    completed from their fields' ``before`` values when the model is rebuilt)."""
    if not isinstance(meta.get("params"), dict):
        raise ValueError("format 2 metadata needs a params object")
    return {**meta, "format": "oddeye-run/3", "upgraded_from": meta.get("upgraded_from", "oddeye-run/2")}


def settings_added(meta: dict[str, Any], old: int, later: dict[str, Any]) -> dict[str, Any]:
    """A format-``old`` model.json as the next format when that format only added training
    settings: its settings gain ``later`` (the values that do what format-``old`` code did),
    nothing else changes."""
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"format {old} metadata needs a config object")
    return {
        **meta,
        "config": {**meta["config"], **later},
        "format": f"oddeye-run/{old + 1}",
        "upgraded_from": meta.get("upgraded_from", f"oddeye-run/{old}"),
    }


# Training settings added with format 4, with the value that does what format-3 code did.
V3_CONFIG_LATER: dict[str, Any] = {"contamination": "0"}


def upgrade_v3(meta: dict[str, Any]) -> dict[str, Any]:
    """A format-3 model.json as format 4: its settings gain ``contamination: "0"`` (format-3 code
    kept every training image in the banks), nothing else changes."""
    return settings_added(meta, 3, V3_CONFIG_LATER)


# Training settings added with format 5, with the value that does what format-4 code did.
V4_CONFIG_LATER: dict[str, Any] = {"max_heldout": 0}


def upgrade_v4(meta: dict[str, Any]) -> dict[str, Any]:
    """A format-4 model.json as format 5: its settings gain ``max_heldout: 0`` (format-4 code held
    out ``val_fraction`` of the images whatever their number), nothing else changes."""
    return settings_added(meta, 4, V4_CONFIG_LATER)


# Training settings added with format 6, with the value that does what format-5 code did.
V5_CONFIG_LATER: dict[str, Any] = {"trim": False}


def upgrade_v5(meta: dict[str, Any]) -> dict[str, Any]:
    """A format-5 model.json as format 6: its settings gain ``trim: false`` (format-5 code trained
    on every training image, whatever ``contamination`` said), nothing else changes."""
    return settings_added(meta, 5, V5_CONFIG_LATER)


# Training settings added with format 7, with the value that does what format-6 code did.
V6_CONFIG_LATER: dict[str, Any] = {"trim_members": False}


def upgrade_v6(meta: dict[str, Any]) -> dict[str, Any]:
    """A format-6 model.json as format 7: its settings gain ``trim_members: false`` (format-6 code
    trimmed a detector trained alone, never an ensemble's members), nothing else changes."""
    return settings_added(meta, 6, V6_CONFIG_LATER)


# format -> the step that turns its metadata into the next format's
UPGRADES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "oddeye-run/1": upgrade_v1,
    "oddeye-run/2": upgrade_v2,
    "oddeye-run/3": upgrade_v3,
    "oddeye-run/4": upgrade_v4,
    "oddeye-run/5": upgrade_v5,
    "oddeye-run/6": upgrade_v6,
}
