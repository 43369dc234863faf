"""Scores in and out (the course's CSV) and evaluation against labels (metrics from scikit-learn)."""

from __future__ import annotations

import contextlib
import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oddeye.errors import InputError
from oddeye.io import atomic_path

DEFAULT_HEADER = ("Id", "Predicted")  # the 2021 course edition; 2022 used ("ID", "score")


def write_scores_csv(path: str | Path, scores: np.ndarray, header: tuple[str, str] = DEFAULT_HEADER) -> Path:
    """Write ``Id,Predicted`` rows (Id from 0) atomically, with full float precision."""
    with ScoresCsv(path, header) as out:
        out.write(scores)
    return Path(path)


class ScoresCsv:
    """``Id,Predicted`` rows written chunk by chunk as scores arrive, into a temporary file that
    replaces ``path`` only when the ``with`` block succeeds (else it is removed)."""

    def __init__(self, path: str | Path, header: tuple[str, str] = DEFAULT_HEADER) -> None:
        self.path, self.header, self.rows = Path(path), header, 0

    def __enter__(self) -> ScoresCsv:
        with contextlib.ExitStack() as stack:  # undone if the header cannot be written
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(open(tmp, "w", newline=""))
            self._file.write(f"{self.header[0]},{self.header[1]}\n")
            self._stack = stack.pop_all()
        return self

    def write(self, scores: np.ndarray) -> None:
        first = self.rows
        self._file.writelines(f"{first + i},{float(s)!r}\n" for i, s in enumerate(scores))
        self.rows += len(scores)

    def __exit__(self, *exc: object) -> bool:
        return self._stack.__exit__(*exc)  # closes the file, then renames (or removes) it


def write_flags_csv(
    path: str | Path, scores: np.ndarray, flags: np.ndarray, calibrated: np.ndarray | None = None
) -> Path:
    """Write ``Id,score[,calibrated],anomaly`` rows atomically: the 0/1 label per image at a threshold."""
    columns = zip(scores, calibrated) if calibrated is not None else ((s,) for s in scores)
    head = "Id,score,calibrated,anomaly" if calibrated is not None else "Id,score,anomaly"
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(head + "\n")
        f.writelines(
            f"{i},{','.join(repr(float(v)) for v in vals)},{int(flag)}\n"
            for i, (vals, flag) in enumerate(zip(columns, flags))
        )
    return Path(path)


def read_scores_csv(path: str | Path) -> np.ndarray:
    """Scores from a two-column CSV with a header (``Id,Predicted`` or ``ID,score``), ordered by id."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(path, "a CSV file of scores", "nothing there") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, "a CSV file of scores", f"unreadable data ({e})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if len(rows) < 2:
        raise InputError(path, "a header line and at least one 'id,score' row", f"{len(rows)} line(s)")
    ids, scores = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != 2:
                raise ValueError
            ids.append(int(row[0]))
            scores.append(float(row[1]))
        except ValueError:
            raise InputError(
                path, "rows of 'id,score' numbers", f"{','.join(row)!r} on line {line}"
            ) from None
        if not math.isfinite(scores[-1]):
            raise InputError(path, "finite scores", f"{row[1]!r} on line {line}")
    order = np.argsort(ids, kind="stable")
    sorted_ids = np.asarray(ids)[order]
    if not np.array_equal(sorted_ids, np.arange(len(ids))):
        raise InputError(path, f"ids 0..{len(ids) - 1}, each once", "gaps or duplicates")
    return np.asarray(scores, dtype=np.float64)[order]


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
