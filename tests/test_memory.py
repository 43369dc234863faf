"""Training on a memory-mapped set never converts it whole: peak RSS stays far below float32 size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

N, SHAPE = 6000, (64, 64, 3)  # 74 MB as uint8; 295 MB as float32

CHILD = r"""
import json, resource, sys
import oddeye, torch

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

# warm up torch's allocators and kernels on a tiny set first, so the baseline includes them
det = dict(epochs=1, batch_size=128, score_batch_size=128, progress=False)
oddeye.create("cnn-bn", **det).fit(torch.zeros(256, 64, 64, 3, dtype=torch.uint8).numpy())
base = rss_mb()
oddeye.create("cnn-bn", **det).fit(sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"base_mb": base, "peak_mb": peak}))
"""


def test_peak_rss_while_training_on_a_memory_map(tmp_path: Path) -> None:
    path = tmp_path / "trainingset.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(N, *SHAPE))
    arr[:] = np.random.default_rng(0).integers(0, 256, (N, *SHAPE), dtype=np.uint8)
    del arr
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    uint8_mb = N * np.prod(SHAPE) / 2**20
    growth = figures["peak_mb"] - figures["base_mb"]
    # the mapped file itself may become resident (uint8 size); a float32 copy would add 4x that
    assert growth < 2 * uint8_mb, f"{figures}, uint8 set {uint8_mb:.0f} MB"
