"""Banks that cover the data (coreset selection) and banks on principal axes (issue 24)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddeye
from helpers import blobs
from oddeye.detectors.base import Batches
from oddeye.detectors.memory import KNNBank, coreset, k_center, principal_axes, sketch


def clusters(sizes: list[int], dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Rows in tight clusters of ``sizes`` rows each, far apart; and each row's cluster."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(sizes), dim, generator=g) * 20
    rows = torch.cat(
        [c + 0.1 * torch.randn(n, dim, generator=g) for c, n in zip(centres, sizes, strict=True)]
    )
    return rows, np.repeat(np.arange(len(sizes)), sizes)


def test_k_center_reaches_every_cluster_however_small() -> None:
    rows, label = clusters([500, 3, 200, 1])
    picked = k_center(rows, 4)
    assert sorted(label[picked]) == [0, 1, 2, 3]  # an evenly spaced subset of 4 keeps only the big ones
    np.testing.assert_array_equal(picked, k_center(rows.clone(), 4))  # the same rows, the same picks


def test_coreset_covers_each_group_and_returns_sorted_distinct_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import oddeye.detectors.memory as memory

    rows, label = clusters([300, 300, 2, 300, 2])
    monkeypatch.setattr(memory, "CORESET_GROUP", 256)  # several groups, each giving its share
    keep = coreset(rows, 40)
    assert len(keep) == 40 and np.all(np.diff(keep) > 0)
    assert set(label[keep]) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(coreset(rows, 2000), np.arange(len(rows)))  # fewer rows than asked: all


def test_the_coverage_radius_is_far_smaller_than_an_evenly_spaced_subsets() -> None:
    rows, _ = clusters([400, 5, 5, 5, 400, 5, 5], dim=4, seed=3)

    def radius(keep: np.ndarray) -> float:
        return float(torch.cdist(rows, rows[torch.from_numpy(keep)]).min(1).values.max())

    spaced = np.unique(np.linspace(0, len(rows) - 1, 10).astype(int))
    assert radius(coreset(rows, 10)) < 0.2 * radius(spaced)


def test_a_coreset_bank_streams_two_passes_and_keeps_the_rare_images() -> None:
    rows, label = clusters([200, 2, 200, 2], dim=3 * 8 * 8)
    images = rows.view(-1, 3, 8, 8)  # images whose layouts are these rows
    passes: list[int] = []

    def batches_iter():
        passes.append(0)
        return iter(images.split(16))

    bank = KNNBank(k=1, max_bank=8, select="coreset")
    bank.build(Batches(batches_iter, len(rows)), lambda x: x.flatten(1))
    assert len(passes) == 2 and bank.bank.shape == (8, 192)  # a sketch pass, then the rows kept
    assert set(label[bank.positions]) == {0, 1, 2, 3}
    np.testing.assert_allclose((bank.bank + bank.offset).numpy(), rows[bank.positions].numpy(), atol=1e-5)
    shared = KNNBank(k=1, max_bank=8, select="coreset")  # a pass that knows its cover: asked, not computed
    asked: list[int] = []
    source = Batches(batches_iter, len(rows), cover=lambda m: asked.append(m) or bank.positions)
    shared.build(source, lambda x: x.flatten(1))
    assert asked == [8] and np.array_equal(shared.positions, bank.positions)


def test_every_bank_of_a_default_keeps_the_same_covering_images_computed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import oddeye.training.loop as loop

    calls: list[int] = []
    real = loop.coreset
    monkeypatch.setattr(loop, "coreset", lambda rows, m: calls.append(m) or real(rows, m))
    members = ["pixel-knn:max_bank=20;select=coreset", "hog-knn:max_bank=20;select=coreset"]
    det = oddeye.create(
        "default", members=members, colour_members=["color-knn:max_bank=20;select=coreset"],
        local_members=["patch-knn:max_bank=20;select=coreset;radius=0"], progress=False, contamination="0",
    ).fit(blobs(60, (16, 16, 3), seed=1))  # fmt: skip
    banks = det.model_.members()
    assert calls == [20]  # one sketch pass for the four banks
    kept = [b.memory.positions for b in banks[:3]] + [banks[3].positions_]
    assert all(np.array_equal(k, kept[0]) for k in kept) and len(kept[0]) == 20


def test_sketch_is_a_fixed_projection_that_keeps_distances_roughly() -> None:
    rows = torch.randn(50, 300)
    a, b = sketch(rows), sketch(rows.clone())
    assert a.shape == (50, 32) and torch.equal(a, b)
    ratio = torch.pdist(a) / torch.pdist(rows)
    assert 0.5 < float(ratio.median()) < 1.5
    assert torch.equal(sketch(rows[:, :8]), rows[:, :8])  # few dimensions: as they are


@pytest.mark.parametrize("dim", [40, 1500])  # an exact eigendecomposition, and the randomised search
def test_principal_axes_find_the_directions_of_most_variance(dim: int) -> None:
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(dim, 3, generator=g))[0]
    rows = (torch.randn(400, 3, generator=g) * torch.tensor([10.0, 5.0, 2.0])) @ basis.T + 3.0
    mean, axes = principal_axes(rows, 3)
    assert axes.shape == (dim, 3)
    np.testing.assert_allclose((axes.T @ axes).numpy(), np.eye(3), atol=1e-4)
    assert float(torch.linalg.matrix_norm(basis.T @ axes)) == pytest.approx(3**0.5, rel=1e-3)  # same span
    torch.testing.assert_close(principal_axes(rows.clone(), 3)[1], axes)  # repeatable, signs fixed


def test_a_bank_on_principal_axes_keeps_low_rank_distances_and_maps_in_feature_space() -> None:
    g = torch.Generator().manual_seed(2)
    basis = torch.randn(4, 30, generator=g)
    rows = torch.randn(120, 4, generator=g) @ basis  # rank 4 in 30 dimensions
    bank = KNNBank(k=1, dims=4)
    bank.build(Batches(lambda: iter(rows.split(32)), len(rows)), lambda x: x)
    assert bank.bank.shape == (120, 5) and bank.axes.shape == (30, 4)  # and the length left out
    queries = torch.randn(6, 4, generator=g) @ basis
    full = KNNBank(k=1)
    full.build(Batches(lambda: iter(rows.split(32)), len(rows)), lambda x: x)
    torch.testing.assert_close(bank(queries), full(queries), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(bank.closest(queries), full.closest(queries), rtol=1e-3, atol=1e-3)
    away = queries + 5 * torch.linalg.qr(torch.randn(30, 30, generator=g))[0][:, :1].T  # a direction off
    off = away - (away - bank.centre) @ bank.axes @ bank.axes.T - bank.centre  # the span: not in the axes
    assert float(off.norm(dim=1).min()) > 1  # (most of it is off the span)
    assert bool((bank(away) >= off.norm(dim=1) - 1e-3).all())  # still far: its distance counts


@pytest.mark.parametrize("settings", [{"select": "coreset", "max_bank": 30}, {"dims": 8}])
def test_bank_detectors_with_either_choice_train_save_and_load_alike(settings: dict, tmp_path) -> None:
    train = blobs(60, (16, 16, 3), seed=1)
    test = np.concatenate([blobs(6, (16, 16, 3), seed=2), blobs(6, (16, 16, 3), seed=3, anomalous=True)])
    for name in ("pixel-knn", "hog-knn", "color-knn"):
        det = oddeye.train(train, name, tmp_path / name, progress=False, **settings)
        assert det.build_.params["select" if "select" in settings else "dims"] == next(
            iter(settings.values())
        )
        again = oddeye.load(tmp_path / name, progress=False)
        np.testing.assert_allclose(again.score(test), det.score(test), rtol=1e-6)
        assert np.median(det.score(test[6:])) > np.median(det.score(test[:6]))


def test_runs_written_before_the_choices_existed_rebuild_spaced_full_dimension_banks() -> None:
    from oddeye.detectors.memory import PixelKNNParams

    old = PixelKNNParams.from_record({"k": 3, "blur": 1 / 28, "max_bank": 20000}, "pixel-knn")
    assert old.select == "spaced" and old.dims == 0


def test_a_bank_on_principal_axes_exports_with_parity(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from oddeye.export import export_onnx

    run = tmp_path / "run"
    oddeye.train(blobs(60, (12, 12, 3), seed=1), "pixel-knn", run, progress=False, dims=8)
    done = export_onnx(run, tmp_path / "model.onnx")
    assert done.parity.max_relative_score_difference <= 1e-4 and done.parity.flags_identical


def test_layouts_pooled_before_normalising_are_the_sketch_of_the_normalised_images() -> None:
    import torch.nn.functional as F

    from oddeye.data.imageset import Normalisation
    from oddeye.detectors.memory import SKETCH_SIDE, image_sketch, layout_sketch

    raw = torch.from_numpy(blobs(10, (32, 24, 3), seed=4)).permute(0, 3, 1, 2)  # as stored, NHWC
    norm = Normalisation()
    pooled = layout_sketch(norm.apply(F.adaptive_avg_pool2d(raw.float(), SKETCH_SIDE)))
    torch.testing.assert_close(pooled, image_sketch(norm.apply(raw)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", [0, 4])
def test_one_search_gives_a_maps_score_and_nearest_row_as_two_searches_did(dims: int) -> None:
    g = torch.Generator().manual_seed(5)
    rows = torch.randn(300, 12, generator=g)
    bank = KNNBank(k=5, dims=dims)
    bank.build(Batches(lambda: iter(rows.split(64)), len(rows)), lambda x: x)
    queries = torch.randn(9, 12, generator=g)
    score, near = bank.search(queries)
    torch.testing.assert_close(score, bank(queries), rtol=0, atol=0)
    torch.testing.assert_close(near, bank.closest(queries), rtol=0, atol=0)
