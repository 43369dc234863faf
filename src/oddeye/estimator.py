"""The scikit-learn style estimator that every detector is used through."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oddeye._version import __version__
from oddeye.config import TrainConfig
from oddeye.data.imageset import ImageSet, Normalisation, as_imageset, shape_text
from oddeye.data.loaders import available_memory, colour_file, load_images
from oddeye.data.masks import Split, images_of
from oddeye.detectors import DEFAULT_DETECTOR, get_spec
from oddeye.detectors.base import AnomalyModel, needs_training
from oddeye.detectors.memory import spaced
from oddeye.detectors.registry import Build, record_of
from oddeye.errors import InputError, OddeyeError, TrainingInterrupted, first_line
from oddeye.evaluation import score_stats
from oddeye.maps import DEFAULT_PIXEL_RULE, PixelThreshold, pixel_threshold
from oddeye.progress import line as progress_line
from oddeye.progress import mode as progress_mode
from oddeye.runs import HELDOUT, RunRecord, TrainingInfo, read_run, versions, write_run
from oddeye.scoring import InferenceResult, infer, iter_results, iter_scores
from oddeye.thresholds import Threshold, calibrate, choose_threshold, parse_rule
from oddeye.training.budget import Budget
from oddeye.training.checkpoint import Checkpoint, data_fingerprint
from oddeye.training.device import choose_device, choose_precision
from oddeye.training.distributed import world
from oddeye.training.loop import EpochRecord, SetAside, fit_model, trained_parts
from oddeye.training.update import ADDED_ONLY, Absorbed, absorb_images, bank_images, images_sha256

ImagesLike = str | Path | np.ndarray | ImageSet
NO_HELDOUT = "normal training images (no held-out split: optimistic)"
UNIT = Normalisation(0.0, 1.0)  # floating-point images within [0, 1]
BYTES = Normalisation(0.0, 255.0)  # uint8 images, or floating-point ones within [0, 255]


SAMPLE_IMAGES, SAMPLE_BYTES = 64, 16 * 2**20  # held-out images kept in a run, for export checks


def heldout_sample(data: ImageSet, heldout: np.ndarray | None) -> np.ndarray | None:
    """Up to ``SAMPLE_IMAGES`` held-out images (at most ``SAMPLE_BYTES``), as stored, NHWC: what
    ``oddeye export`` checks an exported model against."""
    if heldout is None:
        return None
    per_image = max(1, int(np.prod(data.shape)) * data.array.dtype.itemsize)
    n = max(1, min(SAMPLE_IMAGES, len(heldout), SAMPLE_BYTES // per_image))
    return data.batch(np.asarray(heldout[:n])).permute(0, 2, 3, 1).contiguous().numpy()


def set_aside_sample(data: ImageSet, set_aside: SetAside | None) -> np.ndarray | None:
    """The most atypical of the set-aside images (as many as ``heldout_sample`` keeps), NHWC as
    stored, in set_aside.csv's order: the report's gallery."""
    if set_aside is None or not len(set_aside.indices):
        return None
    oddest = set_aside.indices[np.argsort(-set_aside.scores, kind="stable")]
    return heldout_sample(data, oddest)


def _paths_of(data: ImageSet, set_aside: SetAside | None) -> tuple[str, ...] | None:
    if set_aside is None or data.paths is None:
        return None
    return tuple(data.paths[i] for i in set_aside.indices)


def _check_fits(need: int, record: RunRecord) -> None:
    """Refuse, before anything is allocated, a record whose model needs more memory than is free
    (a damaged or hostile model.json may ask for any size)."""
    free = available_memory()
    if need > free:
        what = f"{record.detector} for {shape_text(record.input_shape)} images"
        raise OddeyeError(
            f"expected a model that fits in the {free / 1e9:.3g} GB of free memory, "
            f"found a build of {what} that needs {need / 1e9:.3g} GB; nothing was allocated"
        )


class Detector:
    """An anomaly detector: ``fit`` on normal images, then ``decision_function`` (or ``score``) on
    new ones: one score per image, higher = more anomalous.

    ``detector`` names a registered family (see ``oddeye detectors``), ``params`` its parameters
    (unset ones take the family's defaults at ``fit``) and ``config`` the training settings (None:
    the defaults). The three are stored as given, as scikit-learn asks: ``get_params`` and
    ``set_params`` work, so ``sklearn.base.clone`` and ``GridSearchCV`` do; ``set_params`` also takes
    a detector parameter or a training setting by its own name (``set_params(k=5, epochs=3)``).
    Fitted state ends in ``_``: ``build_`` records how the model was built, every parameter
    resolved, and a saved run rebuilds from that record alone. The names PyOD users know:
    ``decision_function``, ``decision_scores_``, ``threshold_``, ``labels_``, ``predict``.
    """

    def __init__(
        self,
        detector: str = DEFAULT_DETECTOR,
        config: TrainConfig | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.detector = detector
        self.config = config
        self.params = params

    def __repr__(self) -> str:
        return f"Detector({self.detector!r}, params={self._params()})"

    # -- scikit-learn's estimator protocol, without importing scikit-learn (a second at start-up)
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments, as given (scikit-learn's ``get_params``)."""
        return {"detector": self.detector, "config": self.config, "params": self.params}

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's default estimator tags (no target needed): what its meta-estimators ask."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False))

    def _settings(self) -> TrainConfig:
        """The settings in force: ``config``; without one, those it was fitted with, or the defaults."""
        if self.config is not None:
            return self.config
        return getattr(self, "config_", None) or TrainConfig()

    def _params(self) -> dict[str, Any]:
        return dict(self.params or {})

    def resolved_params(self) -> dict[str, Any]:
        """Every parameter of the detector as it would be built: those given, the rest at the code's
        current defaults (plain JSON values; derived ones, computed from the images' shape at
        build time, are not among them)."""
        return get_spec(self.detector).resolve(self._params()).to_dict()

    def set_params(self, **values: Any) -> Detector:
        """Set ``detector``, ``config`` or ``params`` (scikit-learn's own), or any training setting
        or parameter of the detector by its name (checked as ``oddeye.create`` checks them);
        returns self. The stored objects are replaced, never changed in place."""
        for key in ("detector", "config", "params"):
            if key in values:
                setattr(self, key, values.pop(key))
        if not values:
            return self
        training = {k: v for k, v in values.items() if k in TrainConfig.fields()}
        arch = {k: v for k, v in values.items() if k not in training}
        if arch:
            spec = get_spec(self.detector)
            spec.resolve({**self._params(), **arch})  # unknown names and bad values fail here
            self.params = {**self._params(), **arch}
        if training:
            self.config = self._settings().replace(**training)
        return self

    # -- construction -------------------------------------------------------------------------
    def build(self, shape: tuple[int, int, int]) -> AnomalyModel:
        """The untrained model for images of ``shape`` (H, W, C); ``record_of(model)`` says how."""
        return get_spec(self.detector).build(shape, self._params(), epochs=self._settings().epochs)

    def n_parameters(self, shape: tuple[int, int, int]) -> int:
        return sum(p.numel() for p in self.build(shape).parameters())

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        images: ImagesLike,
        y: Any = None,
        *,
        size: tuple[int, int] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> Detector:
        """Train from scratch on normal ``images`` (path, array or ImageSet); returns self. ``y`` is
        ignored (unsupervised; there for scikit-learn's meta-estimators).

        ``checkpoint``: a file to save the training state to after every epoch; with ``resume``,
        training continues from it (refused if the settings or data differ) and ends with the
        same weights as an uninterrupted run. Ctrl-C raises :class:`TrainingInterrupted` once the
        last finished epoch is saved.
        """
        config = self._settings()
        data = load_images(images_of(images, "train"), size=size, progress=config.progress)
        device = choose_device(config.device)
        torch.manual_seed(config.seed)
        model = self.build(data.shape)
        build = record_of(model)
        precision = choose_precision(config.precision, device, model.cpu_bf16)
        ckpt = None
        if checkpoint is not None:
            ckpt = Checkpoint(checkpoint, self._fingerprint(build, data), resume=resume)
        budget = self._budget(model)
        start = time.perf_counter()
        try:
            result = fit_model(model, data, config, device, precision, ckpt, budget=budget)
        except KeyboardInterrupt:
            if ckpt is None or not ckpt.meta:
                raise TrainingInterrupted(
                    "training interrupted before any epoch finished: nothing saved"
                ) from None
            raise TrainingInterrupted(
                f"training interrupted; the last finished epoch is saved in {checkpoint}"
            ) from None
        seconds = time.perf_counter() - start
        heldout = result.val_indices if len(result.val_indices) else None
        batch, progress = config.score_batch_size, config.progress
        desc = "scoring held-out images" if heldout is not None else "scoring training images"
        cached = getattr(model, "heldout_fused_", None)  # an ensemble of banks scored them as it fitted
        if heldout is not None and cached is not None and len(cached) == len(heldout):
            scores = cached.numpy()
        else:
            scores = infer(model, data, device, batch, indices=heldout, progress=progress, desc=desc).scores
        basis = HELDOUT if heldout is not None else NO_HELDOUT
        record = RunRecord(
            build=build,
            config=config,
            input_shape=data.shape,
            normalisation=data.normalisation,
            n_parameters=sum(p.numel() for p in model.parameters()),
            training=TrainingInfo(
                n_images=len(data),
                device=str(device),
                precision=precision,
                seconds=round(seconds, 3),
                epochs_run=len(result.history),
                best_epoch=result.best_epoch,
                stopped_early=result.stopped_early,
                plan=budget.to_dict() if budget is not None else None,
            ),
            history=result.history,
            member_histories=result.member_histories(),
            heldout_scores=scores,
            heldout_sample=heldout_sample(data, heldout),
            heldout_stats=score_stats(scores),
            heldout_basis=basis,
            threshold=choose_threshold(config.threshold, heldout=scores, heldout_basis=basis),
            versions=versions(),
            set_aside=result.set_aside,
            set_aside_paths=_paths_of(data, result.set_aside),
            set_aside_sample=set_aside_sample(data, result.set_aside),
        )
        self._set_fitted(record, model, device)
        self.fit_seconds_ = seconds
        return self

    def partial_fit(
        self, images: ImagesLike, y: Any = None, *, size: tuple[int, int] | None = None
    ) -> Detector:
        """New normal ``images`` join the fitted detector without training (``oddeye update``;
        scikit-learn's ``partial_fit``, so an unfitted detector is fitted on them); returns self.
        ``y`` is ignored.

        The images are split by the run's ``val_fraction`` and seed: memory banks absorb most of
        them (within ``max_bank``, old and new in proportion), and an ensemble's fusion scales and
        the operating threshold (its rule; a ``top:Q`` one becomes the settings' rule) are fitted
        again on the held-out images: the run's kept sample and the new held-out ones, which
        become the held-out scores and the next kept sample (see :mod:`oddeye.training.update`).
        ``updates_`` gains what was added. A detector that needs training raises a one-line
        OddeyeError saying what to do instead, before anything is read.
        """
        if not hasattr(self, "model_"):
            return self.fit(images, size=size)
        refusal = needs_training(self.model_)
        if refusal is not None:
            raise OddeyeError(refusal)
        record, config = self.record_, self._settings()
        data = self.prepare(images, size=size, split="train")
        start = time.perf_counter()
        digest = images_sha256(data)
        config = record.config
        seen = bank_images(record.training.n_images, record.updates, config.val_fraction, config.max_heldout)
        done = absorb_images(self.model_, data, self._kept_sample(), seen, config, self.device_)
        entry = {
            "added": len(data),
            "absorbed": len(done.absorbed),
            "held_out": len(done.held_out),
            "sha256": digest,
            "source": str(images) if isinstance(images, (str, Path)) else data.source,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "oddeye": __version__,
            "seconds": round(time.perf_counter() - start, 3),
        }
        self._set_fitted(self._updated(record, data, done, entry), self.model_, self.device_)
        return self

    def _kept_sample(self) -> ImageSet | None:
        """The held-out images the run kept, as an image set on the run's scale (None: none)."""
        sample = self.record_.heldout_sample
        if sample is None or len(sample) == 0:
            return None
        kept = as_imageset(sample, "<the run's held-out sample>")
        return dataclasses.replace(kept, normalisation=self.normalisation_)

    def _updated(self, record: RunRecord, data: ImageSet, done: Absorbed, entry: dict[str, Any]) -> RunRecord:
        """The run record after an update: held-out scores, sample and threshold refitted, the
        update recorded; the analysis threshold is dropped (chosen on scores of another scale)."""
        saved = self.threshold_  # the operating threshold in force (save() writes this one)
        rule = saved.rule if saved is not None and parse_rule(saved.rule)[0] in ("value", "fpr") else None
        scores, basis = done.scores, done.basis
        before = record.heldout_scores
        # nothing held out now or when the run was trained (val_fraction=0): the run's scores stay,
        # with the new images' beside them, and so does its threshold; one chosen on the few images
        # just added, each scored in a bank that holds it, would fall towards zero
        kept = done.basis == ADDED_ONLY and before is not None and len(before) > 0
        if kept:
            scores = np.concatenate([np.asarray(before, np.float64), done.scores])
            basis = f"{record.heldout_basis}; and {len(done.scores)} {ADDED_ONLY}"
        if kept and saved is not None:
            threshold = saved
        else:
            threshold = choose_threshold(rule or record.config.threshold, heldout=scores, heldout_basis=basis)
        new = data.batch(done.held_out).permute(0, 2, 3, 1).numpy() if len(done.held_out) else None
        parts = [a for a in (record.heldout_sample, new) if a is not None and len(a)]
        both = as_imageset(np.concatenate(parts), "<held-out images>") if parts else None
        sample = heldout_sample(both, spaced(len(both), SAMPLE_IMAGES)) if both is not None else None
        return dataclasses.replace(
            record,
            training=dataclasses.replace(record.training, n_images=record.training.n_images + len(data)),
            heldout_scores=scores,
            heldout_sample=sample,
            heldout_stats=score_stats(scores),
            heldout_basis=basis,
            threshold=threshold,
            updates=[*record.updates, entry],
            extra={k: v for k, v in record.extra.items() if k != "analysis_threshold"},
        )

    def _budget(self, model: AnomalyModel) -> Budget | None:
        """The time budget's plan for training ``model`` (None without a budget), printed."""
        config = self._settings()
        if config.budget is None:
            return None
        budget = Budget.plan(config.budget, [(name, 1.0) for name in trained_parts(model)])
        if config.progress and world().main and progress_mode(True) != "off":
            progress_line(budget.describe())
        return budget

    def _set_fitted(self, record: RunRecord, model: AnomalyModel, device: torch.device) -> None:
        """The one place fitted state is set, from a run record and its built model: by ``fit``
        after training and by :meth:`load` from a run folder."""
        self.record_ = record
        self.config_: TrainConfig = record.config  # the settings it was fitted (or is used) with
        self.build_: Build = record.build
        self.device_ = device
        self.model_ = model.to(device).eval()
        self.input_shape_ = record.input_shape
        self.normalisation_ = record.normalisation
        self.precision_ = record.training.precision
        self.fit_seconds_ = record.training.seconds
        self.n_train_images_ = record.training.n_images
        self.history_: list[EpochRecord] = record.history
        self.member_histories_ = record.member_histories
        self.best_epoch_ = record.training.best_epoch
        self.stopped_early_ = record.training.stopped_early
        self.heldout_scores_: np.ndarray | None = record.heldout_scores
        self.decision_scores_ = record.heldout_scores  # PyOD's name: scores of normal training images
        self.heldout_stats_ = record.heldout_stats
        self.heldout_basis_ = record.heldout_basis
        self.threshold_: Threshold | None = record.threshold
        self.updates_: list[dict[str, Any]] = record.updates  # images added since (partial_fit)

    @property
    def labels_(self) -> np.ndarray | None:
        """PyOD's ``labels_``: 0/1 of the held-out normal training images at ``threshold_``."""
        self._check_fitted()
        if self.threshold_ is None or self.decision_scores_ is None:
            return None
        return self.threshold_.flag(self.decision_scores_)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", progress: bool = True) -> Detector:
        """A fitted detector from a run folder, rebuilt from its record alone (weights never
        unpickled), on ``device``."""
        record, state = read_run(run_dir, device=device, progress=progress)
        meta = Path(run_dir) / "model.json"
        try:
            spec = get_spec(record.detector)
            _check_fits(spec.build_bytes(record.build, record.input_shape), record)
            model = spec.rebuild(record.build, record.input_shape)
        except ValueError as e:
            raise OddeyeError(f"{meta}: expected a complete build record, found a problem: {e}") from None
        except OddeyeError as e:
            raise OddeyeError(f"{meta}: {e}") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = first_line(e)
            weights = Path(run_dir) / "model.safetensors"
            raise OddeyeError(
                f"{weights}: expected weights matching {record.detector}, found: {first}"
            ) from None
        if record.threshold is None and record.heldout_scores is not None:  # runs from before thresholds
            rule = record.config.threshold
            record.threshold = choose_threshold(
                rule, heldout=record.heldout_scores, heldout_basis=record.heldout_basis
            )
        record.build = record_of(model)  # complete: parameters the file lacked at their ``before``
        det = cls(record.detector, record.config, record.build.refit_params())
        det._set_fitted(record, model, choose_device(record.config.device))
        return det

    # -- thresholds ---------------------------------------------------------------------------
    def choose_threshold(
        self, rule: str, scores: np.ndarray | None = None, labels: np.ndarray | None = None
    ) -> Threshold:
        """A :class:`~oddeye.thresholds.Threshold` by ``rule`` ('200', 'fpr:0.01', 'top:0.05', 'f1');
        ``fpr`` uses the held-out normal training images, ``top`` the ``scores``, ``f1`` the labels."""
        self._check_fitted()
        return choose_threshold(
            rule,
            heldout=self.heldout_scores_,
            heldout_basis=self.heldout_basis_,
            scores=scores,
            labels=labels,
        )

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        """Scores on the calibrated scale: the fraction of held-out normal images scoring lower."""
        self._check_fitted()
        if self.heldout_scores_ is None or len(self.heldout_scores_) == 0:
            raise OddeyeError("calibrated scores need the run's held-out scores; this run has none")
        return calibrate(scores, self.heldout_scores_)

    def predict(self, images: ImagesLike, size: tuple[int, int] | None = None) -> np.ndarray:
        """0/1 per image (1 = anomaly) at the fitted ``threshold_``."""
        self._check_fitted()
        if self.threshold_ is None:
            raise OddeyeError("this run has no threshold: choose one with choose_threshold()")
        return self.threshold_.flag(self.score(images, size=size))

    def _fingerprint(self, build: Build, data: ImageSet) -> dict[str, Any]:
        """What a checkpoint must have been made with to be resumed: the resolved build, the
        settings that shape training, and the data."""
        volatile = ("progress", "device", "score_batch_size", "threshold")
        config = {k: v for k, v in self._settings().to_dict().items() if k not in volatile}
        build_json = json.loads(json.dumps(build.to_dict()))
        return {"build": build_json, "config": config, "data": data_fingerprint(data)}

    def training_summary(self) -> str:
        """One line on how training went (epochs and stopping, a memory bank, or ensemble members)."""
        self._check_fitted()
        members = self.model_.members()
        if members:
            names = ", ".join(m.label or type(m).__name__ for m in members)
            return f"ensemble of {len(members)} members ({names}), {self.fit_seconds_:.1f} s"
        if not self.history_:
            return f"no training loop (memory bank), {self.fit_seconds_:.1f} s"
        best = self.history_[max(self.best_epoch_, 1) - 1]
        stop = "converged (early stop)" if self.stopped_early_ else "reached the epoch cap"
        cap, budget = self.build_.epoch_cap, self.config_.budget
        if not self.stopped_early_ and budget and cap and len(self.history_) < cap:
            stop = "used its time budget"
        return (
            f"{len(self.history_)} epochs, {stop}, kept epoch {self.best_epoch_} "
            f"(held-out loss {best.val_loss:.5g}), {self.fit_seconds_:.1f} s"
        )

    # -- inference ----------------------------------------------------------------------------
    def decision_function(self, images: ImagesLike, size: tuple[int, int] | None = None) -> np.ndarray:
        """One float per image, higher = more anomalous (PyOD's name; the same as :meth:`score`)."""
        return self.infer(images, size=size).scores

    def score(self, images: ImagesLike, size: tuple[int, int] | None = None) -> np.ndarray:
        """One float per image, higher = more anomalous (note: scikit-learn's ``score`` returns one
        number; give ``GridSearchCV`` a ``scoring`` function, e.g. ROC AUC of ``decision_function``).

        For the autoencoders: sqrt of the per-image sum of squared reconstruction error over
        pixels and channels, in the [-1, 1] normalised space (the course notebook's score).
        """
        return self.infer(images, size=size).scores

    def infer(
        self,
        images: ImagesLike,
        size: tuple[int, int] | None = None,
        maps: bool = False,
        indices: np.ndarray | None = None,
        distributed: bool = False,
    ) -> InferenceResult:
        """Scores, and with ``maps=True`` per-pixel anomaly maps and reconstructions (of ``indices``
        only, when given). ``distributed``: shard the scoring over torchrun's ranks."""
        return self._infer(self.prepare(images, size=size), maps, indices, distributed)

    def prepare(
        self, images: ImagesLike, size: tuple[int, int] | None = None, split: Split = "test"
    ) -> ImageSet:
        """``images`` loaded and checked against the training shape and value range, with the
        training images' scaling; an MVTec AD category folder means its ``split``'s images."""
        self._check_fitted()
        data = load_images(images_of(images, split), size=size, progress=self._settings().progress)
        if data.shape != self.input_shape_:
            (h, w, c), source = self.input_shape_, data.source
            hint = f"; --size {h}x{w} resizes them" if data.shape[:2] != (h, w) else ""
            colour = colour_file(data) if c == 1 and data.shape[2] == 3 and data.shape[:2] == (h, w) else None
            if colour is not None:  # one colour file among gray ones makes a folder colour: name it
                source, hint = colour, " (a colour image among gray ones makes the folder colour)"
            raise InputError(
                source,
                f"images of {shape_text(self.input_shape_)} (HxWxC, as the model was trained){hint}",
                f"{shape_text(data.shape)}",
            )
        lo, hi = self.normalisation_.lo, self.normalisation_.hi
        if data.normalisation.lo < lo or data.normalisation.hi > hi:
            found = f"values spanning [{data.normalisation.lo:g}, {data.normalisation.hi:g}]"
            raise InputError(data.source, f"values within [{lo:g}, {hi:g}] like the training images", found)
        if data.normalisation == UNIT and self.normalisation_ == BYTES:  # would be divided by 255 again
            found = "floating-point values within [0, 1] (multiply them by 255)"
            raise InputError(data.source, f"values within [{lo:g}, {hi:g}] like the training images", found)
        return dataclasses.replace(data, normalisation=self.normalisation_)  # paths and all

    def iter_scores(self, data: ImageSet, distributed: bool = False) -> Iterator[np.ndarray]:
        """Scores of a prepared image set (:meth:`prepare`) batch by batch, in order, for writing
        as they come; ``distributed``: shard over torchrun's ranks (then one chunk at the end)."""
        batch, progress = self._settings().score_batch_size, self._settings().progress
        return iter_scores(self.model_, data, self.device_, batch, None, progress, distributed)

    def iter_infer(self, data: ImageSet, maps: bool = True) -> Iterator[InferenceResult]:
        """Results of a prepared image set (:meth:`prepare`) batch by batch, in order: scores and,
        with ``maps``, anomaly maps (B, H, W) at the model's input size; for writing as they come."""
        batch, progress = self._settings().score_batch_size, self._settings().progress
        return iter_results(self.model_, data, self.device_, batch, maps, None, progress)

    def pixel_threshold(self, rule: str = DEFAULT_PIXEL_RULE) -> PixelThreshold | None:
        """A map value for flagging pixels without anomaly labels: ``fpr:A`` is the value exceeded
        by a share A of the pixels of the run's held-out normal images (its kept sample); a number
        is taken as it is. None: the run kept no held-out images, or the family has no maps."""
        self._check_fitted()
        sample = self._kept_sample()
        maps = self._infer(sample, maps=True).anomaly_maps if sample is not None else None
        return pixel_threshold(rule, maps)

    def _infer(
        self, data: ImageSet, maps: bool = False, indices: np.ndarray | None = None, distributed: bool = False
    ) -> InferenceResult:
        batch, progress = self._settings().score_batch_size, self._settings().progress
        return infer(self.model_, data, self.device_, batch, maps, indices, progress, distributed)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise OddeyeError("this detector is not fitted yet: call fit() or load a run first")

    # -- persistence --------------------------------------------------------------------------
    def save(self, run_dir: str | Path, force: bool = False) -> Path:
        """Write the run folder (weights, metadata, history, training curve); see ``oddeye.runs``."""
        self._check_fitted()
        record = self.record_
        record.threshold = self.threshold_
        return write_run(record, self.model_.state_dict(), run_dir, force=force)
