"""Ensembles: several registered detectors, each trained on its own, scores fused on one scale."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, InferenceBatch
from oddeye.detectors.fusion import ScoreFusion, collect
from oddeye.detectors.registry import Build, DetectorSpec, get_spec, record_of, register
from oddeye.errors import OddeyeError


def parse_member(text: str) -> tuple[str, dict[str, Any]]:
    """'name' or 'name:key=value;key=value' (values JSON where they parse, else strings)."""
    name, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(";"))):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise OddeyeError(f"ensemble member {text!r}: expected name:key=value;key=value, found {item!r}")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw.strip()
    return name.strip(), params


def build_member(member: str | Mapping[str, Any], shape: tuple[int, int, int]) -> AnomalyModel:
    """One member model: from its 'name[:key=value;...]' text (parameters checked as for any
    detector, missing ones at today's defaults; ``epochs=N`` sets the member's own epoch cap), from
    a saved build record (with ``derived``: exactly as recorded), or from a record's parameters and
    epoch cap (without ``derived``: derived anew for this shape)."""
    if isinstance(member, Mapping):
        try:
            record = Build.from_dict(member, keys=("detector", "params"))
            spec = _member_spec(record.detector)
            if "derived" in member:
                return spec.rebuild(record, shape)
            return spec.build(shape, record.params, epochs=record.epoch_cap)
        except ValueError as e:
            raise OddeyeError(f"ensemble member record: {e}") from None
    name, params = parse_member(member)
    spec = _member_spec(name)
    epochs = params.pop("epochs", None)
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise OddeyeError(f"ensemble member {member!r}: epochs must be a positive integer")
    return spec.build(shape, params, epochs=epochs)  # the training config's epochs overrides it


def _member_spec(name: str) -> DetectorSpec:
    spec = get_spec(name)
    if issubclass(spec.model_cls, Ensemble):
        raise OddeyeError("an ensemble cannot contain another ensemble")
    return spec


@register("ensemble", "several detectors (members=a,b,...), z-scores fitted on held-out training images")
class Ensemble(AnomalyModel):
    """Members are registered detectors, each written ``name`` or ``name:key=value;key=value``
    (e.g. ``transform:score=both;width=16``), each trained by the same loop on the same split.
    Each member's score is standardised by its mean and spread on the held-out normal training
    images, and the fused score is the mean of those z-scores. A run records every member's build
    (its resolved parameters and epoch cap), and ``members`` accepts such records too.
    """

    trainable = False  # the members train; the ensemble itself only fits the fusion scale

    def __init__(
        self, shape: tuple[int, int, int], *, members: tuple[str, ...] = ("pixel-knn", "boss")
    ) -> None:
        super().__init__(shape)
        if not members:
            raise OddeyeError("an ensemble needs at least one member detector")
        self.detectors = nn.ModuleList(build_member(member, self.shape) for member in members)
        self.fusion = ScoreFusion(len(self.detectors))

    latent = "the members' latent codes, each scaled to unit length, side by side"

    def members(self) -> list[AnomalyModel]:
        return list(self.detectors)

    def resolved_params(self) -> dict[str, object]:
        return {**self.build_params, "members": [record_of(m).to_dict() for m in self.detectors]}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(m.embed(x).float(), dim=1) for m in self.detectors], 1)

    def _components(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_members) member scores."""
        return torch.stack([m.infer(x).score.float() for m in self.detectors], 1)

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        self.eval()
        self.fusion.fit(collect(self._components, heldout, batches))

    def fit_end_work(self) -> str:
        return "score fusion scales"

    def infer(self, x: torch.Tensor) -> InferenceBatch:
        return InferenceBatch(self.fusion(self._components(x)))


DEFAULT_MEMBERS = (
    "pixel-knn",
    "boss:score=classifier;recon_weight=0;width=32;epochs=8",
    "transform:score=knn;width=16;epochs=3",
)


@register(
    "default",
    "the benchmark's best for its time budget: pixel-knn + boss classifier + transform "
    "feature k-NN, fused (see BENCHMARKS.md)",
)
class DefaultDetector(Ensemble):
    """The ensemble chosen on validation data made from Fashion-MNIST training images only (held-out
    normal images against other classes' training images; the test split never seen): a blurred
    pixel-space k-NN, a classifier of normal vs synthetic anomalies, and k-NN in the features of a
    flip/rotation recogniser, each a different view of "unlike the training images"."""

    def __init__(self, shape: tuple[int, int, int], *, members: tuple[str, ...] = DEFAULT_MEMBERS) -> None:
        super().__init__(shape, members=members)
