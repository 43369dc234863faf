"""One line from any exception: ``first_line``, and the places that quote a library's error with it
even when that error has no message at all."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import oddeye
from helpers import blobs
from oddeye.errors import OddeyeError, first_line
from oddeye.training.checkpoint import Checkpoint, ScopeState


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "error, line",
    [
        (ValueError("bad value\nmore detail\n"), "bad value"),
        (
            RuntimeError("\n  Error(s) in loading state_dict:\n\tMissing key(s)"),
            "Error(s) in loading state_dict:",
        ),
        (RuntimeError(""), "RuntimeError"),
        (ValueError(), "ValueError"),
        (KeyError(" \n\t"), "KeyError"),  # str() of a KeyError is its repr: "' \n\t'"
        (OSError("   "), "OSError"),
        (BrokenStr(), "BrokenStr"),
    ],
)
def test_first_line_is_one_line_and_never_fails(error: BaseException, line: str) -> None:
    got = first_line(error)
    assert "\n" not in got and got.strip()
    if not isinstance(error, KeyError):
        assert got == line


def assert_one_line_ending(message: str, tail: str) -> None:
    assert "\n" not in message and message.endswith(tail), message


def test_restoring_a_checkpoint_that_fails_without_a_message(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "checkpoint.safetensors", {})
    state = ScopeState(epoch=1, done=True, history=[], best_epoch=1, best_loss=0.0, waited=0,
                       stopped_early=False, numpy_rng={})  # fmt: skip
    checkpoint.meta = {"": vars(state)}

    class Refuses(torch.nn.Module):
        def load_state_dict(self, *args, **kwargs):
            raise RuntimeError("")

    with pytest.raises(OddeyeError) as caught:
        checkpoint.restore("", Refuses(), None)
    assert_one_line_ending(str(caught.value), "expected weights matching this detector, found: RuntimeError")


def test_loading_weights_that_fail_without_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = oddeye.create("pixel-knn", progress=False).fit(blobs(40)).save(tmp_path / "run")

    def refuse(self, *args, **kwargs):
        raise RuntimeError("")

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", refuse)
    with pytest.raises(OddeyeError) as caught:
        oddeye.load(run, progress=False)
    assert_one_line_ending(str(caught.value), "expected weights matching pixel-knn, found: RuntimeError")


def test_an_export_check_whose_runtime_fails_without_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import oddeye.export as export

    class Session:
        def run(self, *args, **kwargs):
            raise ValueError()

    monkeypatch.setattr(export, "open_session", lambda path: Session())
    det = SimpleNamespace(
        normalisation_=SimpleNamespace(lo=0.0, hi=255.0),
        score=lambda images: np.zeros(len(images)),
        infer=lambda images, maps: SimpleNamespace(anomaly_maps=None),
    )
    with pytest.raises(OddeyeError) as caught:
        export.check_parity(det, tmp_path / "m.onnx", blobs(2), source="check")  # type: ignore[arg-type]
    assert_one_line_ending(
        str(caught.value), "expected onnxruntime to run the graph, found: ValueError; nothing written"
    )
