"""Ensembles: several registered detectors, each trained on its own, scores fused on one scale."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oddeye.detectors.base import AnomalyModel, Batches, InferenceBatch, needs_training
from oddeye.detectors.fusion import ExcessFusion, ScoreFusion, collect
from oddeye.detectors.memory import count_of
from oddeye.detectors.params import Derived, Params, param
from oddeye.detectors.registry import Build, DetectorSpec, get_spec, record_of, register
from oddeye.detectors.screening import screen_training
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


def _no_score(x: torch.Tensor) -> torch.Tensor:
    """(B,) zeros: the score column of a member not run (the batch size kept symbolic for export)."""
    return torch.zeros_like(x[:, 0, 0, 0])


def _member_spec(name: str) -> DetectorSpec:
    spec = get_spec(name)
    if issubclass(spec.model_cls, Ensemble):
        raise OddeyeError("an ensemble cannot contain another ensemble")
    return spec


@dataclass(frozen=True)
class EnsembleParams(Params):
    members: tuple[Any, ...] = param(
        ("pixel-knn", "boss"), help="member detectors: 'name' or 'name:key=value;...' texts, or build records"
    )
    references: str = param(
        "heldout+bank",
        before="heldout",
        help="normal scores the fusion scales are fitted on",
        choices=("heldout", "heldout+bank"),
    )


@register("ensemble", "several detectors (members=a,b,...), z-scores fitted on held-out training images")
class Ensemble(AnomalyModel):
    """Members are registered detectors, each written ``name`` or ``name:key=value;key=value``
    (e.g. ``transform:score=both;width=16``), each trained by the same loop on the same split.
    Each member's score is standardised by its mean and spread on the held-out normal training
    images, and the fused score is the mean of those z-scores. ``references="heldout+bank"`` also
    counts memory banks' leave-one-out scores of their own images as normal scores (many more than
    the held-out images of a small set: steadier scales); ``"heldout"``, the held-out images
    alone. A run records every member's build (its resolved parameters and epoch cap), and
    ``members`` accepts such records too.
    """

    trainable = False  # the members train; the ensemble itself only fits the fusion scale
    heldout_fused_: torch.Tensor | None = None  # after fit_end: the held-out images' fused scores
    updatable = True  # where every member is (``absorb`` refuses otherwise, naming the member)

    Params = EnsembleParams

    def __init__(
        self,
        shape: tuple[int, int, int],
        params: EnsembleParams | None = None,
        derived: Derived | None = None,
    ) -> None:
        super().__init__(shape, params, derived)
        self.references = self.params.references
        members = self.chosen_members()
        if not members:
            raise OddeyeError("an ensemble needs at least one member detector")
        self.detectors = nn.ModuleList(build_member(member, self.shape) for member in members)
        self.fusion = self.make_fusion()

    latent = "the members' latent codes, each scaled to unit length, side by side"
    map_meaning = "the members' maps, each divided by its score's fusion scale, averaged"

    def members(self) -> list[AnomalyModel]:
        return list(self.detectors)

    def chosen_members(self) -> tuple[Any, ...]:
        """The members to build, as texts or records (the default adds some by image kind)."""
        return self.params.members

    def member_weights(self) -> list[float] | None:
        """Each member's weight in the fused score and map (None: all equal)."""
        return None

    def make_fusion(self) -> ScoreFusion:
        """How the members' scores are fused: a weighted mean of their z-scores."""
        return ScoreFusion(len(self.detectors), self.member_weights())

    def fusion_weights(self) -> list[float] | None:
        """Per member, weights, summing to 1, that replace the fusion's own rule for the score and
        the map, decided from the fitted members (a member weighted 0 is not run); None: the rule."""
        return None

    def record_params(self) -> dict[str, object]:
        return {**self.params.to_dict(), "members": [record_of(m).to_dict() for m in self.detectors]}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(m.embed(x).float(), dim=1) for m in self.detectors], 1)

    def _components(self, x: torch.Tensor, weights: list[float] | None = None) -> torch.Tensor:
        """(B, n_members) member scores (0 for a member ``weights`` gives no weight: not run)."""
        pairs = zip(self.detectors, self._used(weights), strict=True)
        return torch.stack([m.infer(x).score.float() if u else _no_score(x) for m, u in pairs], 1)

    def _used(self, weights: list[float] | None) -> list[bool]:
        """Which members are run: those with a weight (all, with None)."""
        return [True] * len(self.detectors) if weights is None else [w > 0 for w in weights]

    def fit_end(
        self, batches: Callable[[], Iterator[torch.Tensor]], heldout: Callable[[], Iterator[torch.Tensor]]
    ) -> None:
        self.eval()
        kept = screen_training(self, heldout)
        if self.screening_ is not None:  # members whose banks were not screened drop those images too
            for member in self.detectors:
                member.set_aside_images(self.screening_.positions)
        self.fit_fusion(batches, kept or heldout)

    def fit_end_work(self) -> str:
        return "score fusion scales"

    def banks(self) -> list[tuple[Any, Callable[[torch.Tensor], torch.Tensor]]]:
        return [bank for m in self.detectors for bank in m.banks()]

    def absorb(self, batches: Batches, heldout: Batches, seen: int) -> None:
        """Every member absorbs the new images, then the fusion scales are fitted again, as
        :meth:`fit_end` fits them: on ``heldout()`` (or, with none, ``batches()``) and, with
        ``references="heldout+bank"``, the banks' leave-one-out scores, which now count the new
        rows. Refused before any member changes if one of them needs training."""
        refusal = needs_training(self)
        if refusal is not None:
            raise OddeyeError(refusal)
        for member in self.detectors:
            member.absorb(batches, heldout, seen)
        self.fit_fusion(batches, heldout)

    def fit_fusion(self, batches: Batches, heldout: Batches) -> None:
        """The fusion scales on the held-out component scores (or the training ones, with none
        held out) and the members' reference scores where ``references`` counts them."""
        self.eval()
        extra = [m.reference_scores() for m in self.detectors] if self.references != "heldout" else None
        components = collect(self._components, heldout, batches)
        self.fusion.fit(components, extra)
        # the held-out images' fused scores, as scoring them again would give (members that do not
        # train compute in float32 in both places): the run's held-out scores without a second pass
        again = count_of(heldout) and not any(m.trainable for m in self.detectors)
        self.heldout_fused_ = self.fusion(components, self.fusion_weights()).double().cpu() if again else None

    def infer(self, x: torch.Tensor, maps: bool = False) -> InferenceBatch:
        """Map: the members' maps, each divided by the spread its score is divided by when the
        scores are fused (the same scale), averaged."""
        override = self.fusion_weights()
        if not maps:
            return InferenceBatch(self.fusion(self._components(x, override), override))
        used = self._used(override)
        outs = [m.infer(x, maps=True) if u else None for m, u in zip(self.detectors, used, strict=True)]
        scores = [o.score.float() if o is not None else _no_score(x) for o in outs]
        score = self.fusion(torch.stack(scores, 1), override)
        scaled = torch.stack(
            [o.anomaly_map.float() / s for o, s in zip(outs, self.fusion.scale, strict=True) if o is not None]
        )
        weights = (  # None: equal, the plain mean
            self.fusion.weights if override is None else torch.tensor([w for w in override if w > 0])
        )
        amap = (
            scaled.mean(0)
            if weights is None
            else (scaled * weights.to(score.device).view(-1, 1, 1, 1)).sum(0)
        )
        return InferenceBatch(score, amap)


