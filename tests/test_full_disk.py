"""A full disk or an unwritable place: one clear line, exit code 2, and no partial file left behind.

A full disk is simulated by a file-size limit (RLIMIT_FSIZE) on the oddeye process: any write past
it fails with EFBIG, as a write to a full disk fails with ENOSPC."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import FAST, blobs

pytestmark = pytest.mark.slow  # fresh interpreters under a file-size limit


def limited(max_bytes: int):
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return setup


def oddeye_cli(*args: object, max_bytes: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oddeye", *map(str, args)],
        capture_output=True,
        text=True,
        preexec_fn=limited(max_bytes) if max_bytes else None,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("disk")
    np.save(folder / "train.npy", blobs(60))
    np.save(folder / "test.npy", blobs(400, seed=2))
    oddeye.create("cnn", **FAST).fit(folder / "train.npy").save(folder / "run")
    return {
        "folder": folder,
        "train": folder / "train.npy",
        "test": folder / "test.npy",
        "run": folder / "run",
    }


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "command",
    [
        ["score", "{run}", "{test}", "--out", "{out}/p.csv"],
        ["score", "{run}", "{test}", "--out", "{out}/p.csv", "--report", "{out}/r.html"],
        ["train", "{train}", "--detector", "cnn", "--epochs", "2", "--out", "{out}/run"],
        ["train", "{train}", "--detector", "pixel-knn", "--out", "{out}/run"],
    ],
)
def test_a_full_disk_is_one_line_and_leaves_nothing(setup, tmp_path: Path, command: list[str]) -> None:
    args = [c.format(out=tmp_path, **setup) for c in command]
    limit = 64_000 if "--report" in command else 4096  # the CSV fits, the report does not
    r = oddeye_cli(*args, "--quiet", max_bytes=limit)
    assert_one_line_error(r, "expected a writable location", "File too large")
    if "--report" in command:  # the CSV was written whole before the report failed
        assert leftovers(tmp_path) == ["p.csv"]
        assert len((tmp_path / "p.csv").read_text().splitlines()) == 401
    else:
        assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "out",
    ["/proc/oddeye-test/p.csv", "{file}/p.csv"],
)
def test_an_unwritable_place_is_one_line(setup, tmp_path: Path, out: str) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    r = oddeye_cli(
        "score", setup["run"], setup["test"], "--out", out.format(file=tmp_path / "file"), "--quiet"
    )
    assert_one_line_error(r, "expected a writable location")
    assert leftovers(tmp_path) == ["file"]
