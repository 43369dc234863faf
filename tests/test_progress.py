"""Progress wherever oddeye runs: plain flushed lines into pipes and logs, bars on a terminal,
nothing with --quiet."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from oddeye import progress

CLI = [sys.executable, "-m", "oddeye"]
STAMP = r"\[oddeye \d\d:\d\d:\d\d\] "
NUMBER = r"[-+\d.e,]+"
EPOCH_LINE = re.compile(
    STAMP + rf"cnn epoch (\d+)/3: train {NUMBER}, held-out {NUMBER}, {NUMBER} images/s, "
    rf"[\d.:]+( s)? elapsed, ~[\d.:]+( s)? left at most$"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ODDEYE_PROGRESS"}
    return {**env, **extra}


def test_a_training_into_a_pipe_prints_one_line_per_epoch_and_phase(homework, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", homework["train"], "--detector", "cnn", "--epochs", "3", "--out", run]
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env())
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    epochs = [m.group(1) for m in map(EPOCH_LINE.match, lines) if m]
    assert epochs == ["1", "2", "3"], p.stderr
    assert any(re.match(STAMP + r"cnn: 3 epochs, reached the epoch cap, kept epoch \d$", t) for t in lines)
    assert any(re.match(STAMP + r"scoring held-out images: 5 images in [\d.]+ s", t) for t in lines)
    assert "\r" not in p.stderr and "[oddeye" not in p.stdout  # no bars; results alone on stdout
    assert p.stdout.startswith("trained cnn on 96 images")

    s = subprocess.run(
        [*CLI, "score", run, homework["test"], "--out", tmp_path / "p.csv"], capture_output=True, text=True
    )
    assert re.search(STAMP + r"scoring: 40 images in [\d.]+ s \([\d,]+ images/s\)\n", s.stderr), s.stderr


def test_the_lines_arrive_while_training_still_runs(homework, tmp_path: Path) -> None:
    args = ["train", homework["train"], "--detector", "cnn", "--epochs", "60", "--patience", "60"]
    p = subprocess.Popen(
        [*CLI, *args, "--out", tmp_path / "run"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        first = p.stderr.readline()
        assert "cnn epoch 1/60" in first
        assert p.poll() is None  # flushed at once, not when the process ends
    finally:
        p.kill()
        p.wait()


def test_quiet_prints_no_progress(cli, homework, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ODDEYE_PROGRESS", raising=False)
    r = cli(
        "train", homework["train"], "--detector", "cnn", "--epochs", "2", "--quiet", "--out", tmp_path / "run"
    )
    assert r.code == 0 and r.err == ""


def test_a_terminal_gets_bars_not_lines(homework, tmp_path: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a real width
    args = ["train", homework["train"], "--detector", "cnn", "--epochs", "2", "--out", tmp_path / "run"]
    p = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=slave, env=_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the other end closed (Linux raises EIO)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert p.wait() == 0
    shown = b"".join(chunks).decode(errors="replace")
    assert "training cnn" in shown and "\r" in shown  # tqdm redraws in place
    assert "[oddeye" not in shown


def test_a_long_phase_reports_every_interval_with_the_time_left(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ODDEYE_PROGRESS", raising=False)
    with progress.Task("scoring", 30, "images", interval=0.0) as task:
        for _ in range(3):
            task.update(10)
    lines = capsys.readouterr().err.splitlines()
    assert re.match(STAMP + r"scoring: 10/30 images, [\d.]+ s elapsed, ~[\d.]+ s left$", lines[0])
    assert re.match(STAMP + r"scoring: 30 images in [\d.]+ s", lines[-1])


@pytest.mark.parametrize("forced, expected", [("off", "off"), ("bars", "bars"), ("lines", "lines")])
def test_the_environment_can_force_a_mode(forced, expected, monkeypatch) -> None:
    monkeypatch.setenv("ODDEYE_PROGRESS", forced)
    assert progress.mode(True) == expected
    assert progress.mode(False) == "off"


def test_clock() -> None:
    assert progress.clock(4.24) == "4.2 s"
    assert progress.clock(125) == "2:05"
    assert progress.clock(3725) == "1:02:05"
