"""The input pipeline: a resident set and a streamed one give the same batches, in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddeye
from helpers import FAST, blobs
from oddeye.data import as_imageset
from oddeye.training import loop
from oddeye.training.feed import Feed

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "array",
    [
        blobs(50, (8, 8, 3), seed=1),  # the homework's uint8 NHWC
        blobs(50, (8, 8, 1), seed=2).transpose(0, 3, 1, 2).astype(">f4") / 255,  # big-endian NCHW
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_resident_and_streamed_batches_are_identical(array: np.ndarray, channels_last: bool) -> None:
    data = as_imageset(array)
    resident = Feed(data, CPU, channels_last, resident=True)
    streamed = Feed(data, CPU, channels_last, resident=False)
    assert resident.resident and not streamed.resident
    idx = np.array([0, 3, 4, 17, 49])
    a, b = resident(idx), streamed(idx)
    h, w, c = data.shape
    assert a.shape == (5, c, h, w)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert a.min() >= -1 and a.max() <= 1


def test_stream_yields_every_batch_in_order_one_ahead() -> None:
    data = as_imageset(blobs(40, (8, 8, 3), seed=3))
    feed = Feed(data, CPU, resident=False)
    batches = [np.arange(i, min(i + 7, 40)) for i in range(0, 40, 7)]
    got = list(feed.stream(iter(batches)))
    assert [list(i) for i, _ in got] == [list(b) for b in batches]
    for idx, x in got:
        torch.testing.assert_close(x, feed(idx), rtol=0, atol=0)
    assert list(feed.stream(iter([]))) == []


def test_training_is_the_same_with_the_set_resident(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a GPU run does (the uint8 set on the device) gives the same weights as streaming."""
    train, test = blobs(60, (8, 8, 3), seed=1), blobs(10, (8, 8, 3), seed=2)
    streamed = oddeye.create("cnn-bn", **FAST).fit(train).score(test)
    real_init = Feed.__init__

    def resident_init(self, data, device, channels_last=False, resident=None):
        real_init(self, data, device, channels_last, True if resident is None else resident)

    monkeypatch.setattr(Feed, "__init__", resident_init)
    np.testing.assert_array_equal(oddeye.create("cnn-bn", **FAST).fit(train).score(test), streamed)


def test_compile_wraps_the_training_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile hands the step to torch.compile (spied here: compiling takes a minute on a CPU)."""
    compiled = []

    def spy(module):
        compiled.append(type(module).__name__)
        return module

    monkeypatch.setattr(loop.torch, "compile", spy)
    oddeye.create("cnn", **FAST, compile=True).fit(blobs(30, (8, 8, 1)))
    assert compiled == ["LossOf"]