# k grows with the bank (issue 22): 0.35% of its images, 20 at Fashion-MNIST's 5,700 a class, so that
# a test image like a few stray training images still finds mostly normal ones; small banks keep
# the k chosen before (chosen on validation protocols of training images only, see NOTES.md)
BANK_K = "k_share=0.0035;k_max=20"
DEFAULT_MEMBERS = (f"pixel-knn:{BANK_K}", f"hog-knn:{BANK_K}")
COLOUR_MEMBERS = ("color-knn",)
GRAY_MEMBERS = (f"shape-knn:{BANK_K}",)
# the local view (issue 23): patches of 4 and 8 working pixels compared at their own place, joined
# by its excess beyond a z-score of 0.5 that rises by 4 per unit of the whole-image z-score above 0
# (validation protocols of avatars, emoji and Fashion-MNIST: see NOTES.md); the 48 colour-cell
# values of a patch on their 24 principal axes (issue 24: half the search's arithmetic; validation:
# avatars64 0.831 -> 0.834, avatars256 0.810 -> 0.808, emoji and Fashion-MNIST within 0.0001; with
# 16 dimensions the first round measured 0.818); an image's local score is the mean of its two oddest
# cells (`top` 0.0025 of the 31 x 31 grid at the working 64 pixels; it was 0.02, 19 cells, which
# diluted a defect of 1% of the image), with the excess counted beyond 0.5 (`local_margin`; see
# DefaultParams and NOTES.md); match=auto: patches compared at their place on aligned objects and
# anywhere on a texture, as the training images show (patches.ALIGNED; every benchmark set is aligned)
PATCH_MEMBER = "patch-knn:radius=0;dims=24;top=0.0025;match=auto"
LOCAL_MEMBERS: tuple[str, ...] = (PATCH_MEMBER,)
# images larger than LARGE_SIDE a side: the patch member works at 128 pixels, where a 256 px face's
# thin strokes (a skull graphic) are still strokes and not a grey blur, and scores an image by its
# oddest cell (`top` 0.0003 of the 63 x 63 grid); 16 dimensions (24 measured the same) keep the bank
# at 0.42 GiB for 3,000 images. Avatars256 validation: 0.925 at 64 working pixels -> 0.957 (ten
# cells, the 64 px member's share) -> 0.965 (one cell, 16 dimensions); see NOTES.md. Where the training
# images are not registered to the working pixel (an object shot again and again, never at exactly the
# same place), a patch is compared with the training patches up to one grid step from its place
# (`radius=1;radius_rule=auto`; `oddeye bench objects` and NOTES.md); the avatars, drawn at the same
# place, keep radius 0 and score as before
LARGE_SIDE = 64
LARGE_PATCH_MEMBER = "patch-knn:radius=1;radius_rule=auto;dims=16;top=0.0003;max_side=128;match=auto"
LARGE_LOCAL_MEMBERS: tuple[str, ...] = (LARGE_PATCH_MEMBER,)


