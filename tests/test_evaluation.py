"""Evaluation: the seed's worked example, sklearn's tie handling, the course's CSV formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import oddeye
from oddeye.errors import InputError
from oddeye.evaluation import read_scores_csv, write_scores_csv

SEED_SCORES = [11383, 256676, 862365, 152435, 848171]
SEED_LABELS = [0, 1, 1, 0, 0]


def test_seed_worked_example_auc_is_0_8333() -> None:
    result = oddeye.evaluate(np.array(SEED_SCORES, float), np.array(SEED_LABELS))
    assert result.auroc == pytest.approx(5 / 6)
    assert f"{result.auroc:.4f}" == "0.8333"


def test_ties_count_as_in_scikit_learn() -> None:
    scores, labels = np.array([1.0, 1.0, 2.0, 2.0, 3.0]), np.array([0, 1, 0, 1, 1])
    # (negative, positive) pairs: (1,1) tie 0.5, (1,2) 1, (1,3) 1, (2,1) 0, (2,2) tie 0.5, (2,3) 1
    expected = (0.5 + 1 + 1 + 0 + 0.5 + 1) / 6
    assert oddeye.evaluate(scores, labels).auroc == roc_auc_score(labels, scores) == pytest.approx(expected)


def test_csv_roundtrip_keeps_full_precision_and_course_header(tmp_path: Path) -> None:
    scores = np.array([0.1 + 0.2, 1e-300, 12345.678901234567])
    path = write_scores_csv(tmp_path / "prediction.csv", scores)
    assert path.read_text().splitlines()[:2] == ["Id,Predicted", "0,0.30000000000000004"]
    np.testing.assert_array_equal(read_scores_csv(path), scores)
    write_scores_csv(tmp_path / "p2022.csv", scores, ("ID", "score"))
    assert (tmp_path / "p2022.csv").read_text().startswith("ID,score\n0,")


def test_evaluate_from_files_orders_rows_by_id(tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    rows = sorted(enumerate(SEED_SCORES), key=lambda r: -r[1])  # shuffled row order
    csv.write_text("Id,Predicted\n" + "".join(f"{i},{s}\n" for i, s in rows))
    np.save(tmp_path / "labels.npy", np.array(SEED_LABELS))
    (tmp_path / "labels.csv").write_text(
        "Id,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(SEED_LABELS))
    )
    for labels in ("labels.npy", "labels.csv"):
        result = oddeye.evaluate(csv, tmp_path / labels)
        assert result.auroc == pytest.approx(5 / 6)
        assert result.n_normal == 3 and result.n_anomalous == 2
        assert result.distributions["anomalous"]["max"] == 862365


def test_average_precision_and_distributions() -> None:
    result = oddeye.evaluate(np.array([0.1, 0.2, 0.9, 0.8]), np.array([0, 0, 1, 1]))
    assert result.auroc == 1.0 and result.average_precision == 1.0
    assert result.distributions["normal"]["mean"] == pytest.approx(0.15)
    assert "ROC AUC            1.0000" in result.to_text()


@pytest.mark.parametrize(
    "text, match",
    [
        ("Id,Predicted\n", "at least one"),
        ("Id,Predicted\n0,abc\n", "rows of 'id,score' numbers"),
        ("Id,Predicted\n0,1\n2,3\n", "gaps or duplicates"),
        ("Id,Predicted\n0,nan\n", "finite scores"),
    ],
)
def test_bad_score_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_scores_csv(path)


def test_label_count_mismatch_and_single_class(tmp_path: Path) -> None:
    np.save(tmp_path / "l.npy", np.array([0, 1, 0]))
    with pytest.raises(InputError, match="5 labels"):
        oddeye.evaluate(np.arange(5.0), tmp_path / "l.npy")
    with pytest.raises(InputError, match="both normal"):
        oddeye.evaluate(np.arange(3.0), np.zeros(3))
