"""The scikit-learn and PyOD contract: parameters stored as given, clone, grid search with a scorer,
and PyOD's names (decision_function, decision_scores_, threshold_, labels_, predict)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV

import oddeye
from helpers import blobs
from oddeye.config import TrainConfig
from oddeye.errors import OddeyeError

SHAPE = (10, 10, 1)
TRAIN = blobs(60, SHAPE, seed=1)
TEST = np.concatenate([blobs(15, SHAPE, seed=2), blobs(15, SHAPE, seed=3, anomalous=True)])
LABELS = np.r_[np.zeros(15, int), np.ones(15, int)]


def test_init_stores_its_arguments_unchanged() -> None:
    det = oddeye.Detector("pixel-knn")
    assert det.get_params() == {"detector": "pixel-knn", "config": None, "params": None}
    config, params = TrainConfig(progress=False), {"k": 1}
    det = oddeye.Detector("pixel-knn", config, params)
    assert det.get_params()["config"] is config and det.get_params()["params"] is params


def test_clone_gives_an_unfitted_copy_with_the_same_parameters() -> None:
    det = oddeye.create("pixel-knn", k=1, progress=False).fit(TRAIN)
    copy = clone(det)
    assert copy.get_params() == det.get_params() and not hasattr(copy, "model_")
    np.testing.assert_array_equal(copy.fit(TRAIN).decision_function(TEST), det.decision_function(TEST))


def test_set_params_takes_detector_parameters_and_training_settings_by_name() -> None:
    det = oddeye.create("pixel-knn", progress=False)
    params, config = det.params, det.config
    assert det.set_params(k=5, val_fraction=0.2) is det
    assert det.params == {**params, "k": 5} and det.config.val_fraction == 0.2
    assert params == {} and config.val_fraction == 0.05  # replaced, never changed in place
    with pytest.raises(OddeyeError, match="has no parameter 'kk'"):
        det.set_params(kk=1)
    with pytest.raises(OddeyeError, match="parameter k: expected an integer"):
        det.set_params(k="x")


def test_grid_search_over_a_parameter_with_a_scorer() -> None:
    def auroc(estimator, x, y) -> float:
        return roc_auc_score(y, estimator.decision_function(x))

    x = np.concatenate([TRAIN, TEST])
    y = np.r_[np.zeros(len(TRAIN), int), LABELS]
    base = oddeye.create("pixel-knn", progress=False, val_fraction=0.1)
    split = [(np.arange(len(TRAIN)), np.arange(len(TRAIN), len(x)))]  # fit on normal images, test on both
    search = GridSearchCV(base, {"k": [1, 5], "blur": [0.0, 0.1]}, scoring=auroc, cv=split).fit(x, y)
    assert set(search.best_params_) == {"k", "blur"}
    assert len(search.cv_results_["mean_test_score"]) == 4
    assert search.best_estimator_.build_.params["k"] == search.best_params_["k"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_pyod_names() -> None:
    det = oddeye.create("pixel-knn", progress=False, val_fraction=0.2).fit(TRAIN)
    scores = det.decision_function(TEST)
    np.testing.assert_array_equal(scores, det.score(TEST))  # score: one value per image, as documented
    assert roc_auc_score(LABELS, scores) > 0.9  # higher = more anomalous
    assert det.decision_scores_ is det.heldout_scores_ and len(det.decision_scores_) == 12
    np.testing.assert_array_equal(det.labels_, (det.decision_scores_ > det.threshold_.value).astype(int))
    np.testing.assert_array_equal(det.predict(TEST), (scores > det.threshold_.value).astype(int))
    assert float(det.threshold_) == det.threshold_.value