@dataclass(frozen=True)
class DefaultParams(EnsembleParams):
    members: tuple[Any, ...] = param(DEFAULT_MEMBERS, help="members for every image")
    colour_members: tuple[Any, ...] = param(COLOUR_MEMBERS, before=(), help="members for colour images only")
    gray_members: tuple[Any, ...] = param(GRAY_MEMBERS, before=(), help="members for gray images only")
    local_members: tuple[Any, ...] = param(
        LOCAL_MEMBERS,
        before=(),
        help=f"members that compare local patches (small defects), for images of at most {LARGE_SIDE} "
        "pixels a side, and for larger ones where large_local_members is empty",
    )
    large_local_members: tuple[Any, ...] = param(
        LARGE_LOCAL_MEMBERS,
        before=(),
        help=f"members that compare local patches for images larger than {LARGE_SIDE} pixels a side, in "
        "place of local_members (empty: local_members at every size)",
    )
    local_weight: float = param(
        0.5,
        before=0.5,
        help="mean: the local members' share of the fused score and map; excess: the weight of their "
        "excess (and their share of the map)",
    )
    local_fusion: str = param(
        "excess",
        before="mean",
        choices=("mean", "excess"),
        help="how the local members join the score: excess, only beyond local_margin (whole-image "
        "rankings unchanged below it); mean, a weighted mean of every z-score",
    )
    local_margin: float = param(
        0.5,
        before=3.0,
        help="excess: the local z-score beyond which it counts (where the whole-image z-score is 0 or below)",
    )
    local_gate: float = param(
        4.0,
        before=0.0,
        help="excess: how much the local margin rises per unit of the whole-image z-score above 0 "
        "(an image odd as a whole needs no local view; one typical as a whole with one odd part does)",
    )
    local_scale: str = param(
        "robust",
        before="spread",
        choices=("spread", "robust"),
        help="excess: the local members' z-score scale on normal images: robust, their median and "
        "median absolute deviation (a long tail of normal images with one rare part moves neither); "
        "spread, their mean and standard deviation, as the whole-image members'",
    )
    unaligned: str = param(
        "local",
        before="all",
        choices=("local", "all"),
        help="where every local member compares patches anywhere (match=auto found the images not aligned: "
        "a texture): local, the score and map are the weighted mean of the local members' and the "
        "place-free members' (colour distributions) z-scores alone, the members that compare places not "
        "run; all, every member as on aligned images",
    )


