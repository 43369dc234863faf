"""Large sets: a sequential scoring pass over a memory-mapped file keeps a bounded resident set,
and scores stream into the CSV, which appears only once complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import FAST, blobs
from oddeye.evaluation import ScoresCsv, read_scores_csv

SHAPE = (32, 32, 3)


def mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's first line
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, oddeye.Detector]:
    folder = tmp_path_factory.mktemp("large")
    path = folder / "big.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(4000, *SHAPE))  # 12 MB
    out[:] = np.resize(blobs(100, SHAPE, seed=4), out.shape)
    out.flush()
    del out
    det = oddeye.create("cnn", **FAST, score_batch_size=256).fit(blobs(64, SHAPE, seed=1))
    return path.resolve(), det


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")
def test_a_scoring_pass_leaves_the_memory_map_unmapped(big) -> None:
    path, det = big
    data = det.prepare(path)
    n = sum(len(chunk) for chunk in det.iter_scores(data))
    assert n == 4000
    after_scoring = mapped_kib(path)
    assert np.asarray(data.array).sum() > 0  # control: reading it all maps all 12 MB
    after_reading = mapped_kib(path)
    assert after_reading > 10_000, after_reading  # the measurement sees the mapping
    assert after_scoring < 1_000, after_scoring  # at most a page or two of partly read images


def test_streamed_csv_equals_the_scores(big, tmp_path: Path) -> None:
    path, det = big
    with ScoresCsv(tmp_path / "p.csv") as out:
        for chunk in det.iter_scores(det.prepare(path)):
            out.write(chunk)
    assert out.rows == 4000
    np.testing.assert_array_equal(read_scores_csv(tmp_path / "p.csv"), det.score(path))


def test_a_failure_while_streaming_leaves_no_csv(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ScoresCsv(tmp_path / "p.csv") as out:
        out.write(np.arange(3.0))
        raise RuntimeError("scoring failed half way")
    assert list(tmp_path.iterdir()) == []


def write_folder(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return folder


def test_a_folder_too_large_for_memory_decodes_batch_by_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, big
) -> None:
    from oddeye.data import loaders

    _, det = big
    folder = write_folder(tmp_path / "imgs", blobs(70, SHAPE, seed=6))
    eager = loaders.load_images(folder, progress=False)
    monkeypatch.setattr(loaders, "EAGER_SHARE", 0.0)  # as if the folder were larger than memory
    lazy = loaders.load_images(folder, progress=False)
    assert isinstance(lazy.array, loaders.FolderImages) and isinstance(eager.array, np.ndarray)
    assert lazy.shape == eager.shape and len(lazy) == 70 and lazy.normalisation == eager.normalisation
    idx = np.array([0, 5, 69])
    np.testing.assert_array_equal(lazy.batch(idx).numpy(), eager.batch(idx).numpy())
    np.testing.assert_array_equal(lazy.array[3], eager.array[3])
    np.testing.assert_array_equal(det.score(lazy), det.score(eager))


def test_a_damaged_file_in_a_streamed_folder_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from oddeye.data import loaders
    from oddeye.errors import InputError

    folder = write_folder(tmp_path / "imgs", blobs(5, SHAPE, seed=7))
    damaged = folder / "0003.png"
    damaged.write_bytes(damaged.read_bytes()[:-200])  # the header is intact: found only on decoding
    monkeypatch.setattr(loaders, "EAGER_SHARE", 0.0)
    lazy = loaders.load_images(folder, progress=False)
    with pytest.raises(InputError, match=r"0003\.png: expected a readable image"):
        lazy.batch(np.arange(5))
