"""Where a benchmark figure came from: versions, machine, git commit, command line, date."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import oddeye

CODE_PATHS = ("src", "pyproject.toml", "Makefile")  # what a figure depends on; results are not code


def git_commit(repo: Path | None = None) -> str | None:
    """HEAD's hash, with ``-dirty`` when the code differs from it (``CODE_PATHS``; results and
    BENCHMARKS.md written by earlier runs do not count); None outside a git checkout."""
    cwd = repo or Path.cwd()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device | str) -> dict[str, Any]:
    """The context every results file records."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "oddeye " + " ".join(sys.argv[1:])
        if Path(sys.argv[0]).name == "oddeye"
        else " ".join(sys.argv),
        "git_commit": git_commit(),
        "versions": {
            "oddeye": oddeye.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": {
            "cpu": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "gpu": gpu,
        },
    }