@register(
    "default",
    "the benchmarks' best for their time budget: blurred pixel k-NN + edge-direction k-NN, "
    "+ colour-distribution k-NN on colour images or silhouette k-NN on gray ones, + a patch memory bank "
    "for small local defects, fused (see BENCHMARKS.md)",
)
class DefaultDetector(Ensemble):
    """Chosen on validation protocols made from training images only (Fashion-MNIST: held-out
    normal training images against other classes' training images; emoji: held-out training emoji
    against other categories and another vendor's drawings of them; no test split seen): three
    views of "unlike the training images" that need no training and cost seconds, each a k-NN on a
    bounded bank, fused as z-scores whose scales count the banks' leave-one-out scores.

    ``colour_members`` join ``members`` for colour images only (a gray image's intensity histogram
    hurt on Fashion-MNIST's validation protocol), ``gray_members`` for gray images only (the
    silhouette raised Fashion-MNIST's validation mean from 0.950 to 0.954 and lowered both emoji
    validation protocols, 0.975 -> 0.961 and 0.891 -> 0.884). ``local_members`` (issue 23) compare
    local patches where they are (``patch-knn``; anywhere on a texture, as ``match=auto`` finds from
    the training images), for a defect covering 1% of the image, which a
    whole-image view averages away; their maps weigh ``local_weight`` (a half) of the fused map, the
    whole-image members' the other half, and their z-score joins the fused score by its excess
    beyond a bar that rises with the whole-image z-score (:meth:`make_fusion`): chosen on the avatars
    validation protocol (synthetic local anomalies pasted into held-out training faces), emoji's and
    Fashion-MNIST's (see NOTES.md). On a texture (the local members compare patches anywhere) the
    members that compare places score at chance, so ``unaligned="local"`` leaves them out of the
    score and the map (:meth:`fusion_weights`; chosen on texture crops of the training rows with
    synthetic anomalies). The run records the members actually built, the local ones apart.
    """

    Params = DefaultParams

    def chosen_members(self) -> tuple[Any, ...]:
        p = self.params
        return p.members + (p.colour_members if self.shape[2] > 1 else p.gray_members) + self.local_chosen()

    def local_chosen(self) -> tuple[Any, ...]:
        """The local members for this image size: ``large_local_members`` for images larger than
        :data:`LARGE_SIDE` a side (where it names any), else ``local_members``."""
        p = self.params
        large = max(self.shape[:2]) > LARGE_SIDE and p.large_local_members
        return p.large_local_members if large else p.local_members

    def member_weights(self) -> list[float] | None:
        """The local members share ``local_weight``, the others the rest, equally within each
        group (all equal when either group is empty)."""
        p = self.params
        n_local, n = len(self.local_chosen()), len(self.chosen_members())
        if n_local == 0 or n_local == n:
            return None
        return [(1 - p.local_weight) / (n - n_local)] * (n - n_local) + [p.local_weight / n_local] * n_local

    def make_fusion(self) -> ScoreFusion:
        """``local_fusion="excess"``: the whole-image members' mean z-score plus ``local_weight``
        times the local members' excess beyond ``local_margin``, raised by ``local_gate`` per unit
        of the whole-image z-score above 0 (:class:`ExcessFusion`); else the weighted mean."""
        p = self.params
        n_local, n = len(self.local_chosen()), len(self.detectors)
        if p.local_fusion != "excess" or n_local in (0, n):
            return super().make_fusion()
        if p.local_gate < 0:
            raise OddeyeError(f"parameter local_gate must be at least 0, found {p.local_gate:g}")
        robust = p.local_scale == "robust"
        weights = self.member_weights()
        return ExcessFusion(n, n_local, p.local_weight, p.local_margin, weights, p.local_gate, robust)

    def fusion_weights(self) -> list[float] | None:
        """``unaligned="local"`` where every local member compares its patches anywhere (a texture,
        not aligned objects): the local members share ``local_weight`` and the whole-image members
        that compare no places (``color-knn``) the rest (the local ones all of it where there are
        none); the members that compare places get no weight (see NOTES.md: on textures they
        score at chance). None otherwise: the fusion's own rule."""
        p = self.params
        n_local, n = len(self.local_chosen()), len(self.detectors)
        if p.unaligned != "local" or n_local in (0, n):
            return None
        if any(m.compares_places() for m in list(self.detectors)[n - n_local :]):
            return None
        free = [not m.compares_places() for m in list(self.detectors)[: n - n_local]]
        share = 1 - p.local_weight if any(free) else 0.0
        whole = [share / sum(free) if f else 0.0 for f in free]
        return whole + [(1 - share) / n_local] * n_local

    def record_params(self) -> dict[str, object]:
        """The members built, as records: the local ones under ``local_members`` (their weight
        depends on it; ``large_local_members`` is recorded empty, its choice already made), every
        other one under ``members`` (the colour or gray ones among them)."""
        record = super().record_params()
        built, n_local = record["members"], len(self.local_chosen())
        split = len(built) - n_local
        return {
            **record,
            "members": built[:split],
            "colour_members": [],
            "gray_members": [],
            "local_members": built[split:],
            "large_local_members": [],
        }
