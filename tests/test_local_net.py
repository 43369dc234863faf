"""local-net: synthetic local anomalies and their masks, the U-Net's maps and scores, training,
export and saved runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import oddeye
from helpers import blobs
from oddeye.detectors import get_spec
from oddeye.detectors.synthetic import LOCAL_KINDS, local_anomalies, local_regions, repeatable
from oddeye.errors import OddeyeError
from oddeye.export import export_onnx

MORE = {"max_side": 12, "score": "logit", "reference": True}
TINY = {"width": 4, "stages": 2, "epochs": 2, "batch_size": 16, "progress": False, "val_fraction": 0.25}


def batch(n: int = 8, shape: tuple[int, int, int] = (16, 16, 3), seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(blobs(n, shape, seed=seed)).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_regions_are_soft_masks_of_the_requested_area() -> None:
    torch.manual_seed(0)
    x = torch.zeros(256, 1, 64, 64)
    alpha, centre = local_regions(x, 0.01, 0.04)
    assert alpha.shape == (256, 1, 64, 64) and centre.shape == (256, 2)
    assert alpha.min() >= 0 and alpha.max() <= 1
    area = (alpha > 0.5).float().mean((1, 2, 3))  # the feathered edge halves the core at most
    assert area.min() >= 0.01 * 0.3 and area.max() <= 0.04 * 1.2
    assert (alpha[..., :, :] > 0).flatten(1).any(1).all()  # every region lies in its image


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_masks_mark_exactly_the_pixels_that_changed(kind: str) -> None:
    torch.manual_seed(1)
    x = batch(32)
    bad, target = local_anomalies(x, (kind,), share=1.0, tolerance=0.05)
    assert bad.shape == x.shape and target.shape == (32, 1, 16, 16)
    assert bad.min() >= -1 and bad.max() <= 1
    changed = (bad - x).abs().amax(1, keepdim=True) > 0.05
    assert torch.equal(target.bool(), changed)
    assert target.flatten(1).any(1).float().mean() >= 0.5  # most images get a visible anomaly
    assert target.mean() < 0.2  # local: a small part of each image


def test_a_patch_that_matches_what_it_covers_is_no_anomaly() -> None:
    x = torch.full((16, 3, 16, 16), 0.3)  # every patch of every image is the same colour
    bad, target = local_anomalies(x, ("other", "same"), share=1.0)
    torch.testing.assert_close(bad, x)
    assert target.sum() == 0


def test_only_the_share_of_images_changes_and_draws_repeat() -> None:
    x = batch(200, (8, 8, 1))
    with repeatable(x):
        bad, target = local_anomalies(x, share=0.25)
    with repeatable(x):
        again, _ = local_anomalies(x, share=0.25)
    torch.testing.assert_close(bad, again)
    touched = (bad != x).flatten(1).any(1).float().mean()
    assert 0.1 <= touched <= 0.35


@pytest.mark.parametrize("shape, max_side", [((20, 30, 3), 16), ((28, 28, 1), 64), ((1, 1, 1), 64)])
def test_maps_are_at_the_input_resolution_and_scores_their_top_pixels(shape, max_side) -> None:
    h, w, c = shape
    model = get_spec("local-net").build(shape, {"width": 4, "max_side": max_side}).eval()
    x = torch.rand(3, c, h, w) * 2 - 1
    with torch.no_grad():
        out = model.infer(x, maps=True)
        plain = model.infer(x)
    assert out.anomaly_map.shape == (3, h, w) and out.score.shape == (3,)
    assert out.anomaly_map.min() >= 0 and out.anomaly_map.max() <= 1  # probabilities
    torch.testing.assert_close(plain.score, out.score)
    assert model.derived.work_hw == ((11, 16) if max_side == 16 else (h, w))


def test_the_score_is_the_mean_of_the_top_share_of_the_map() -> None:
    model = get_spec("local-net").build((20, 20, 1), {"width": 4, "top": 0.05}).eval()
    x = torch.rand(2, 1, 20, 20) * 2 - 1
    with torch.no_grad():
        out = model.infer(x, maps=True)
    expected = out.anomaly_map.flatten(1).topk(20, dim=1).values.mean(1)  # 5% of 400 pixels
    torch.testing.assert_close(out.score, expected)


def test_the_loss_falls_in_a_few_steps_on_a_tiny_set() -> None:
    torch.manual_seed(0)
    model = get_spec("local-net").build((16, 16, 1), {"width": 8, "stages": 2}).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = batch(16, (16, 16, 1))
    losses = []
    for _ in range(25):
        loss = model.loss(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])


def test_the_reference_is_the_training_images_mean_and_spread_per_pixel() -> None:
    model = get_spec("local-net").build((8, 8, 1), {"width": 4, "reference": True})
    x = torch.cat([torch.full((3, 1, 8, 8), -0.5), torch.full((1, 1, 8, 8), 0.5)])
    model.fit_start(lambda: iter([x[:2], x[2:]]))
    torch.testing.assert_close(model.ref_mean, torch.full((1, 8, 8), -0.25))
    torch.testing.assert_close(model.ref_scale, torch.full((1, 8, 8), 0.75**0.5 / 2 + 0.1))
    assert model.net.down[0][0].in_channels == 1 + 1 + 2  # the image, its distances, positions


def test_bad_parameters_are_one_line_errors() -> None:
    with pytest.raises(OddeyeError, match=r"area_min=0.1 is out of range"):
        oddeye.create("local-net", area_min=0.1, area_max=0.05, **TINY).fit(blobs(8, (8, 8, 1)))
    with pytest.raises(OddeyeError, match="kinds must be one of"):
        oddeye.create("local-net", kinds="other,glitter", **TINY).fit(blobs(8, (8, 8, 1)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[oddeye.Detector, Path]:
    """A tiny local-net working below its input size (maps scaled up), with the training mean as
    a reference and a non-default score."""
    run = tmp_path_factory.mktemp("local-net") / "run"
    det = oddeye.train(blobs(40, (20, 20, 3)), "local-net", run, **MORE, **TINY)
    return det, run


def test_same_seed_same_scores_and_saved_runs_score_identically(trained) -> None:
    det, run = trained
    test = blobs(6, (20, 20, 3), seed=3)
    again = oddeye.create("local-net", **MORE, **TINY).fit(blobs(40, (20, 20, 3)))
    np.testing.assert_array_equal(again.score(test), det.score(test))
    loaded = oddeye.load(run, progress=False)
    np.testing.assert_array_equal(loaded.score(test), det.score(test))
    maps = loaded.infer(test, maps=True).anomaly_maps
    np.testing.assert_array_equal(maps, det.infer(test, maps=True).anomaly_maps)
    assert maps.shape == (6, 20, 20)


def test_the_export_scores_as_oddeye_score(trained, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    _, run = trained
    done = export_onnx(run, tmp_path / "model.onnx")
    assert done.parity.max_relative_score_difference <= 1e-4 and done.parity.max_map_difference <= 1e-4


def test_whole_image_anomalies_get_a_finite_map_on_gray_28x28() -> None:
    det = oddeye.create("local-net", **TINY).fit(blobs(40, (28, 28, 1)))
    odd = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)  # noise
    result = det.infer(np.concatenate([blobs(4, (28, 28, 1), seed=9), odd]), maps=True)
    assert np.isfinite(result.scores).all() and result.anomaly_maps.shape == (8, 28, 28)
