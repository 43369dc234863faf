"""Every registered detector: construction at any size, exact ladder sizes, estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddeye
from helpers import FAST, REGISTRY_SHAPE, blobs
from oddeye.detectors import available, get_spec
from oddeye.errors import OddeyeError

SHAPES = [(64, 64, 3), (28, 28, 1), (8, 8, 1), (30, 17, 3), (5, 5, 3), (3, 3, 1), (1, 8, 3), (1, 1, 1)]


def n_params(name: str, shape: tuple[int, int, int]) -> int:
    return oddeye.create(name).n_parameters(shape)


@pytest.mark.parametrize(
    "name, expected", [("fcn", 3_176_419), ("cnn", 47_355), ("cnn-bn", 47_595), ("vae", 65_835)]
)
def test_ladder_parameter_counts_match_the_course_notebook(name: str, expected: int) -> None:
    assert n_params(name, (64, 64, 3)) == expected


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("shape", SHAPES)
def test_models_keep_shape_at_any_size_and_channel_count(name: str, shape) -> None:
    h, w, c = shape
    model = get_spec(name).model_cls(shape).eval()
    x = torch.rand(3, c, h, w) * 2 - 1
    with torch.no_grad():
        for part in [*model.members(), model]:  # memory banks and score scales, as the loop does
            part.fit_end(lambda: iter([x]), lambda: iter([x]))
        out = model.infer(x)
    assert out.score.shape == (3,)
    assert out.anomaly_map is None or out.anomaly_map.shape == (3, h, w)
    assert torch.isfinite(out.score).all()
    assert not model.trainable or model.loss(x).ndim == 0


@pytest.mark.parametrize("name", available())
def test_estimator_contract(name: str, trained_run) -> None:
    det = trained_run(name).detector  # fitted once per session (conftest), shared
    scores = det.score(blobs(7, REGISTRY_SHAPE, seed=5))
    assert scores.shape == (7,) and scores.dtype == np.float64
    for attr in ("model_", "input_shape_", "normalisation_", "history_", "heldout_stats_", "build_"):
        assert hasattr(det, attr)
    assert det.input_shape_ == REGISTRY_SHAPE


def test_fit_returns_the_estimator() -> None:
    det = oddeye.create("cnn", **FAST)
    assert det.fit(blobs(40, (16, 16, 1))) is det


def test_score_is_the_notebooks_sqrt_sum_of_squared_error() -> None:
    det = oddeye.create("cnn", **FAST).fit(blobs(20))
    images = blobs(4, seed=9)
    result = det.infer(images, maps=True)
    x = images.astype(np.float64) / 255 * 2 - 1  # the notebook's 2*x/255 - 1
    recon = result.reconstructions.astype(np.float64) / 255 * 2 - 1
    expected = np.sqrt(((recon - x) ** 2).reshape(4, -1).sum(1))
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4)
    np.testing.assert_allclose(result.anomaly_maps.sum((1, 2)), result.scores**2, rtol=1e-4)


@pytest.mark.slow  # a quality floor: 30 epochs of cnn-bn
def test_higher_score_means_more_anomalous() -> None:
    det = oddeye.create("cnn-bn", epochs=30, batch_size=32, progress=False).fit(blobs(200))
    normal = det.score(blobs(30, seed=11))
    odd = det.score(blobs(30, seed=12, anomalous=True))
    assert np.median(odd) > np.median(normal)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(OddeyeError, match="expected one of: " + ", ".join(available())):
        oddeye.create("cnnbn")


def test_unknown_parameter_names_the_valid_ones() -> None:
    with pytest.raises(OddeyeError, match=r"unknown setting 'width'.*parameter of cnn \(channels\)"):
        oddeye.create("cnn", width=3).n_parameters((8, 8, 1))


def test_architecture_parameters_are_used() -> None:
    assert oddeye.create("cnn", channels=[8, 16]).n_parameters((64, 64, 3)) < 47_355


def test_score_before_fit_is_a_clear_error() -> None:
    with pytest.raises(OddeyeError, match="not fitted"):
        oddeye.create("cnn").score(blobs(2))
