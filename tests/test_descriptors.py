"""Hand-crafted descriptors (colour and edge-direction histograms, silhouettes) and the bounded,
streamed bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddeye
from helpers import blobs
from oddeye.detectors.base import Batches
from oddeye.detectors.descriptors import color_histogram, orientation_histograms, silhouette
from oddeye.detectors.memory import KNNBank, knn_distance


def test_color_histogram_is_a_unit_vector_of_square_root_fractions() -> None:
    x = torch.full((2, 3, 4, 4), -1.0)
    x[0, 0] = 1.0  # image 0 pure red, image 1 black
    x[1, :, :2] = 1.0  # image 1: top half white
    h = color_histogram(x, 4)
    assert h.shape == (2, 64)
    np.testing.assert_allclose(h.pow(2).sum(1).numpy(), [1.0, 1.0], rtol=1e-6)
    assert h[0, 3 * 16].item() == pytest.approx(1.0)  # all pixels in the (red=3, g=0, b=0) cell
    assert h[1, 0].item() == pytest.approx(0.5**0.5) and h[1, 63].item() == pytest.approx(0.5**0.5)


def test_orientation_histograms_see_edge_directions() -> None:
    x = torch.zeros(2, 1, 8, 8)
    x[0, :, :, 4:] = 1.0  # a vertical edge: the gradient points along x (direction 0)
    x[1, :, 4:, :] = 1.0  # a horizontal edge: gradient along y (direction pi/2)
    h = orientation_histograms(x, bins=4, cell=8).view(2, 4)  # one cell
    assert h[0].argmax().item() == 0 and h[1].argmax().item() == 2
    np.testing.assert_allclose(h.norm(dim=1).numpy(), [1.0, 1.0], rtol=1e-6)


def test_silhouette_is_what_differs_from_the_border_colour() -> None:
    x = torch.full((2, 3, 8, 8), 1.0)  # image 0: white background
    x[0, :, 2:5, 3:6] = torch.tensor([0.2, -0.5, 1.0]).view(3, 1, 1)  # a bluish square on it
    x[0, 0, 0, 0:3] = -1.0  # the object touches the border here: the median ignores it
    x[1] = -1.0  # image 1: black background, a faint and a clear pixel
    x[1, :, 4, 4] = -1.0 + 2 * 0.01  # 1% of the range away: background
    x[1, 1, 5, 5] = -1.0 + 2 * 0.05  # 5% away, in one channel only: object
    m = silhouette(x, 0.02)
    assert m.shape == (2, 1, 8, 8) and set(m.unique().tolist()) <= {-1.0, 1.0}
    expected0 = torch.full((8, 8), -1.0)
    expected0[2:5, 3:6] = 1.0
    expected0[0, 0:3] = 1.0
    assert torch.equal(m[0, 0], expected0)
    assert m[1, 0, 4, 4].item() == -1.0 and m[1, 0, 5, 5].item() == 1.0 and (m[1] > 0).sum().item() == 1


def test_shape_knn_sees_the_outline_and_not_the_shading() -> None:
    rng = np.random.default_rng(0)

    def squares(n: int, side: int, shading: tuple[int, int]) -> np.ndarray:
        x = np.zeros((n, 16, 16, 1), np.uint8)
        lo = (16 - side) // 2
        x[:, lo : lo + side, lo : lo + side] = rng.integers(*shading, (n, side, side, 1))
        return x

    train = squares(60, 8, (100, 140))
    det = oddeye.create("shape-knn", progress=False).fit(train)
    pixels = oddeye.create("pixel-knn", progress=False).fit(train)
    same_outline = squares(20, 8, (200, 255))  # re-shaded: a pixel k-NN sees a large change
    other_outline = squares(20, 11, (100, 140))  # the same shading, a larger square
    assert det.score(same_outline).max() < det.score(other_outline).min()
    assert np.median(pixels.score(same_outline)) > np.median(pixels.score(other_outline))
    amap = det.infer(other_outline[:1], maps=True).anomaly_maps[0]
    ring = np.zeros((16, 16), bool)
    ring[2:14, 2:14], ring[5:11, 5:11] = True, False  # where the two outlines differ, and around
    assert amap[ring].mean() > 4 * amap[~ring].mean()


def test_the_default_adds_silhouettes_for_gray_images_and_colours_for_colour_ones() -> None:
    gray = oddeye.create("default", progress=False).fit(blobs(40, (12, 12, 1)))
    colour = oddeye.create("default", progress=False).fit(blobs(40, (12, 12, 3)))
    assert [m.label for m in gray.model_.members()] == ["pixel-knn", "hog-knn", "shape-knn", "patch-knn"]
    assert [m.label for m in colour.model_.members()] == ["pixel-knn", "hog-knn", "color-knn", "patch-knn"]


def test_color_knn_flags_recoloured_images() -> None:
    train = blobs(60, (16, 16, 3))
    odd = blobs(20, (16, 16, 3), seed=5)
    odd[..., 0] //= 3  # the same blobs, tinted: less red
    det = oddeye.create("color-knn", progress=False).fit(train)
    assert np.median(det.score(odd)) > np.median(det.score(blobs(20, (16, 16, 3), seed=6)))


def test_the_bank_keeps_an_evenly_spaced_subset_and_computes_only_its_features() -> None:
    images = torch.arange(50, dtype=torch.float32).view(50, 1).repeat(1, 3)  # row i holds i
    seen: list[int] = []

    def features(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return x

    batches = Batches(lambda: iter(images.split(8)), len(images))
    bank = KNNBank(k=1, max_bank=10)
    bank.build(batches, features)
    expected = np.unique(np.linspace(0, 49, 10).astype(int))
    np.testing.assert_array_equal((bank.bank + bank.offset)[:, 0].numpy(), expected)  # kept less their mean
    assert bank.offset[0].item() == pytest.approx(expected.mean())
    assert sum(seen) == 10  # features of the kept rows only: memory and time bounded by max_bank


def test_leave_one_out_scores_never_count_the_image_itself() -> None:
    bank = KNNBank(k=1)
    bank.bank = torch.tensor([[0.0], [1.0], [3.0]])
    np.testing.assert_allclose(bank.leave_one_out().numpy(), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(knn_distance(torch.tensor([[2.9]]), bank.bank, 2).numpy(), [1.0], rtol=1e-5)


def test_ensemble_scales_count_the_banks_leave_one_out_scores() -> None:
    det = oddeye.create("ensemble", members="pixel-knn,cnn", epochs=1, progress=False).fit(blobs(60))
    knn, cnn = det.model_.members()
    loo = knn.reference_scores()
    assert loo is not None and len(loo) == len(knn.memory.bank) and cnn.reference_scores() is None
    heldout = det.model_.fusion.loc  # a held-out image's pixel-knn score and the LOO ones, pooled
    assert heldout.shape == (2,)
    plain = oddeye.create("ensemble", members="pixel-knn,cnn", epochs=1, references="heldout", progress=False)
    assert plain.fit(blobs(60)).model_.fusion.scale[0] != det.model_.fusion.scale[0]
