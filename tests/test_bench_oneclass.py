"""The one-class benchmark harness: protocol, references, records, markdown, CLI."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from helpers import blobs
from oddeye.bench.classical import NearestNeighbour, PCAReconstruction
from oddeye.bench.oneclass import (
    FMNIST_DIR,
    MultiClass,
    fmnist_files,
    load_fmnist,
    method_label,
    results_name,
    run_method,
)
from oddeye.bench.report import render_markdown
from oddeye.errors import OddeyeError


def two_class_set() -> MultiClass:
    """Class 0: centred blobs; class 1: off-centre noisy blobs (easy to tell apart)."""
    a, b = blobs(60, (12, 12, 1), seed=1), blobs(60, (12, 12, 1), seed=2, anomalous=True)
    train = np.concatenate([a[:40], b[:40]])
    test = np.concatenate([a[40:], b[40:]])
    classes = np.r_[np.zeros(40), np.ones(40)].astype(np.int64)
    return MultiClass(
        "digits", train, classes, test, np.r_[np.zeros(20), np.ones(20)].astype(np.int64), ["round", "odd"]
    )


@pytest.mark.parametrize("name", ["pca", "knn", "cnn"])
def test_run_method_record(name: str) -> None:
    record = run_method(two_class_set(), name, [0, 1], [0], {"epochs": 2, "batch_size": 16})
    assert record["classes"] == [0, 1] and record["seeds"] == [0]
    assert set(record["auroc"]) == {"0", "1"} and all(len(v) == 1 for v in record["auroc"].values())
    assert all(0.0 <= v[0] <= 1.0 for v in record["auroc"].values())
    assert all(v[0] > 0 for v in record["seconds"].values())
    assert record["mean_auroc"] == pytest.approx(np.mean([v[0] for v in record["auroc"].values()]))
    for key in ("git_commit", "versions", "machine", "command", "date", "settings"):
        assert key in record
    assert record["kind"] == ("classical" if name in ("pca", "knn") else "oddeye")


def test_classical_references_find_the_easy_anomalies() -> None:
    data = two_class_set()
    for ref in (PCAReconstruction(), NearestNeighbour()):
        record = run_method(data, "pca" if isinstance(ref, PCAReconstruction) else "knn", [0], [0], {})
        assert record["mean_auroc"] > 0.9


def test_nearest_neighbour_is_zero_on_training_images() -> None:
    train = blobs(20, (8, 8, 1))
    assert np.allclose(NearestNeighbour().fit(train).score(train), 0.0, atol=1e-3)  # float rounding


def test_seeds_are_averaged() -> None:
    record = run_method(two_class_set(), "cnn", [0], [0, 1], {"epochs": 1, "batch_size": 16})
    assert len(record["auroc"]["0"]) == 2 and len(record["mean_auroc_per_seed"]) == 2
    assert record["std_over_seeds"] >= 0.0


def test_results_names_say_what_a_subset_covers() -> None:
    assert results_name("fmnist", "cnn-bn", list(range(10)), [0]) == "oneclass-fmnist-cnn-bn.json"
    assert (
        results_name("fmnist", "knn", [0, 6], [0, 1, 2]) == "oneclass-fmnist-knn-classes-0-6-seeds-0-1-2.json"
    )


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(OddeyeError, match="apt-get install dataset-fashion-mnist"):
        fmnist_files(tmp_path)


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fmnist(tmp_path: Path) -> Path:
    """Four idx.gz files in the Fashion-MNIST layout: 10 classes of synthetic 28x28 images."""
    rng = np.random.default_rng(0)

    def make(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), n_per_class)
        images = rng.integers(0, 40, (len(labels), 28, 28)).astype(np.uint8)
        for c in range(10):  # each class a bright bar in its own row band
            images[labels == c, 2 * c + 4 : 2 * c + 8, 4:24] = 220
        return images, labels

    for prefix, n in (("train", 12), ("t10k", 6)):
        images, labels = make(n)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_fmnist_bench_cli_writes_json_and_markdown(cli, tiny_fmnist: Path, tmp_path: Path) -> None:
    data = load_fmnist(tiny_fmnist)
    assert data.train.shape == (120, 28, 28) and data.test.shape == (60, 28, 28)
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli(
        "bench",
        "fmnist",
        "--data-dir",
        tiny_fmnist,
        "--detectors",
        "pca,knn",
        "--results-dir",
        results,
        "--markdown",
        md,
    )
    assert r.code == 0, r.err
    assert "GEOM*" in r.out and "published, not re-run" in r.out
    record = json.loads((results / "oneclass-fmnist-knn.json").read_text())
    assert record["class_names"][6] == "Shirt" and len(record["auroc"]) == 10
    text = md.read_text()
    assert "One-class Fashion-MNIST" in text and "| GEOM | published" in text
    assert "| knn | classical |" in text and "0.833" in text  # GEOM's Shirt


def test_subset_runs_are_saved_but_not_in_the_main_table() -> None:
    full = {
        "dataset": "fmnist",
        "detector": "x",
        "kind": "oddeye",
        "classes": list(range(10)),
        "class_names": [str(i) for i in range(10)],
        "seeds": [0],
        "mean_auroc": 0.5,
        "auroc": {str(c): [0.5] for c in range(10)},
        "seconds": {str(c): [1.0] for c in range(10)},
        "machine": {"cpu": "c", "torch_threads": 2, "device": "cpu"},
        "git_commit": "abc",
        "command": "oddeye bench fmnist",
        "_file": "a.json",
    }
    part = {**full, "detector": "y", "classes": [0], "auroc": {"0": [0.9]}, "_file": "b.json"}
    text = render_markdown([full, part])
    assert "| x | oddeye |" in text and "| y |" not in text


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_pca_reference() -> None:
    """Real data: PCA on T-shirt/top measured 0.885 AUROC (class 0; 6,000 train, 10,000 test)."""
    record = run_method(load_fmnist(), "pca", [0], [0], {})
    assert record["mean_auroc"] == pytest.approx(0.885, abs=0.01)


def test_digits_bench_cli(cli, tmp_path: Path) -> None:
    r = cli("bench", "digits", "--detectors", "knn", "--no-save")
    assert r.code == 0, r.err
    mean = float(r.out.splitlines()[2].split()[1])
    assert mean > 0.99  # measured 0.9959


def test_bad_parameters_fail_before_anything_runs(cli, tmp_path: Path) -> None:
    r = cli("bench", "digits", "--detectors", "knn,cnn", "--set", "widht=3", "--no-save")
    assert r.code == 2 and "unknown setting 'widht'" in r.err and "mean AUROC" not in r.out


def test_runs_with_parameters_get_their_own_label_and_file(cli, tiny_fmnist: Path, tmp_path: Path) -> None:
    assert method_label("boss", {"epochs": 3, "width": 16, "device": "cpu"}) == "boss-epochs-3-width-16"
    assert method_label("knn", {"epochs": 3}) == "knn"
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    args = ["bench", "fmnist", "--data-dir", tiny_fmnist, "--results-dir", results, "--markdown", md]
    r = cli(*args, "--detectors", "pixel-knn", "--set", "k=1", "--label", "pixel-1nn")
    assert r.code == 0, r.err
    assert json.loads((results / "oneclass-fmnist-pixel-1nn.json").read_text())["label"] == "pixel-1nn"
    assert "| pixel-1nn | oddeye |" in md.read_text()
    r = cli(*args, "--detectors", "pca,knn", "--label", "both")
    assert r.code == 2 and "--label names the results of one detector" in r.err
