"""Shared fixtures: small homework-shaped data, an in-process CLI runner, and every registered
detector trained once for the registry-wide tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import REGISTRY_SETTINGS, REGISTRY_TEST, REGISTRY_TRAIN, blobs
from oddeye.cli import main


@dataclass(frozen=True)
class TrainedRun:
    """One registered detector trained on ``REGISTRY_TRAIN`` and saved; treat it as read-only."""

    name: str
    run: Path  # the run folder (copy it before changing anything in it)
    detector: oddeye.Detector  # as fitted (not reloaded)
    scores: np.ndarray  # its scores on REGISTRY_TEST


CHROMIUM = os.environ.get("ODDEYE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright (skipped, with the reason, where either is missing)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"headless Chromium not found at {CHROMIUM}: install it with 'apt-get install chromium'")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], TrainedRun]:
    """``trained_run(name)``: the detector ``name`` trained once per test session (on first use)
    and shared by every registry-wide test: save/load, formats, export, determinism, maps."""
    cache: dict[str, TrainedRun] = {}

    def get(name: str) -> TrainedRun:
        if name not in cache:
            run = tmp_path_factory.mktemp(f"registry-{name}") / "run"
            det = oddeye.train(REGISTRY_TRAIN, name, run, **REGISTRY_SETTINGS)
            cache[name] = TrainedRun(name, run, det, det.score(REGISTRY_TEST))
        return cache[name]

    return get


@pytest.fixture
def homework(tmp_path: Path) -> dict[str, Path]:
    """A tiny set in the course's layout: trainingset.npy, testingset.npy, testing_labels.npy."""
    train = blobs(96, seed=1)
    test = np.concatenate([blobs(20, seed=2), blobs(20, seed=3, anomalous=True)])
    labels = np.r_[np.zeros(20, np.int64), np.ones(20, np.int64)]
    paths = {
        "train": tmp_path / "trainingset.npy",
        "test": tmp_path / "testingset.npy",
        "labels": tmp_path / "testing_labels.npy",
    }
    for key, arr in zip(paths, (train, test, labels)):
        np.save(paths[key], arr)
    return paths


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``oddeye ARGS`` in-process; returns exit code and captured output."""

    def run(*args: object) -> CliResult:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many fuzzing cases ran, per test and outcome (tests/test_fuzz.py)."""
    from helpers import FUZZ_CASES

    if not FUZZ_CASES:
        return
    terminalreporter.section("fuzzing cases")
    tests = sorted({test for test, _ in FUZZ_CASES})
    for test in tests:
        outcomes = {o: c for (t, o), c in FUZZ_CASES.items() if t == test}
        detail = ", ".join(f"{c} {o}" for o, c in sorted(outcomes.items()))
        terminalreporter.write_line(f"{test}: {sum(outcomes.values())} ({detail})")
    terminalreporter.write_line(f"total: {sum(FUZZ_CASES.values())} cases")
