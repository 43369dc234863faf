"""Evaluation: the seed's worked example, sklearn's tie handling, the course's CSV formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import oddeye
from oddeye.errors import InputError
from oddeye.evaluation import image_rows_header, read_scores_csv, write_flags_csv, write_scores_csv

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


def test_a_folders_csv_names_each_file_after_the_id(tmp_path: Path) -> None:
    scores, paths = np.array([0.5, 2.0, 1e-300]), ("a/1.png", "b, c.png", "ü.png")
    assert image_rows_header(("ID", "score"), paths) == ["ID", "path", "score"]
    assert image_rows_header(("Id", "Predicted"), None) == ["Id", "Predicted"]
    path = write_scores_csv(tmp_path / "p.csv", scores, paths=paths)
    text = path.read_text(encoding="utf-8")
    assert text == 'Id,path,Predicted\n0,a/1.png,0.5\n1,"b, c.png",2.0\n2,ü.png,1e-300\n'
    np.testing.assert_array_equal(read_scores_csv(path), scores)
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("Id,path,Predicted\n2,z.png,3\n0,x.png,1\n1,y.png,2\n", encoding="utf-8")
    np.testing.assert_array_equal(read_scores_csv(shuffled), [1.0, 2.0, 3.0])


def test_file_names_that_are_not_utf8_pass_through_unchanged(tmp_path: Path) -> None:
    name = "caf\udce9.png"  # how Python holds the file name b"caf\xe9.png" (Latin-1, not UTF-8)
    path = write_scores_csv(tmp_path / "p.csv", np.array([1.5]), paths=(name,))
    assert path.read_bytes() == b"Id,path,Predicted\n0,caf\xe9.png,1.5\n"
    np.testing.assert_array_equal(read_scores_csv(path), [1.5])


def test_flags_csv_names_each_file(tmp_path: Path) -> None:
    scores, flags = np.array([0.1, 0.9]), np.array([0, 1], np.int8)
    path = write_flags_csv(tmp_path / "f.csv", scores, flags, np.array([0.25, 1.0]), paths=("a.png", "b.png"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["Id,path,score,calibrated,anomaly", "0,a.png,0.1,0.25,0", "1,b.png,0.9,1.0,1"]
    assert (
        write_flags_csv(tmp_path / "g.csv", scores, flags).read_text()
        == "Id,score,anomaly\n0,0.1,0\n1,0.9,1\n"
    )


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
        ("Id,path,Predicted\n0,a.png\n", "rows of 'id,path,score' with numeric ids and scores"),
        ("Id,path,Predicted\nx,a.png,1\n", "rows of 'id,path,score'"),
        ("Id,score,anomaly\n0,1.5,1\n", "rows of 'id,score' numbers"),  # a flags CSV is no scores CSV
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
