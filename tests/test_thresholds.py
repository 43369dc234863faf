"""Thresholds: each rule's definition, the calibrated scale, and how runs keep them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

import oddeye
from helpers import FAST, blobs
from oddeye.errors import OddeyeError
from oddeye.thresholds import (
    Threshold,
    calibrate,
    choose_threshold,
    parse_rule,
    resolve_threshold,
    top_threshold,
)


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("200", ("value", 200.0)),
        ("fpr:0.01", ("fpr", 0.01)),
        ("TOP:0.05", ("top", 0.05)),
        ("-1.5", ("value", -1.5)),
    ],
)
def test_rules_parse(text: str, parsed: tuple[str, float]) -> None:
    assert parse_rule(text) == parsed
    assert parse_rule("f1")[0] == "f1"


@pytest.mark.parametrize("bad", ["fpr:2", "top:-0.1", "fpr:x", "median", "", "nan", "fpr:"])
def test_bad_rules_name_the_valid_ones(bad: str) -> None:
    with pytest.raises(OddeyeError, match="threshold"):
        parse_rule(bad)


def test_fixed_value_flags_strictly_above() -> None:
    t = choose_threshold("200")
    np.testing.assert_array_equal(t.flag(np.array([199.0, 200.0, 200.5])), [0, 0, 1])
    assert not t.uses_labels and "fixed" in t.basis


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.1, 0.5])
def test_fpr_threshold_flags_at_most_that_share_of_heldout_normals(fpr: float) -> None:
    heldout = np.random.default_rng(0).normal(size=1000)
    t = choose_threshold(f"fpr:{fpr}", heldout=heldout)
    flagged = t.flag(heldout).mean()
    assert flagged <= fpr and flagged >= fpr - 1 / len(heldout)  # the smallest such threshold
    assert f"false-positive rate {flagged:.4f}" in t.basis


def test_fpr_threshold_lies_between_heldout_scores() -> None:
    t = choose_threshold("fpr:0.25", heldout=np.array([1.0, 2.0, 3.0, 4.0]))
    assert t.value == 3.5  # one of four may be flagged: halfway between the 3rd and the 4th


def test_fpr_threshold_with_ties_never_exceeds_the_target() -> None:
    heldout = np.array([1.0] * 50 + [2.0] * 50)
    t = choose_threshold("fpr:0.3", heldout=heldout)
    assert t.flag(heldout).mean() <= 0.3


def test_fpr_needs_heldout_scores() -> None:
    with pytest.raises(OddeyeError, match="held-out"):
        choose_threshold("fpr:0.01", heldout=None)


def test_top_threshold_flags_that_fraction_of_the_scored_images() -> None:
    scores = np.random.default_rng(1).normal(size=1000)
    t = choose_threshold("top:0.05", scores=scores)
    assert t.flag(scores).sum() == 50
    assert choose_threshold("top:0", scores=scores).flag(scores).sum() == 0


def test_f1_threshold_is_the_best_f1_and_is_marked_as_using_labels() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    scores = labels + rng.normal(scale=0.8, size=500)
    t = choose_threshold("f1", scores=scores, labels=labels)
    assert t.uses_labels and "analysis only" in t.describe()
    best = max(f1_score(labels, (scores >= c).astype(int)) for c in np.unique(scores))
    assert f1_score(labels, t.flag(scores)) == pytest.approx(best)
    with pytest.raises(OddeyeError, match="labels"):
        choose_threshold("f1", scores=scores)


def test_calibrated_scale_is_the_fraction_of_heldout_scoring_lower() -> None:
    heldout = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(calibrate(np.array([0.5, 1.0, 2.5, 9.0]), heldout), [0, 0, 0.5, 1.0])


def test_threshold_round_trips_through_json() -> None:
    t = Threshold("top:0.05", 3.25, "the top 5.00% of 100 scored images")
    assert Threshold.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(OddeyeError, match="threshold record"):
        Threshold.from_dict({"rule": "x"})


@pytest.fixture(scope="module")
def fitted():
    return oddeye.create("cnn", **FAST, val_fraction=0.25).fit(blobs(80))


def test_a_fitted_detector_has_the_default_threshold_and_predicts(fitted) -> None:
    t = fitted.threshold_
    assert t.rule == "fpr:0.01" and "20 held-out normal training images" in t.basis
    top, second = np.sort(fitted.heldout_scores_)[-1:-3:-1]
    assert t.value == top + (top - second) / 2  # 1% of 20 images: none flagged; no score on the line
    test = np.concatenate([blobs(10, seed=5), blobs(10, seed=6, anomalous=True)])
    np.testing.assert_array_equal(fitted.predict(test), t.flag(fitted.score(test)))
    assert fitted.calibrate(fitted.heldout_scores_).max() < 1.0


def test_training_threshold_setting_and_its_limits() -> None:
    det = oddeye.create("pixel-knn", threshold="fpr:0.2", progress=False).fit(blobs(40))
    assert det.threshold_.rule == "fpr:0.2"
    with pytest.raises(OddeyeError, match="top:Q and f1 depend on the images scored"):
        oddeye.create("pixel-knn", threshold="top:0.1")


def test_runs_keep_heldout_scores_and_threshold(fitted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "run")
    back = oddeye.load(tmp_path / "run", progress=False)
    np.testing.assert_array_equal(back.heldout_scores_, fitted.heldout_scores_)
    assert back.threshold_ == fitted.threshold_


def test_runs_without_heldout_scores_still_load(fitted, tmp_path: Path) -> None:
    """Runs saved before thresholds existed: no heldout_scores.npy, no threshold in model.json."""
    run = fitted.save(tmp_path / "run")
    (run / "heldout_scores.npy").unlink()
    meta = json.loads((run / "model.json").read_text())
    del meta["threshold"]
    (run / "model.json").write_text(json.dumps(meta))
    back = oddeye.load(run, progress=False)
    assert back.threshold_ is None and back.heldout_scores_ is None
    with pytest.raises(OddeyeError, match="held-out"):
        back.calibrate(np.zeros(3))
    assert back.choose_threshold("5").value == 5.0


def test_heldout_scores_file_is_never_unpickled(fitted, tmp_path: Path) -> None:
    run = fitted.save(tmp_path / "run")
    np.save(run / "heldout_scores.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(OddeyeError, match="heldout_scores.npy"):
        oddeye.load(run, progress=False)


def test_fpr_threshold_on_too_few_heldout_images_says_it_is_rough() -> None:
    assert (
        "rough: resolving 0.01 takes at least 100"
        in choose_threshold("fpr:0.01", heldout=np.arange(4.0)).basis
    )
    assert "rough" not in choose_threshold("fpr:0.01", heldout=np.arange(100.0)).basis


SAVED = Threshold("fpr:0.01", 3.5, "4 held-out normal training images")


@pytest.mark.parametrize(
    "request_, expected",
    [(None, None), (False, None), (True, SAVED), ("", SAVED), (Threshold("7", 7.0, "a fixed value"), "same")],
)
def test_every_form_of_a_threshold_request_resolves_in_one_place(request_, expected) -> None:
    got = resolve_threshold(request_, saved=SAVED)
    assert got == (request_ if expected == "same" else expected)


def test_a_rule_request_is_chosen_on_what_the_caller_has() -> None:
    heldout, scores = np.arange(100.0), np.arange(10.0)
    fpr = resolve_threshold("fpr:0.1", saved=SAVED, heldout=heldout, heldout_basis="held-out images")
    assert fpr == choose_threshold("fpr:0.1", heldout=heldout, heldout_basis="held-out images")
    assert resolve_threshold("top:0.2", scores=scores).value == top_threshold(scores, 0.2)
    assert resolve_threshold("200").flag(np.array([200.0, 201.0])).tolist() == [0, 1]


def test_asking_for_the_saved_threshold_without_one_says_what_to_do() -> None:
    with pytest.raises(OddeyeError, match=r"^runs/x: this run has no saved threshold; give a rule"):
        resolve_threshold(True, saved=None, source="runs/x")


def test_allowed_rule_kinds_restrict_rules_not_the_saved_threshold() -> None:
    top = Threshold("top:0.05", 9.0, "the top 5.00% of 20 scored images")
    with pytest.raises(OddeyeError, match=r"'top:0.1': expected a value or fpr:A here, found top:Q"):
        resolve_threshold("top:0.1", scores=np.arange(10.0), allowed=("value", "fpr"))
    with pytest.raises(OddeyeError, match="expected a value or fpr:A here, found f1"):
        resolve_threshold("f1", allowed=("value", "fpr"))
    assert resolve_threshold("-3", allowed=("value", "fpr")).value == -3.0
    assert resolve_threshold(top, saved=top, allowed=("value", "fpr")) is top
    assert resolve_threshold(True, saved=top, allowed=("value", "fpr")) is top


def test_a_request_of_another_type_is_one_clear_error() -> None:
    with pytest.raises(OddeyeError, match="threshold: expected VALUE"):
        resolve_threshold(200)  # type: ignore[arg-type]
