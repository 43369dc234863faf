"""Scores in and out (the course's CSV) and evaluation against labels (metrics from scikit-learn)."""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from oddeye.errors import InputError
from oddeye.io import atomic_path

if TYPE_CHECKING:
    from oddeye.pixel_metrics import PixelEvaluation

DEFAULT_HEADER = ("Id", "Predicted")  # the 2021 course edition; 2022 used ("ID", "score")
PATH_COLUMN = "path"  # each image's file, relative to the folder, right after the id
NAME_BYTES = "surrogateescape"  # a file name's bytes that are not UTF-8 are written (and read) unchanged
RowsCsv = TypeVar("RowsCsv", bound="ImageRowsCsv")


def image_rows_header(columns: Sequence[str], paths: Sequence[str] | None) -> list[str]:
    """``columns`` (an id column first), with :data:`PATH_COLUMN` after the id when ``paths`` are
    known (images from a folder): ``Id,Predicted`` -> ``Id,path,Predicted``."""
    return [columns[0], PATH_COLUMN, *columns[1:]] if paths is not None else list(columns)


class ImageRowsCsv:
    """A CSV with one row per image: the id (from 0, or ``ids``), the image's path when ``paths`` are given
    (one per image, in order), then the values of ``columns[1:]``. Rows are written as they
    arrive into a temporary file that replaces ``path`` only when the ``with`` block succeeds
    (else it is removed); floats keep full precision."""

    def __init__(
        self,
        path: str | Path,
        columns: Sequence[str],
        paths: Sequence[str] | None = None,
        ids: Sequence[int] | None = None,
    ) -> None:
        self.path, self.columns, self.paths, self.rows = Path(path), tuple(columns), paths, 0
        self.ids = ids  # the rows' ids when they are not 0, 1, ... (a subset of a set's images)

    def __enter__(self: RowsCsv) -> RowsCsv:
        with contextlib.ExitStack() as stack:  # undone if the header cannot be written
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(open(tmp, "w", encoding="utf-8", errors=NAME_BYTES, newline=""))
            self._csv = csv.writer(self._file, lineterminator="\n")
            self._csv.writerow(image_rows_header(self.columns, self.paths))
            self._stack = stack.pop_all()
        return self

    def write_rows(self, rows: Iterable[Sequence[float | int | str]]) -> None:
        """The next images' rows: each the values of ``columns[1:]``, without the id or path
        (floats at full precision, whole numbers as they are, text unchanged)."""
        ids = itertools.count(self.rows)
        self._csv.writerows(self._line(next(ids), row) for row in rows)
        self.rows = next(ids)

    def _line(self, i: int, row: Sequence[float | int | str]) -> list[object]:
        cells = [
            repr(float(v)) if isinstance(v, float | np.floating) else v if isinstance(v, str) else int(v)
            for v in row
        ]
        ident = int(self.ids[i]) if self.ids is not None else i
        return [ident, self.paths[i], *cells] if self.paths is not None else [ident, *cells]

    def __exit__(self, *exc: object) -> bool:
        return self._stack.__exit__(*exc)  # closes the file, then renames (or removes) it


class ScoresCsv(ImageRowsCsv):
    """``Id,Predicted`` rows (``Id,path,Predicted`` with ``paths``) written chunk by chunk as
    scores arrive; see :class:`ImageRowsCsv`."""

    def __init__(
        self, path: str | Path, header: tuple[str, str] = DEFAULT_HEADER, paths: Sequence[str] | None = None
    ) -> None:
        super().__init__(path, header, paths)

    def write(self, scores: np.ndarray) -> None:
        self.write_rows((s,) for s in np.asarray(scores, dtype=np.float64))


def write_scores_csv(
    path: str | Path,
    scores: np.ndarray,
    header: tuple[str, str] = DEFAULT_HEADER,
    paths: Sequence[str] | None = None,
) -> Path:
    """Write ``Id,Predicted`` rows (Id from 0; ``Id,path,Predicted`` with ``paths``) atomically,
    with full float precision."""
    with ScoresCsv(path, header, paths) as out:
        out.write(scores)
    return Path(path)


def write_flags_csv(
    path: str | Path,
    scores: np.ndarray,
    flags: np.ndarray,
    calibrated: np.ndarray | None = None,
    paths: Sequence[str] | None = None,
) -> Path:
    """Write ``Id,score[,calibrated],anomaly`` rows atomically (``path`` after ``Id`` with
    ``paths``): the 0/1 label per image at a threshold."""
    values = (scores, calibrated) if calibrated is not None else (scores,)
    columns = (
        ("Id", "score", "calibrated", "anomaly") if calibrated is not None else ("Id", "score", "anomaly")
    )
    with ImageRowsCsv(path, columns, paths) as out:
        out.write_rows(zip(*(np.asarray(v, dtype=np.float64) for v in values), flags))
    return Path(path)


