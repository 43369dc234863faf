"""The one training loop: held-out split, convergence stop, best weights kept, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddeye
from helpers import FAST, blobs
from oddeye.config import TrainConfig
from oddeye.errors import OddeyeError
from oddeye.training.device import choose_device, choose_precision
from oddeye.training.loop import split_indices


def test_heldout_split_is_disjoint_and_covers_everything() -> None:
    train, val = split_indices(100, 0.1, np.random.default_rng(0))
    assert len(val) == 10 and len(train) == 90
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(100))


def test_tiny_sets_still_train() -> None:
    det = oddeye.create("cnn", **FAST).fit(blobs(2))
    assert len(det.history_) == 2


def test_stops_when_the_heldout_loss_converges() -> None:
    # lr=0 -> the held-out loss never improves after epoch 1; patience 2 -> stop after epoch 3
    det = oddeye.create("cnn", epochs=50, lr=1e-12, patience=2, progress=False).fit(blobs(40))
    assert det.stopped_early_ and len(det.history_) == 3 and det.best_epoch_ == 1


def test_runs_to_the_cap_while_improving() -> None:
    det = oddeye.create("cnn", epochs=4, patience=10, progress=False).fit(blobs(64))
    assert not det.stopped_early_ and len(det.history_) == 4


def test_best_weights_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a held-out loss that gets worse after epoch 2, the kept weights are epoch 2's."""
    from oddeye.training import loop

    losses = iter([5.0, 1.0, 3.0, 4.0, 6.0])
    snapshots: list[dict[str, torch.Tensor]] = []
    real = loop.evaluate_loss

    def fake(model, *args):
        real(model, *args)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(losses)

    monkeypatch.setattr(loop, "evaluate_loss", fake)
    det = oddeye.create("cnn", epochs=5, patience=3, trim=False, progress=False).fit(blobs(40))
    assert det.best_epoch_ == 2 and len(det.history_) == 5
    for key, value in det.model_.state_dict().items():
        assert torch.equal(value.cpu(), snapshots[1][key])


def test_after_trimming_the_best_epoch_is_chosen_among_the_later_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The held-out set changes when it is trimmed (after epoch 2 of 5 here), so an earlier
    epoch's loss is not compared with the later ones: the best of epochs 3-5 is kept."""
    from oddeye.training import loop

    losses = iter([5.0, 1.0, 3.0, 2.0, 6.0])
    monkeypatch.setattr(loop, "evaluate_loss", lambda *args: next(losses))
    det = oddeye.create("cnn", epochs=5, patience=3, contamination="0.1", progress=False).fit(blobs(40))
    assert det.record_.set_aside is not None and "after epoch 2" in det.record_.set_aside.rule
    assert det.best_epoch_ == 4 and len(det.history_) == 5


def test_history_has_one_row_per_epoch_with_both_losses() -> None:
    det = oddeye.create("cnn-bn", epochs=3, progress=False).fit(blobs(50))
    assert [r.epoch for r in det.history_] == [1, 2, 3]
    assert all(r.train_loss > 0 and r.val_loss > 0 and r.images_per_s > 0 for r in det.history_)


def test_training_never_converts_the_whole_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are gathered by index: no request ever touches more than a batch of images."""
    from oddeye.data.imageset import ImageSet

    sizes: list[int] = []
    real = ImageSet.batch

    def spy(self, indices):
        out = real(self, indices)
        sizes.append(out.shape[0])
        return out

    monkeypatch.setattr(ImageSet, "batch", spy)
    oddeye.create("cnn", epochs=1, batch_size=16, score_batch_size=16, progress=False).fit(blobs(100))
    assert max(sizes) <= 16


def test_device_choice_and_precision() -> None:
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(OddeyeError, match="unknown device"):
        choose_device("tpu")
    cpu = torch.device("cpu")
    assert choose_precision("fp32", cpu) == "fp32"
    assert choose_precision("auto", cpu, cpu_bf16=False) == "fp32"


def test_config_rejects_unknown_and_invalid_settings() -> None:
    with pytest.raises(OddeyeError, match="unknown training setting 'epoch'"):
        TrainConfig().replace(epoch=3)
    with pytest.raises(OddeyeError, match="batch_size"):
        TrainConfig().replace(batch_size=0)
    with pytest.raises(OddeyeError, match="expects int"):
        TrainConfig().replace(epochs=2.5)
    assert TrainConfig().replace(lr="0.01").lr == 0.01
