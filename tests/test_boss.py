"""Issue 4's detectors: synthetic anomalies, boss, OCGAN, DAE, Deep SVDD, feature k-NN, ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddeye
from helpers import FAST, blobs
from oddeye.detectors.boss import frozen
from oddeye.detectors.fusion import ScoreFusion
from oddeye.detectors.synthetic import KINDS, corrupt, corrupted_views, rectangles, repeatable
from oddeye.errors import OddeyeError

NEW = [
    ("boss", {}),
    ("boss", {"score": "classifier"}),
    ("ocgan", {}),
    ("dae", {}),
    ("deep-svdd", {}),
    ("deep-svdd", {"score": "knn"}),
    ("transform", {"score": "knn"}),
    ("transform", {"score": "both"}),
    ("ensemble", {"members": "pixel-knn,dae"}),
]


def batch(n: int = 6, c: int = 1, size: int = 16) -> torch.Tensor:
    return torch.from_numpy(blobs(n, (size, size, c))).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_every_corruption_keeps_shape_and_range_and_changes_the_image() -> None:
    torch.manual_seed(0)
    x = batch(8, c=3)
    for kind, view in corrupted_views(x).items():
        assert view.shape == x.shape, kind
        assert view.min() >= -1 and view.max() <= 1, kind
        assert (view - x).abs().amax(dim=(1, 2, 3)).gt(1e-3).float().mean() >= 0.5, kind


def test_rectangles_cover_the_requested_fraction_and_corrupt_is_repeatable() -> None:
    x = batch(64, size=20)
    area = rectangles(x, 0.2, 0.5).mean(dim=(1, 2, 3))
    assert area.min() >= 0.2**2 * 0.5 and area.max() <= 0.5**2 * 1.6
    with repeatable(x):
        a = corrupt(x)
    with repeatable(x):
        b = corrupt(x)
    torch.testing.assert_close(a, b)
    assert not torch.equal(corrupt(x, ("noise",)), x)


def test_frozen_passes_gradients_to_inputs_only() -> None:
    net = torch.nn.Linear(3, 1)
    x = torch.randn(4, 3, requires_grad=True)
    frozen(net, x).sum().backward()
    assert x.grad is not None and net.weight.grad is None


def test_score_fusion_is_the_mean_z_score_on_the_fitted_images() -> None:
    fusion = ScoreFusion(2)
    heldout = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    fusion.fit(heldout)
    z1 = (torch.tensor(4.0) - 1.0) / heldout[:, 0].std()
    z2 = (torch.tensor(20.0) - 20.0) / heldout[:, 1].std()
    assert fusion(torch.tensor([[4.0, 20.0]])).item() == pytest.approx(((z1 + z2) / 2).item())


@pytest.mark.parametrize("name,params", NEW)
def test_new_detectors_rank_anomalies_first_and_survive_save_and_load(name, params, tmp_path) -> None:
    train = blobs(80, (16, 16, 1))
    test = np.concatenate([blobs(10, (16, 16, 1), seed=5), blobs(10, (16, 16, 1), seed=6, anomalous=True)])
    det = oddeye.create(name, **{**FAST, "epochs": 12}, val_fraction=0.2, **params).fit(train)
    scores = det.score(test)
    assert np.isfinite(scores).all()
    assert scores[10:].mean() > scores[:10].mean()  # blobs' anomalies are easy: every family sees them
    det.save(tmp_path / "run")
    np.testing.assert_allclose(oddeye.load(tmp_path / "run").score(test), scores, rtol=1e-5, atol=1e-5)


def test_boss_score_modes_share_one_training_and_both_is_fused_on_heldout_images() -> None:
    det = oddeye.create("boss", **FAST, val_fraction=0.25).fit(blobs(40, (16, 16, 1)))
    model = det.model_
    assert model.fusion.scale.shape == (2,) and (model.fusion.scale > 0).all()
    x = batch(5)
    with torch.no_grad():
        parts = model._components(x)[0]
        model.score_mode = "classifier"
        torch.testing.assert_close(model.infer(x).score, parts[:, 0])
        model.score_mode = "reconstruction"
        torch.testing.assert_close(model.infer(x).score, parts[:, 1])
        out = model.infer(x, maps=True)
    assert out.anomaly_map.shape == (5, 16, 16) and out.reconstruction.shape == x.shape


def test_bad_parameters_name_the_valid_values() -> None:
    with pytest.raises(OddeyeError, match="kinds must be one of"):
        oddeye.create("boss", kinds="noise,glitter", **FAST).fit(blobs(8, (8, 8, 1)))
    with pytest.raises(OddeyeError, match="score must be one of center, knn"):
        oddeye.create("deep-svdd", score="far", **FAST).fit(blobs(8, (8, 8, 1)))
    with pytest.raises(OddeyeError, match="unknown detector 'nope'"):
        oddeye.create("ensemble", members="pixel-knn,nope", **FAST).fit(blobs(8, (8, 8, 1)))
    with pytest.raises(OddeyeError, match="cannot contain another ensemble"):
        oddeye.create("ensemble", members="pixel-knn,ensemble", **FAST).fit(blobs(8, (8, 8, 1)))
    assert set(KINDS) >= {"noise", "paste", "swap", "blur", "shift"}


def test_deep_svdd_centre_is_fixed_before_training_and_features_pull_toward_it() -> None:
    det = oddeye.create("deep-svdd", **{**FAST, "epochs": 6}, val_fraction=0.2).fit(blobs(60, (16, 16, 1)))
    assert (det.model_.center.abs() >= 0.1).all()
    losses = [r.train_loss for r in det.history_]
    assert losses[-1] < losses[0]


def test_ensemble_trains_every_member_through_the_loop_on_the_same_split() -> None:
    train = blobs(40, (12, 12, 1))
    settings = {**FAST, "val_fraction": 0.25, "contamination": "0"}  # every training image kept
    det = oddeye.create("ensemble", members=["pixel-knn", "dae"], **settings).fit(train)
    knn, dae = det.model_.detectors
    assert knn.memory.bank.shape[0] == 30  # 40 images, 10 held out: the members never saw the held-out ones
    x = torch.from_numpy(train[:6]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        parts = torch.stack([knn.infer(x).score, dae.infer(x).score], 1)
        expected = ((parts - det.model_.fusion.loc) / det.model_.fusion.scale).mean(1)
        torch.testing.assert_close(det.model_.infer(x).score, expected)


def test_unset_epochs_take_the_detectors_own_cap(monkeypatch) -> None:
    from oddeye.detectors.denoising import DenoisingAutoencoder

    monkeypatch.setattr(DenoisingAutoencoder, "default_epochs", 3)
    det = oddeye.create("dae", batch_size=16, progress=False, patience=50).fit(blobs(30, (8, 8, 1)))
    assert len(det.history_) == 3
    det = oddeye.create("dae", batch_size=16, progress=False, patience=50, epochs=2).fit(blobs(30, (8, 8, 1)))
    assert len(det.history_) == 2


def test_default_runs_unchanged_on_homework_shaped_colour_images(tmp_path) -> None:
    train, test = blobs(24, (64, 64, 3)), blobs(4, (64, 64, 3), seed=9, anomalous=True)
    det = oddeye.create("default", epochs=1, batch_size=8, progress=False, val_fraction=0.25).fit(train)
    assert [m.label for m in det.model_.members()] == ["pixel-knn", "hog-knn", "color-knn", "patch-knn"]
    pixels, edges, colours = (m.memory.bank for m in det.model_.members()[:3])
    assert pixels.shape == (18, 32 * 32 * 3)  # blurred, then halved
    assert edges.shape == (18, 16 * 16 * 8) and colours.shape == (18, 8**3)
    gray = oddeye.create("default", progress=False).fit(blobs(24, (28, 28, 1)))
    assert [m.label for m in gray.model_.members()] == ["pixel-knn", "hog-knn", "shape-knn", "patch-knn"]
    scores = det.score(test)
    det.save(tmp_path / "run")
    np.testing.assert_allclose(oddeye.load(tmp_path / "run").score(test), scores, rtol=1e-5, atol=1e-5)


def test_training_summary_names_ensemble_members_and_memory_banks() -> None:
    train = blobs(30, (8, 8, 1))
    ens = oddeye.create("ensemble", members="pixel-knn,dae", **FAST).fit(train)
    assert ens.training_summary().startswith("ensemble of 2 members (pixel-knn, dae)")
    knn = oddeye.create("pixel-knn", progress=False).fit(train)
    assert knn.training_summary().startswith("no training loop (memory bank)")
    dae = oddeye.create("dae", **FAST).fit(train)
    assert dae.training_summary().startswith("2 epochs, reached the epoch cap, kept epoch")


def test_ensemble_members_keep_their_own_precision_preference(monkeypatch) -> None:
    import oddeye.training.loop as loop

    used: dict[str, str] = {}
    real = loop._train_epoch

    def spy(engine, data, idx, opt, config, device, precision, *rest):
        used[type(engine.model).__name__] = precision
        return real(engine, data, idx, opt, config, device, precision, *rest)

    monkeypatch.setattr(loop, "_train_epoch", spy)
    monkeypatch.setattr(
        loop, "choose_precision", lambda req, dev, cpu_bf16=True: "bf16" if cpu_bf16 else "fp32"
    )
    oddeye.create("ensemble", members="dae,deep-svdd", **FAST).fit(blobs(20, (8, 8, 1)))
    assert used == {"DenoisingAutoencoder": "bf16", "DeepSVDD": "fp32"}