def read_scores_csv(path: str | Path) -> np.ndarray:
    """Scores from a CSV with a header (``Id,Predicted`` or ``ID,score``, and either with a
    ``path`` column after the id, as written for a folder), ordered by id."""
    return read_scores_table(path)[0]


def read_scores_table(path: str | Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """:func:`read_scores_csv`'s scores, and the ``path`` column in the same order (None when
    the CSV has none: the images were an array)."""
    try:
        with open(path, encoding="utf-8-sig", errors=NAME_BYTES, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
    except FileNotFoundError:
        raise InputError(path, "a CSV file of scores", "nothing there") from None
    except (OSError, csv.Error) as e:
        raise InputError(path, "a CSV file of scores", f"unreadable data ({e})") from None
    if len(rows) < 2:
        raise InputError(path, "a header line and at least one 'id,score' row", f"{len(rows)} line(s)")
    named = len(rows[0]) == 3 and rows[0][1].strip() == PATH_COLUMN
    width, what = (3, "'id,path,score' with numeric ids and scores") if named else (2, "'id,score' numbers")
    ids, scores = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != width:
                raise ValueError
            ids.append(int(row[0]))
            scores.append(float(row[-1]))
        except ValueError:
            raise InputError(path, f"rows of {what}", f"{','.join(row)!r} on line {line}") from None
        if not math.isfinite(scores[-1]):
            raise InputError(path, "finite scores", f"{row[-1]!r} on line {line}")
    order = np.argsort(ids, kind="stable")
    sorted_ids = np.asarray(ids)[order]
    if not np.array_equal(sorted_ids, np.arange(len(ids))):
        raise InputError(path, f"ids 0..{len(ids) - 1}, each once", "gaps or duplicates")
    paths = tuple(rows[1:][i][1] for i in order) if named else None
    return np.asarray(scores, dtype=np.float64)[order], paths


def score_stats(scores: np.ndarray) -> dict[str, float]:
    """Summary of a score sample: count, mean, std and quantiles."""
    q = np.quantile(scores, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0])
    names = ["min", "p05", "p25", "median", "p75", "p95", "p99", "max"]
    out = {"n": int(len(scores)), "mean": float(scores.mean()), "std": float(scores.std())}
    out.update({k: float(v) for k, v in zip(names, q)})
    return out


@dataclass
class Evaluation:
    """Threshold-free quality of a set of scores against 0/1 labels (1 = anomaly)."""

    auroc: float
    average_precision: float
    n_normal: int
    n_anomalous: int
    distributions: dict[str, dict[str, float]] = field(default_factory=dict)
    per_defect: dict[str, float] | None = None  # image ROC AUC per defect type (types known)
    pixel: PixelEvaluation | None = None  # pixel AUROC and AUPRO (masks and maps given)

    def to_text(self) -> str:
        lines = [
            f"ROC AUC            {self.auroc:.4f}",
            f"average precision  {self.average_precision:.4f}   (anomaly = positive class; "
            f"chance = {self.n_anomalous / (self.n_normal + self.n_anomalous):.4f})",
            "",
            f"{'class':<10}{'n':>7}{'mean':>12}{'std':>12}{'p05':>12}{'median':>12}{'p95':>12}",
        ]
        for name, d in self.distributions.items():
            lines.append(
                f"{name:<10}{d['n']:>7d}{d['mean']:>12.5g}{d['std']:>12.5g}"
                f"{d['p05']:>12.5g}{d['median']:>12.5g}{d['p95']:>12.5g}"
            )
        if self.per_defect:
            lines += ["", f"{'defect type':<24}{'ROC AUC':>8}   (its anomalous images vs every normal one)"]
            lines += [f"{name:<24}{auc:>8.4f}" for name, auc in self.per_defect.items()]
        if self.pixel is not None:
            lines += ["", self.pixel.to_text()]
        return "\n".join(lines)


def evaluate(scores: np.ndarray, labels: np.ndarray, source: str = "labels") -> Evaluation:
    """ROC AUC (ties counted as scikit-learn does), average precision and per-class score stats."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # here: scoring alone skips it

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if len(scores) != len(labels):
        raise InputError(source, f"{len(scores)} labels (one per score)", f"{len(labels)}")
    n_anom = int(labels.sum())
    if n_anom in (0, len(labels)):
        raise InputError(source, "both normal (0) and anomalous (1) labels", f"only label {labels[0]}")
    return Evaluation(
        auroc=float(roc_auc_score(labels, scores)),
        average_precision=float(average_precision_score(labels, scores)),
        n_normal=len(labels) - n_anom,
        n_anomalous=n_anom,
        distributions={
            "normal": score_stats(scores[labels == 0]),
            "anomalous": score_stats(scores[labels == 1]),
        },
    )
