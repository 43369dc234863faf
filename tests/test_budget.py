"""--budget: the parts that train share it, each setting its steps from its measured speed.

Time is simulated (a fake clock advanced by each training step), so these tests check the pacing
itself and never depend on how fast the test machine is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import oddeye
from helpers import blobs
from oddeye.config import TrainConfig, parse_duration
from oddeye.errors import OddeyeError
from oddeye.training import budget as budget_module
from oddeye.training import loop

STEP_S = 0.1  # simulated seconds per training step


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budget_module, "time", fake)
    real_step = loop.train_step

    def step(*args, **kwargs):
        fake.now += STEP_S
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step)
    return fake


@pytest.mark.parametrize(
    "text, seconds", [("900", 900.0), ("90s", 90.0), ("20m", 1200.0), ("1.5h", 5400.0), ("1h30m", 5400.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert TrainConfig().replace(budget=text).budget == seconds


def test_a_bad_budget_is_one_clear_error() -> None:
    with pytest.raises(OddeyeError, match=r"budget expects a time like 20m, 1h30m or 900"):
        TrainConfig().replace(budget="soon")
    with pytest.raises(OddeyeError, match="invalid training setting budget"):
        TrainConfig().replace(budget=0)


def test_members_share_the_budget_and_stop_at_their_steps(clock: FakeClock, tmp_path: Path) -> None:
    members = "pixel-knn,cnn:channels=[4],cnn-bn:channels=[4]"
    det = oddeye.train(
        blobs(200), "ensemble", tmp_path / "run", members=members, budget=20, epochs=50, batch_size=16,
        progress=False,
    )  # fmt: skip
    plan = json.loads((tmp_path / "run" / "model.json").read_text())["training"]["plan"]
    assert plan["budget_s"] == 20 and plan["reserve_s"] == 2.0
    first, second = plan["parts"]
    assert [first["name"], second["name"]] == ["cnn (member 2/3)", "cnn-bn (member 3/3)"]
    assert first["share_s"] == pytest.approx(9.0)  # (20 - 2) / 2: pixel-knn does not train
    for part in (first, second):
        assert part["images_per_s"] == pytest.approx(16 / STEP_S)  # measured over its first steps
        assert part["steps"] == part["step_cap"] <= part["share_s"] / STEP_S + 1
    assert second["share_s"] == pytest.approx(20 * 0.9 - first["steps"] * STEP_S)  # what was left
    assert (first["steps"] + second["steps"]) * STEP_S <= 18.0 + STEP_S
    histories = det.member_histories_
    assert 1 < len(histories["cnn"]) < 50  # several epochs, far from the cap: the budget ended it


def test_a_part_that_converges_early_leaves_its_time_to_the_next(clock: FakeClock) -> None:
    det = oddeye.create(
        "ensemble", members="cnn:channels=[4];epochs=2,cnn-bn:channels=[4]", budget=20, batch_size=16,
        epochs=None, progress=False,
    ).fit(blobs(200))  # fmt: skip
    first, second = det.record_.training.plan["parts"]
    assert first["steps"] < first["step_cap"]  # its epoch cap came first
    assert second["share_s"] > 9.0


def test_the_plan_is_printed_at_the_start(clock: FakeClock, cli, homework, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ODDEYE_PROGRESS", "lines")
    args = ("--detector", "cnn", "--budget", "30s", "--batch-size", "16")
    r = cli("train", homework["train"], *args, "--out", tmp_path / "run")
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert "budget 30.0 s: cnn 27.0 s; 3.0 s kept for banks, scales and scoring" in lines[0]
    assert any("cnn: measured" in t and "steps in its 27.0 s share" in t for t in lines)


def test_a_budget_with_nothing_to_train_says_so(cli, homework, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ODDEYE_PROGRESS", "lines")
    r = cli("train", homework["train"], "--budget", "5m", "--out", tmp_path / "run")
    assert r.code == 0 and "budget 5:00: nothing trains (memory banks and scales only)" in r.err


def test_a_single_detector_stopped_by_its_budget_says_so(clock: FakeClock) -> None:
    det = oddeye.create("cnn", channels=[4], budget=2, batch_size=16, progress=False).fit(blobs(200))
    assert len(det.history_) < det.build_.epoch_cap and not det.stopped_early_
    assert ", used its time budget, kept epoch" in det.training_summary()
