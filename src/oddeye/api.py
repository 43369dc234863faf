"""The Python API, mirroring the CLI: ``create``, ``train``, ``load``, ``update``, ``score``,
``evaluate``, ``report``, ``outliers``. The CLI calls these same functions; it only parses
arguments and prints."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from oddeye.data.imageset import ImageSet
from oddeye.data.loaders import load_classes, load_images, load_labels
from oddeye.data.masks import ANOMALOUS, NORMAL, GroundTruth, ground_truth, images_of
from oddeye.errors import OddeyeError, TrainingInterrupted
from oddeye.estimator import Detector, ImagesLike
from oddeye.evaluation import DEFAULT_HEADER, Evaluation, ScoresCsv, read_scores_table, write_flags_csv
from oddeye.evaluation import evaluate as _evaluate
from oddeye.io import atomic_path, check_writable
from oddeye.maps import DEFAULT_PIXEL_RULE, MapFiles, MapWriter, PixelThreshold, evaluate_maps, read_maps
from oddeye.pixel_metrics import per_defect_auroc
from oddeye.runs import CHECKPOINT, prepare_run_dir, save_threshold
from oddeye.settings import resolve_settings
from oddeye.thresholds import Threshold, parse_rule, resolve_threshold
from oddeye.training.distributed import barrier, on_main, world

if TYPE_CHECKING:
    from oddeye.ranking import OutlierResult
    from oddeye.reports.report import ReportFiles

LabelsLike = str | Path | np.ndarray


def create(name: str | None = None, *, config_file: str | Path | None = None, **settings: Any) -> Detector:
    """A new detector by registry name (default: ``default``); ``settings`` mixes training settings
    and detector parameters, resolved as the CLI resolves them (``config_file``, then these).

    >>> det = oddeye.create("cnn-bn", epochs=20, batch_size=256)
    """
    resolved = resolve_settings(name, config_file, explicit=settings, explicit_name="arguments")
    return Detector(resolved.detector, resolved.config, resolved.params)


def train(
    images: ImagesLike,
    detector: str | Detector | None = None,
    out: str | Path | None = None,
    *,
    config_file: str | Path | None = None,
    force: bool = False,
    resume: bool = False,
    size: tuple[int, int] | None = None,
    **settings: Any,
) -> Detector:
    """``oddeye train``: fit ``detector`` (a name, or an unfitted :class:`Detector`) on normal
    ``images`` and, with ``out``, save the run.

    With ``out``, a checkpoint is saved in it after every epoch; ``resume=True`` continues an
    interrupted training there, ``force=True`` replaces what is there.
    """
    if isinstance(detector, Detector):
        if settings or config_file is not None:
            raise OddeyeError("give settings to create() (or a detector name here), not beside a Detector")
        det = detector
    else:
        det = create(detector, config_file=config_file, **settings)
    main = world().main  # under torchrun, rank 0 alone writes the run folder
    checkpoint = None
    if out is not None:  # every rank learns the path, or the error, from rank 0
        on_main(lambda: prepare_run_dir(out, force=force, resume=resume))
        checkpoint = Path(out) / CHECKPOINT
    created = main and checkpoint is not None and not checkpoint.parent.exists()
    try:
        det.fit(images, size=size, checkpoint=checkpoint, resume=resume)
    except TrainingInterrupted as e:
        if checkpoint is None or not checkpoint.exists():
            raise
        raise TrainingInterrupted(f"{e}; to continue, run the same command with --resume") from None
    finally:
        if created and checkpoint.parent.is_dir() and not any(checkpoint.parent.iterdir()):
            checkpoint.parent.rmdir()  # a failure before the first checkpoint leaves no empty folder
    if out is not None and main:
        det.save(out, force=True)  # replaces the folder that held the checkpoint
    barrier()  # the run folder is complete before any rank returns
    return det


def load(run: str | Path, device: str = "auto", progress: bool = True) -> Detector:
    """A fitted detector from a run folder (weights never unpickled)."""
    return Detector.load(run, device=device, progress=progress)


def update(
    run: str | Path,
    images: ImagesLike,
    out: str | Path | None = None,
    *,
    size: tuple[int, int] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """``oddeye update``: new normal ``images`` join the run without training
    (:meth:`Detector.partial_fit`), written as a new run folder ``out`` (default: ``RUN-updated``
    beside it), atomically; returns its path. ``run`` itself is never changed, and an ``out``
    that exists is refused. Detectors that need training refuse in one line."""
    source = Path(run)
    target = Path(out) if out is not None else updated_path(source)
    inside = source.resolve() in (target.resolve(), *target.resolve().parents)
    if target.exists() or inside:
        what = "the run folder (never changed)" if inside else "one there"
        raise OddeyeError(
            f"{target}: expected a new folder for the updated run, found {what}; give another --out"
        )
    det = load(run, device=device, progress=progress)
    det.partial_fit(images, size=size)
    return det.save(target)


def updated_path(run: str | Path) -> Path:
    """runs/default -> runs/default-updated: where ``update`` writes by default."""
    path = Path(run)
    path = path.resolve() if path.name in ("", ".", "..") else path
    return path.with_name(f"{path.name}-updated")


@dataclass
class ScoreResult:
    """What :func:`score` produced: the scores (higher = more anomalous), and with a threshold the
    0/1 flags, the calibrated scale and where each file went."""

    scores: np.ndarray  # (N,) float64
    detector: Detector
    out: Path | None = None
    threshold: Threshold | None = None
    flags: np.ndarray | None = None  # (N,) int8, 1 = anomaly, with a threshold
    calibrated: np.ndarray | None = None  # fraction of held-out normal images scoring lower
    flags_path: Path | None = None
    threshold_saved_to: Path | None = None  # the run's model.json, when a new rule was chosen
    maps: Path | None = None  # the folder of anomaly maps, when asked for
    pixel_threshold: PixelThreshold | None = None  # with maps: the overlays' outline


def flags_path_for(out: str | Path) -> Path:
    """prediction.csv -> prediction.flags.csv"""
    out = Path(out)
    return out.with_name(f"{out.stem}.flags.csv")


def flags_target(out: str | Path | None, flags: str | Path | None, threshold: object) -> str | Path | None:
    """Where score writes its 0/1 flags: ``flags``, else beside ``out`` (:func:`flags_path_for`)
    when a threshold is asked for; None: no flags file."""
    if flags is not None:
        return flags
    return flags_path_for(out) if out is not None and threshold not in (None, False) else None


def score(
    run: str | Path | Detector,
    images: ImagesLike,
    out: str | Path | None = None,
    *,
    header: tuple[str, str] = DEFAULT_HEADER,
    size: tuple[int, int] | None = None,
    threshold: str | bool | Threshold | None = None,
    labels: LabelsLike | None = None,
    flags: str | Path | None = None,
    calibrated: bool = False,
    maps: str | Path | None = None,
    maps_png: bool = False,
    pixel_rule: str = DEFAULT_PIXEL_RULE,
    device: str = "auto",
    progress: bool = True,
    distributed: bool = False,
    save: bool = True,
) -> ScoreResult:
    """``oddeye score``: score ``images`` with a run folder or a fitted detector.

    With ``out``, rows stream into a temporary CSV as they are scored (``Id,Predicted``, or
    ``Id,path,Predicted`` for a folder, the file relative to it; the calibrated scale with
    ``calibrated``), which becomes ``out`` only once everything has worked.
    ``threshold``: True for the run's saved one, a rule (``fpr:0.01``, ``top:0.05``, ``f1`` with
    ``labels``, ``200``), chosen now and saved in the run folder, or a :class:`Threshold`; the 0/1
    flags then go to ``flags`` (default ``NAME.flags.csv`` beside ``out``). ``distributed``: under
    torchrun each rank scores a shard and rank 0 writes the files.
    ``maps``: a folder for each image's anomaly map, streamed as they come (see
    :mod:`oddeye.maps`), with overlays as PNG files with ``maps_png``, whose outlines are at the
    pixel threshold ``pixel_rule`` (``fpr:A`` from the run's held-out images, or a value).
    ``save``: False leaves a rule chosen now unsaved (the caller saves it once its own outputs
    are written, as ``score --report`` does).
    """
    if maps is not None and distributed and world().active:
        raise OddeyeError("--maps: score on one process (not under torchrun) to write anomaly maps")
    if isinstance(threshold, str) and threshold:
        parse_rule(threshold)  # a bad rule is said before anything is scored
    flags_out = flags_target(out, flags, threshold)
    targets = {"--out": out, "--flags": flags_out, "--maps": maps}
    sources = {"the images": images, "the --labels file": labels}
    owner = None if isinstance(run, Detector) else run
    pictures = ("--maps",) if maps_png else ()
    on_main(lambda: check_outputs(targets, sources, owner, ("--maps",), pictures))  # every rank stops
    det = run if isinstance(run, Detector) else load(run, device=device, progress=progress)
    data = det.prepare(images, size=size)
    main = world().main
    label_values = _labels(labels, len(data)) if main else None
    writing = ScoresCsv(out, header, data.paths) if out is not None and main else contextlib.nullcontext()
    pixel, map_writing = None, contextlib.nullcontext()
    if maps is not None:  # the folder is checked, and the threshold chosen, before anything is scored
        pixel = det.pixel_threshold(pixel_rule)
        map_writing = _map_writer(det, data, maps, maps_png, pixel)
    with writing as csv_out, map_writing as maps_out:
        parts = []
        for chunk in _score_chunks(det, data, distributed, maps_out):
            parts.append(chunk)
            if csv_out is not None:
                csv_out.write(det.calibrate(chunk) if calibrated else chunk)
        scores = np.concatenate(parts) if parts else np.zeros(0)
        result = ScoreResult(scores, det, Path(out) if out is not None and main else None)
        if not main:
            return result
        chosen = threshold_for(det, threshold, scores, label_values, source=str(run), unset="none")
    result.threshold, result.pixel_threshold = chosen, pixel
    result.maps = Path(maps) if maps is not None else None
    if calibrated or (chosen is not None and det.heldout_scores_ is not None):
        result.calibrated = det.calibrate(scores)
    if chosen is not None:
        result.flags = chosen.flag(scores)
        if flags_out is not None:
            result.flags_path = Path(flags_out)
            write_flags_csv(result.flags_path, scores, result.flags, result.calibrated, data.paths)
    if save and isinstance(threshold, str) and threshold and not isinstance(run, Detector):
        result.threshold_saved_to = save_threshold(run, chosen)  # last: the run changes once all worked
    return result


def check_outputs(
    targets: dict[str, str | Path | None],
    sources: dict[str, object] | None = None,
    run: str | Path | None = None,
    folders: Collection[str] = (),
    image_folders: Collection[str] = (),
) -> None:
    """Before any work: each output (by option name; ``folders`` name those that are folders, and
    ``image_folders`` those of them that hold image files) is none of the ``sources`` read (by
    what they are: "the images", "--labels"), is not inside the run folder, nor inside another
    output's folder (replaced whole when written), nor (a folder of image files) inside a folder of
    images read, is not another output, and can be written (:func:`check_writable`)."""
    read: dict[Path, str] = {}
    read_folders = []
    for what, source in (sources or {}).items():
        if not isinstance(source, (str, Path)):
            continue
        path = Path(source) if Path(source).exists() else Path(str(source).rsplit(":", 1)[0])  # FILE.npz:NAME
        if path.exists():
            read[path.resolve()] = what
            if path.is_dir():
                read_folders.append(path.resolve())
    out_folders = {Path(t).resolve(): o for o, t in targets.items() if t is not None and o in folders}
    seen: dict[Path, str] = {}
    for option, target in targets.items():
        if target is None:
            continue
        kind = "folder" if option in folders else "file"
        where = Path(target).resolve()
        if where in read:
            raise OddeyeError(
                f"{target}: expected an {option} {kind} apart from {read[where]} read, found it"
            )
        if run is not None and Path(run).is_dir() and Path(run).resolve() in where.parents:
            raise OddeyeError(
                f"{target}: expected an {option} {kind} outside the run folder {run}, found one in it"
            )
        holder = next((out_folders[f] for f in out_folders if f in where.parents), None)
        if holder is not None:  # that folder is replaced whole when it is written
            raise OddeyeError(
                f"{target}: expected an {option} {kind} outside the {holder} folder, found one in it"
            )
        if option in image_folders and any(f in where.parents for f in read_folders):
            raise OddeyeError(
                f"{target}: expected an {option} folder outside the folder of images read (its images "
                "would be read next time), found one in it"
            )
        if where in seen:
            raise OddeyeError(
                f"{target}: expected an {option} {kind} apart from {seen[where]}'s, found the same one"
            )
        seen[where] = option
        if kind == "file":
            check_writable(target)  # nothing written, the run unchanged
        elif where.exists() and not where.is_dir():
            raise OddeyeError(f"{target}: expected an {option} folder, found a file")


def check_class_names(classes: np.ndarray | None, names: Sequence[str] | None) -> None:
    """A name for every class id, or none at all."""
    if classes is not None and names is not None and len(classes) and int(classes.max()) >= len(names):
        found = f"{len(names)} name{'s' if len(names) != 1 else ''}"
        raise OddeyeError(
            f"--class-names: expected a name for each class id 0..{int(classes.max())}, found {found}"
        )


def _map_writer(
    det: Detector, data: ImageSet, folder: str | Path, png: bool, pixel: PixelThreshold | None
) -> MapWriter:
    about = {
        "detector": det.detector,
        "meaning": det.model_.map_meaning,
        "shape": list(det.input_shape_[:2]),
        "images": data.source,
    }
    return MapWriter(folder, data.paths, len(data), png=png, data=data, threshold=pixel, about=about)


def _score_chunks(
    det: Detector, data: ImageSet, distributed: bool, maps_out: MapWriter | None
) -> Iterator[np.ndarray]:
    """Scores batch by batch; with ``maps_out``, each batch's maps written there meanwhile."""
    if maps_out is None:
        yield from det.iter_scores(data, distributed=distributed)
        return
    for batch in det.iter_infer(data, maps=True):
        if batch.anomaly_maps is None:
            raise OddeyeError(f"--maps: {det.detector} gives no anomaly maps")
        maps_out.write(batch.anomaly_maps)
        yield batch.scores


def evaluate(
    scores: str | Path | np.ndarray,
    labels: LabelsLike | None = None,
    *,
    dataset: str | Path | None = None,
    masks: str | Path | np.ndarray | None = None,
    maps: str | Path | None = None,
) -> Evaluation:
    """``oddeye evaluate``: ROC AUC, average precision and score distributions per class, and
    with defect types known (an MVTec AD ``dataset``, or labelled images in folders) the ROC AUC
    per type. ``scores``: a CSV (its path column is checked against the data set) or an array.

    The ground truth is ``labels``, or the ``dataset`` (an MVTec AD category folder: labels,
    defect types and masks from its layout); ``masks`` (a folder matched to the CSV's paths by
    file name, or (N, H, W) as .npy or an array) go with ``labels``. ``maps``: the folder
    ``score --maps`` wrote for these scores: pixel AUROC and AUPRO against the masks.
    """
    return evaluate_truth(*scores_and_truth(scores, labels, dataset=dataset, masks=masks), maps=maps)


def scores_and_truth(
    scores: str | Path | np.ndarray,
    labels: LabelsLike | None = None,
    *,
    dataset: str | Path | None = None,
    masks: str | Path | np.ndarray | None = None,
) -> tuple[np.ndarray, GroundTruth]:
    """The scores of a CSV (or an array) and the ground truth of their images, checked against
    each other (the CSV's path column against the data set's images)."""
    if isinstance(scores, (str, Path)):
        values, paths = read_scores_table(scores)
    else:
        values, paths = np.asarray(scores, dtype=np.float64), None
    source = str(scores) if isinstance(scores, (str, Path)) else "<scores>"
    truth = ground_truth(
        dataset, n=len(values), paths=paths, labels=labels, masks=masks, scores_source=source
    )
    return values, truth


def evaluate_truth(scores: np.ndarray, truth: GroundTruth, maps: str | Path | None = None) -> Evaluation:
    """Image metrics of ``scores`` against ``truth``, per defect type when types are known, and
    with a folder of ``maps`` the pixel metrics (:func:`oddeye.maps.evaluate_maps`)."""
    result = _evaluate(scores, truth.labels, truth.source)
    if any(d not in (NORMAL, ANOMALOUS) for d in truth.defects):
        result.per_defect = per_defect_auroc(scores, truth.labels, truth.defects)
    if maps is not None:
        result.pixel = evaluate_maps(read_maps(maps), truth)
    return result


def report(
    run: str | Path | Detector | None,
    images: ImagesLike | None,
    out: str | Path,
    *,
    scores: np.ndarray | None = None,
    labels: LabelsLike | None = None,
    classes: LabelsLike | None = None,
    class_names: list[str] | None = None,
    threshold: str | Threshold | None = None,
    size: tuple[int, int] | None = None,
    scores_source: str | None = None,
    truth: GroundTruth | None = None,
    maps: str | Path | MapFiles | None = None,
    evaluation: Evaluation | None = None,
    progress: bool = True,
) -> ReportFiles:
    """``oddeye report``: an HTML report (and its figures as PNG files) of a run on ``images``.

    ``scores`` skips re-scoring (e.g. from a CSV); without ``run`` and ``images`` the report has the
    score sections only. ``threshold``: a rule ('fpr:0.01', 'top:0.05', 'f1', '200') or a
    :class:`Threshold`; by default the run's own. With ``truth`` (masks and image files, as an
    MVTec AD category gives) and ``maps`` (the folder ``score --maps`` wrote), the most anomalous
    images are shown at full size with their true and found regions; ``evaluation`` adds the
    per-defect and pixel metrics to the summary.
    """
    det = run if isinstance(run, Detector) or run is None else load(run, progress=progress)
    data = det.prepare(images, size=size) if det is not None and images is not None else None
    if scores is None:
        if det is None or data is None:
            raise ValueError("report() needs scores, or a run and images to score")
        scores = det.infer(data).scores
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if data is not None and len(data) != n:
        raise OddeyeError(f"{data.source}: expected {n} images (one per score), found {len(data)}")
    label_values = _labels(labels, n)
    class_ids = None if classes is None else load_classes(classes, n)
    check_class_names(class_ids, class_names)
    threshold = threshold_for(det, threshold, scores, label_values, source=str(run))
    from oddeye.reports.report import ReportInputs, write_report  # plotting: only when reporting

    inputs = ReportInputs(
        scores=scores,
        scores_source=scores_source or (data.source if data is not None else "<scores>"),
        labels=label_values,
        classes=class_ids,
        class_names=class_names,
        det=det,
        data=data,
        threshold=threshold,
        title=f"oddeye report: {det.detector}" if det is not None else "oddeye report",
        truth=truth,
        maps=read_maps(maps) if isinstance(maps, (str, Path)) else maps,
        evaluation=evaluation,
    )
    return write_report(out, inputs, progress=progress)


def outliers(
    images: ImagesLike,
    out: str | Path | None = None,
    csv: str | Path | None = None,
    *,
    detector: str | Detector | None = None,
    top: int = 32,
    size: tuple[int, int] | None = None,
    progress: bool = True,
    **settings: Any,
) -> OutlierResult:
    """``oddeye outliers``: every image of ``images`` ranked by how odd it is among the others
    (higher = odder), exact and near duplicates grouped, unreadable files of a folder skipped and
    listed; no model is kept (see :mod:`oddeye.ranking` and :mod:`oddeye.data.duplicates`).

    ``detector``: a memory-bank detector's name (default: ``default``) or an unfitted
    :class:`Detector`; ``settings`` as for :func:`create` (contamination and the held-out share are
    always 0 here: every image is in the banks). ``out``: an HTML page of the ``top`` oddest images
    beside their anomaly maps, the duplicate groups and the unreadable files; ``csv``:
    ``Id,score,duplicate_group,duplicate`` rows (``Id,path,...`` for a folder) in the input's
    order. Both are written only once everything has worked.
    """
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise OddeyeError(f"top: expected a positive number of images for the gallery, found {top!r}")
    check_outputs({"--out": out, "--csv": csv}, {"the images": images})  # before any work
    if isinstance(detector, Detector):
        if settings:
            raise OddeyeError("give settings to create() (or a detector name here), not beside a Detector")
        det = detector
    else:
        det = create(detector, **settings)
    from oddeye.ranking import rank_outliers, write_csv

    # an MVTec AD category: its training images, the set that needs cleaning
    data = load_images(images_of(images, "train"), size=size, progress=progress, skip_unreadable=True)
    result = rank_outliers(data, det, top=top, progress=progress)
    page = None
    if out is not None:
        from oddeye.reports.outliers import render_outliers_html  # plotting: only with a report

        page = render_outliers_html(result, data)
    with contextlib.ExitStack() as done:  # both files, or neither
        if page is not None:
            tmp = done.enter_context(atomic_path(out))  # type: ignore[arg-type]
            tmp.write_text(page, encoding="utf-8")
            result.out = Path(out)  # type: ignore[arg-type]
        if csv is not None:
            result.csv = write_csv(csv, result)
    return result


def _labels(labels: LabelsLike | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    return load_labels(labels, n=n)


def threshold_for(
    det: Detector | None,
    request: str | bool | Threshold | None,
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    source: str = "model.json",
    unset: Literal["saved", "none"] = "saved",
) -> Threshold | None:
    """The threshold ``request`` asks for (read by :func:`oddeye.thresholds.resolve_threshold`)
    with what the run ``det`` knows: its saved threshold and its held-out scores; without a run,
    rules on the ``scores`` and ``labels`` alone. ``unset``: what no request (None) means: the
    run's saved threshold if it has one (``report``, ``evaluate``), or none (``score``, which flags
    only when asked). ``source`` names the run in the error when a saved one is asked for and
    there is none."""
    run: dict[str, Any] = {}
    if det is not None:
        det._check_fitted()
        run = {"saved": det.threshold_, "heldout": det.heldout_scores_, "heldout_basis": det.heldout_basis_}
    if request is None and unset == "saved":
        request = run.get("saved")
    return resolve_threshold(request, scores=scores, labels=labels, source=source, **run)
