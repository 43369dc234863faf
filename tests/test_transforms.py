"""The transformation-recognition detector and the loop's fit_start / fit_end hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddeye
from helpers import FAST, blobs
from oddeye.detectors.ladder import ConvAutoencoder
from oddeye.detectors.transforms import apply_transform, pad_to_square, transform_list


def test_transform_list_sizes() -> None:
    assert len(transform_list(True, 4, 0.0)) == 8
    assert len(transform_list(True, 4, 0.25)) == 72  # GEOM's set: 2 flips x 4 turns x 3 x 3 shifts
    assert transform_list(False, 1, 0.0) == [(0, 0, 0, 0)]


def test_apply_transform_flips_rotates_and_shifts() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(apply_transform(x, (0, 0, 0, 0), 0), x)
    assert torch.equal(apply_transform(x, (1, 0, 0, 0), 0), x.flip(-1))
    assert torch.equal(apply_transform(x, (0, 1, 0, 0), 0), torch.rot90(x, 1, (-2, -1)))
    shifted = apply_transform(x, (0, 0, 0, 1), 1)  # one pixel right, reflected at the border
    assert torch.equal(shifted[..., :3], x[..., 1:])


def test_pad_to_square() -> None:
    assert pad_to_square(torch.zeros(2, 3, 5, 9)).shape == (2, 3, 9, 9)
    assert pad_to_square(torch.zeros(2, 3, 9, 5)).shape == (2, 3, 9, 9)


def test_transform_detector_learns_orientation() -> None:
    """Upright 'L' shapes are normal; their rotated copies should score as more anomalous."""
    rng = np.random.default_rng(0)
    imgs = np.zeros((200, 12, 12, 1), np.uint8)
    for i in range(200):
        r, c = rng.integers(1, 4, 2)
        imgs[i, r : r + 7, c : c + 2] = 255  # vertical stroke
        imgs[i, r + 5 : r + 7, c : c + 6] = 255  # foot to the right
    det = oddeye.create("transform", epochs=15, batch_size=32, width=8, progress=False).fit(imgs[:150])
    normal = det.score(imgs[150:])
    rotated = det.score(np.ascontiguousarray(np.rot90(imgs[150:], 1, axes=(1, 2))))
    assert np.median(rotated) > np.median(normal)


def test_fit_hooks_see_every_training_image_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, int] = {}

    def record(name):
        def hook(self, batches, heldout=None):
            seen[name] = sum(len(b) for b in batches())
            if heldout is not None:
                seen["heldout"] = sum(len(b) for b in heldout())
            assert not torch.is_grad_enabled()

        return hook

    monkeypatch.setattr(ConvAutoencoder, "fit_start", record("start"), raising=False)
    monkeypatch.setattr(ConvAutoencoder, "fit_end", record("end"), raising=False)
    det = oddeye.create("cnn", **FAST, val_fraction=0.25).fit(blobs(40))
    assert seen == {"start": 30, "end": 30, "heldout": 10} and len(det.history_) == 2


def test_pixel_knn_is_a_memory_bank_that_survives_save_and_load(tmp_path) -> None:
    train, test = blobs(30, (10, 10, 1)), blobs(6, (10, 10, 1), seed=7, anomalous=True)
    det = oddeye.create("pixel-knn", progress=False, val_fraction=0.2).fit(train)
    assert det.history_ == [] and det.model_.memory.bank.shape == (24, 100)
    assert np.allclose(det.score(train[:3]), det.score(train[:3]))
    det.save(tmp_path / "run")
    np.testing.assert_array_equal(oddeye.load(tmp_path / "run").score(test), det.score(test))
    assert (tmp_path / "run" / "training_curve.png").exists()


def test_pixel_knn_scores_distance_to_nearest_training_images() -> None:
    from oddeye.detectors.memory import PixelKNN

    model = PixelKNN((2, 2, 1), PixelKNN.Params(k=1, blur=0.0))
    bank = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    model.fit_end(lambda: iter([bank]), lambda: iter([]))
    x = torch.full((1, 1, 2, 2), 0.25)
    assert model.infer(x).score.item() == pytest.approx(0.5)  # sqrt(4 * 0.25^2) to the zero image
