"""Scores are repeatable: identical across two trainings with the same seed (and not with another
seed, for detectors that train), and the same whatever batch size scores them (bit for bit where
the kernels allow; within 1e-4 of the score spread where the BLAS picks a different kernel for a
different batch size, or fp32 rounding of the score)."""

from __future__ import annotations

import numpy as np
import pytest

import oddeye
from helpers import REGISTRY_SETTINGS, REGISTRY_TEST, REGISTRY_TRAIN, blobs
from oddeye.detectors import available, get_spec

SETTINGS = {"epochs": 1, "batch_size": 16, "progress": False, "device": "cpu"}
BITWISE = {"cnn", "cnn-bn", "vae"}  # measured at 12x12x3: no batch-size dependence at all


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return blobs(48, seed=1), np.concatenate([blobs(10, seed=2), blobs(10, seed=3, anomalous=True)])


@pytest.mark.parametrize("name", available())
def test_scores_do_not_depend_on_the_scoring_batch_size(trained_run, name: str) -> None:
    det = oddeye.load(trained_run(name).run, device="cpu", progress=False)  # a copy to change
    base = trained_run(name).scores
    spread = float(base.max() - base.min())
    for batch in (1, 3, 7, 4096):
        det.config = det.config.replace(score_batch_size=batch)
        scores = det.score(REGISTRY_TEST)
        if name in BITWISE:
            np.testing.assert_array_equal(scores, base)
        else:
            np.testing.assert_allclose(scores, base, rtol=1e-6, atol=1e-4 * spread)  # rtol: fp32 rounding


@pytest.mark.parametrize("name", available())
def test_one_seed_gives_identical_scores_and_another_seed_other_ones(trained_run, name: str) -> None:
    trained = trained_run(name)
    again = oddeye.create(name, **REGISTRY_SETTINGS).fit(REGISTRY_TRAIN).score(REGISTRY_TEST)
    np.testing.assert_array_equal(again, trained.scores)
    if get_spec(name).model_cls.trainable:  # a memory bank's scores may not move with the split
        other = oddeye.create(name, **{**REGISTRY_SETTINGS, "seed": 4}).fit(REGISTRY_TRAIN)
        assert not np.array_equal(other.score(REGISTRY_TEST), trained.scores)


def test_scoring_a_float_array_twice_gives_the_same_scores(data) -> None:
    """The caller's float32 array is not normalised in place (found by tests/test_fuzz.py)."""
    train, test = data
    det = oddeye.create("cnn", **SETTINGS).fit(train.astype(np.float32))
    test = test.astype(np.float32)
    before = test.copy()
    first = det.score(test)
    np.testing.assert_array_equal(test, before)
    np.testing.assert_array_equal(det.score(test), first)
