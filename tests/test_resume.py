"""Kill and resume: an interrupted training continues to the same weights and scores as one that
never stopped, whatever epoch it died in; checkpoints survive kills during their own write."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import oddeye
from helpers import blobs
from oddeye.errors import OddeyeError, TrainingInterrupted
from oddeye.training import checkpoint as checkpoint_module
from oddeye.training import loop

EPOCHS = 4
SETTINGS = {"epochs": EPOCHS, "batch_size": 16, "patience": 10, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return blobs(64, seed=7)


def weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] == wb[key]).all(), key
    da, db = oddeye.load(a, progress=False), oddeye.load(b, progress=False)
    test = blobs(12, shape=da.input_shape_, seed=8)
    np.testing.assert_array_equal(da.score(test), db.score(test))
    assert (a / "history.csv").read_text().count("\n") == (b / "history.csv").read_text().count("\n")


def interrupt_after(monkeypatch: pytest.MonkeyPatch, n_epochs: int) -> None:
    """Ctrl-C at the start of epoch ``n_epochs + 1`` (counting every member's epochs)."""
    real, calls = loop._train_epoch, {"n": 0}

    def epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_epochs:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", epoch)


@pytest.mark.parametrize(
    "detector, params, total_epochs",
    [
        ("cnn-bn", {}, EPOCHS),
        ("vae", {}, EPOCHS),
        ("ensemble", {"members": "pixel-knn,cnn,dae"}, 2 * EPOCHS),  # each trained member trims too
        ("fcn", {"contamination": "0.1"}, EPOCHS),  # trimmed after epoch 2: resumed with the same images out
    ],
)
def test_resume_after_an_interrupt_at_every_epoch_matches_an_uninterrupted_run(
    images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detector: str, params: dict, total_epochs: int
) -> None:
    reference = tmp_path / "reference"
    oddeye.train(images, detector, reference, **SETTINGS, **params)
    for k in range(total_epochs):
        run = tmp_path / f"run{k}"
        with monkeypatch.context() as m:
            interrupt_after(m, k)
            with pytest.raises(TrainingInterrupted, match="--resume" if k else "before any epoch finished"):
                oddeye.train(images, detector, run, **SETTINGS, **params)
        if k == 0:  # died before the first epoch ended: nothing was written, start again
            assert not run.exists()
            oddeye.train(images, detector, run, **SETTINGS, **params)
        else:
            assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors"]
            oddeye.train(images, detector, run, resume=True, **SETTINGS, **params)
        assert_same_run(reference, run)
        assert not (run / "checkpoint.safetensors").exists()
        if "contamination" in params or detector == "ensemble":
            assert (run / "set_aside.csv").read_text() == (reference / "set_aside.csv").read_text()
            assert (reference / "set_aside.csv").read_text().count("\n") > 1


def test_early_stopping_state_survives_a_resume(
    images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {**SETTINGS, "epochs": 12, "patience": 2, "min_delta": 0.3}
    oddeye.train(images, "cnn", tmp_path / "reference", **settings)
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        with pytest.raises(TrainingInterrupted):
            oddeye.train(images, "cnn", tmp_path / "run", **settings)
    det = oddeye.train(images, "cnn", tmp_path / "run", resume=True, **settings)
    assert det.stopped_early_
    assert_same_run(tmp_path / "reference", tmp_path / "run")


def test_resume_refuses_other_settings_or_data(
    images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        with pytest.raises(TrainingInterrupted):
            oddeye.train(images, "cnn", tmp_path / "run", **SETTINGS)
    with pytest.raises(OddeyeError, match="found config.lr changed"):
        oddeye.train(images, "cnn", tmp_path / "run", resume=True, **{**SETTINGS, "lr": 0.01})
    with pytest.raises(OddeyeError, match="found data.sample_sha256 changed"):
        oddeye.train(blobs(64, seed=9), "cnn", tmp_path / "run", resume=True, **SETTINGS)
    with pytest.raises(OddeyeError, match="found build.detector changed"):
        oddeye.train(images, "cnn-bn", tmp_path / "run", resume=True, **SETTINGS)


def test_an_existing_run_is_never_silently_overwritten(images, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        with pytest.raises(TrainingInterrupted):
            oddeye.train(images, "cnn", run, **SETTINGS)
    with pytest.raises(
        OddeyeError, match=r"found an interrupted training \(pass --resume to continue it or --force"
    ):
        oddeye.train(images, "cnn", run, **SETTINGS)
    oddeye.train(images, "cnn", run, resume=True, **SETTINGS)
    with pytest.raises(OddeyeError, match="found a finished run"):
        oddeye.train(images, "cnn", run, **SETTINGS)
    with pytest.raises(OddeyeError, match="expected an interrupted training to resume, found a finished run"):
        oddeye.train(images, "cnn", run, resume=True, **SETTINGS)
    with pytest.raises(OddeyeError, match="found nothing to resume"):
        oddeye.train(images, "cnn", tmp_path / "new", resume=True, **SETTINGS)
    oddeye.train(images, "cnn", run, force=True, **SETTINGS)


def test_a_kill_during_the_checkpoint_write_leaves_the_previous_one(
    images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = checkpoint_module.save_file, {"n": 0}

    def dying_save(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint: half a file, then the process "dies"
            Path(path).write_bytes(b"\x00" * 1000)
            raise KeyboardInterrupt
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", dying_save)
    with pytest.raises(TrainingInterrupted):
        oddeye.train(images, "cnn", tmp_path / "run", **SETTINGS)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.safetensors"]  # no temp file
    oddeye.train(images, "cnn", tmp_path / "run", resume=True, **SETTINGS)
    oddeye.train(images, "cnn", tmp_path / "reference", **SETTINGS)
    assert_same_run(tmp_path / "reference", tmp_path / "run")


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/oddeye-pickle-payload-ran")


@pytest.mark.parametrize("kind", ["pickle", "truncated", "empty", "other-detector"])
def test_hostile_or_broken_checkpoints_are_refused(images, tmp_path: Path, monkeypatch, kind: str) -> None:
    MARKER.unlink(missing_ok=True)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        with pytest.raises(TrainingInterrupted):
            oddeye.train(images, "cnn", run, **SETTINGS)
    ckpt = run / "checkpoint.safetensors"
    if kind == "pickle":
        ckpt.write_bytes(pickle.dumps({"model": Payload()}))
    elif kind == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif kind == "empty":
        ckpt.write_bytes(b"")
    else:  # a valid checkpoint of another detector, its fingerprint rewritten to match
        other = tmp_path / "other"
        with monkeypatch.context() as m:
            interrupt_after(m, 1)
            with pytest.raises(TrainingInterrupted):
                oddeye.train(images, "cnn", other, **{**SETTINGS}, channels=[4, 8, 16])
        ckpt.write_bytes((other / "checkpoint.safetensors").read_bytes())
    with pytest.raises(OddeyeError, match="checkpoint.safetensors: expected") as info:
        oddeye.train(images, "cnn", run, resume=True, **SETTINGS)
    assert "\n" not in str(info.value)
    assert not MARKER.exists()


def _default_sigint() -> None:
    """In the child: Ctrl-C as a terminal gives it, whatever this process was left with (an ignored
    SIGINT is inherited across exec, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: object, **kwargs) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "oddeye", *map(str, args)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint, **kwargs
    )


def checkpoint_epoch(ckpt: Path) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(ckpt), framework="pt") as f:
            import json

            return max(s["epoch"] for s in json.loads(f.metadata()["scopes"]).values())
    except Exception:
        return 0


@pytest.fixture(scope="module")
def slow_train(tmp_path_factory) -> tuple[Path, list[str], Path]:
    """A training long enough to be killed (about 0.5 s an epoch), and its uninterrupted run."""
    folder = tmp_path_factory.mktemp("kill")
    data = folder / "train.npy"
    np.save(data, blobs(1200, shape=(32, 32, 3), seed=3))
    args = ["--detector", "cnn-bn", "--epochs", "6", "--patience", "10", "--device", "cpu", "--quiet"]
    reference = folder / "reference"
    subprocess.run([sys.executable, "-m", "oddeye", "train", data, "--out", reference, *args], check=True)
    return data, args, reference


@pytest.mark.slow  # a real training killed in a fresh process
def test_sigkill_at_a_random_point_then_resume(slow_train, tmp_path: Path) -> None:
    data, args, reference = slow_train
    run, rng = tmp_path / "run", random.Random()
    kill_at = rng.uniform(0.2, 1.0)  # of the way through the checkpointed epochs
    proc = run_cli("train", data, "--out", run, *args)
    deadline = time.time() + 120
    while (
        checkpoint_epoch(run / "checkpoint.safetensors") < max(1, int(kill_at * 5)) and time.time() < deadline
    ):
        time.sleep(rng.uniform(0.0, 0.05))
    time.sleep(rng.uniform(0.0, 0.4))  # anywhere in the epoch, the checkpoint write included
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    died = checkpoint_epoch(run / "checkpoint.safetensors")
    if (run / "model.json").exists():
        pytest.skip("the training finished before the kill landed")
    resumed = subprocess.run(
        [sys.executable, "-m", "oddeye", "train", data, "--out", run, *args, "--resume"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    print(f"killed after epoch {died} of 6; resumed to the same weights")
    assert_same_run(reference, run)


@pytest.mark.slow  # a real training killed in a fresh process
def test_ctrl_c_stops_cleanly_after_saving_and_says_how_to_resume(slow_train, tmp_path: Path) -> None:
    data, args, reference = slow_train
    run = tmp_path / "run"
    proc = run_cli("train", data, "--out", run, *args)
    deadline = time.time() + 120
    while checkpoint_epoch(run / "checkpoint.safetensors") < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (
        f"exit {proc.returncode}, stderr {err!r}, signal sent {time.time() - deadline + 120:.1f} s in"
    )
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "training interrupted" in err and "--resume" in err and "checkpoint.safetensors" in err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors"]
    resumed = subprocess.run(
        [sys.executable, "-m", "oddeye", "train", data, "--out", run, *args, "--resume"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference, run)
