"""Pixel AUROC and AUPRO (MVTec AD's definition): a case worked by hand, scikit-learn's pixel
AUROC, 8-connected regions, and the binned computation against the exact one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from oddeye.errors import OddeyeError
from oddeye.pixel_metrics import PixelEvaluator, aupro, per_defect_auroc, pixel_auroc


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 images. A: region R1 = the top-left pair; B: region R2 = the bottom-right 2x2."""
    maps = np.full((2, 4, 4), 0.1)
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, :2] = True  # R1: 2 pixels, values 0.9 and 0.5
    maps[0, 0, :2] = [0.9, 0.5]
    maps[0, 3, 3] = 0.7  # a normal pixel of A at 0.7
    masks[1, 2:, 2:] = True  # R2: 4 pixels, values 0.9, 0.7, 0.5, 0.1
    maps[1, 2:, 2:] = [[0.9, 0.7], [0.5, 0.1]]
    maps[1, 0, 0] = 0.5  # a normal pixel of B at 0.5
    return maps, masks


def test_aupro_of_a_case_worked_by_hand() -> None:
    # 26 normal pixels (14 in A, 12 in B); thresholds at the distinct values 0.9, 0.7, 0.5, 0.1:
    #   t=0.9: FP 0 -> FPR 0;     R1 1/2, R2 1/4 -> PRO (1/2 + 1/4) / 2 = 0.375
    #   t=0.7: FP 1 -> FPR 1/26;  R1 1/2, R2 2/4 -> PRO 0.5
    #   t=0.5: FP 2 -> FPR 2/26;  R1 2/2, R2 3/4 -> PRO 0.875
    #   t=0.1: FP 26 -> FPR 1;    PRO 1
    # The curve (0,0) (0,0.375) (1/26,0.5) (2/26,0.875) (1,1), cut at FPR 0.3 where the PRO is
    # interpolated on the last segment: 0.875 + 0.125 * (0.3 - 2/26) / (1 - 2/26).
    at_limit = 0.875 + 0.125 * (0.3 - 2 / 26) / (1 - 2 / 26)
    area = (0.375 + 0.5) / 2 / 26 + (0.5 + 0.875) / 2 / 26 + (0.875 + at_limit) / 2 * (0.3 - 2 / 26)
    maps, masks = hand_case()
    assert aupro(maps, masks) == pytest.approx(area / 0.3, abs=1e-12)
    assert area / 0.3 == pytest.approx(0.8061, abs=1e-4)
    # at the limit 2/26 exactly, the curve is cut at a point: no interpolation
    assert aupro(maps, masks, fpr_limit=2 / 26) == pytest.approx(
        ((0.375 + 0.5) / 2 / 26 + (0.5 + 0.875) / 2 / 26) / (2 / 26), abs=1e-12
    )
    result = PixelEvaluator().add(maps, masks).result()
    assert (result.n_regions, result.n_pixels, result.n_anomalous_pixels, result.exact) == (2, 32, 6, True)


def test_pixel_auroc_matches_scikit_learn_on_a_random_case() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((6, 20, 24)) < 0.1
    maps = rng.normal(size=masks.shape) + masks
    maps[:, :5] = np.round(maps[:, :5], 1)  # ties, counted as scikit-learn counts them
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_regions_are_8_connected_as_in_mvtec_ad() -> None:
    masks = np.zeros((1, 5, 5), bool)
    masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 3, 3] = True  # a diagonal: one region, not three
    masks[0, 0, 4] = True  # apart from it
    result = PixelEvaluator().add(np.zeros((1, 5, 5)), masks).result()
    assert result.n_regions == 2


def random_case(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((40, 48, 48), bool)
    for i in range(0, 40, 2):
        y, x = rng.integers(0, 36, 2)
        masks[i, y : y + rng.integers(2, 12), x : x + rng.integers(2, 12)] = True
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    return maps, masks


def test_binned_agrees_with_exact_within_1e_3() -> None:
    maps, masks = random_case()
    exact = PixelEvaluator(exact_pixels=None).add(maps, masks).result()
    binned = PixelEvaluator(exact_pixels=5000)  # the first three maps fix the bins
    for start in range(0, len(maps), 4):
        binned.add(maps[start : start + 4], masks[start : start + 4])
    got = binned.result()
    assert exact.exact and not got.exact and got.bins > 1000
    assert got.aupro == pytest.approx(exact.aupro, abs=1e-3)
    assert got.pixel_auroc == pytest.approx(exact.pixel_auroc, abs=1e-3)
    assert (got.n_regions, got.n_pixels) == (exact.n_regions, exact.n_pixels)
    assert got.outside_pixels == 0
    # maps far beyond the range the bins were fixed from land in the open end bins, and are counted
    later = PixelEvaluator(exact_pixels=5000).add(maps[:4] * 0.01, masks[:4]).add(maps[4:], masks[4:])
    assert later.result().outside_pixels > 0


def test_one_class_of_pixels_is_refused() -> None:
    with pytest.raises(OddeyeError, match="no anomalous pixel"):
        PixelEvaluator().add(np.zeros((2, 3, 3)), np.zeros((2, 3, 3), bool)).result()
    with pytest.raises(OddeyeError, match="finite"):
        PixelEvaluator().add(np.full((3, 3), np.nan), np.zeros((3, 3), bool))


def test_per_defect_auroc_pits_each_type_against_all_normal_images() -> None:
    scores = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 1.5])
    labels = np.array([0, 0, 0, 1, 1, 1])
    defects = ["good", "good", "good", "crack", "crack", "hole"]
    got = per_defect_auroc(scores, labels, defects)
    assert got == pytest.approx({"crack": 4 / 6, "hole": 2 / 3})
