"""The one-class benchmark harness: protocol, references, records, markdown, CLI."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import blobs
from oddeye.bench import oneclass
from oddeye.bench.classical import NearestNeighbour, PCAReconstruction
from oddeye.bench.oneclass import (
    FMNIST_DIR,
    MultiClass,
    contaminate,
    fmnist_files,
    load_digits_split,
    load_fmnist,
    method_label,
    oneclass_cases,
    results_name,
    run_method,
)
from oddeye.bench.report import render_markdown
from oddeye.errors import OddeyeError

ROOT = Path(__file__).resolve().parents[1]


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


def fake_record(mean_auroc: float, **more: Any) -> dict[str, Any]:
    """A one-class Fashion-MNIST record of detector ``x`` as load_results returns it."""
    return {
        "benchmark": "oneclass",
        "dataset": "fmnist",
        "detector": "x",
        "kind": "oddeye",
        "classes": list(range(10)),
        "class_names": [str(i) for i in range(10)],
        "seeds": [0],
        "mean_auroc": mean_auroc,
        "auroc": {str(c): [mean_auroc] for c in range(10)},
        "seconds": {str(c): [1.0] for c in range(10)},
        "machine": {"cpu": "c", "torch_threads": 2, "device": "cpu"},
        "git_commit": "abc",
        "command": "oddeye bench fmnist",
        "_file": "a.json",
        **more,
    }


def test_subset_runs_are_saved_but_not_in_the_main_table() -> None:
    full = fake_record(0.5)
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


# ----------------------------------------------------------------------------------- contamination
def numbered_set() -> tuple[np.ndarray, np.ndarray]:
    """100 uint8 images, each filled with its own index; class = index % 5."""
    images = np.broadcast_to(np.arange(100, dtype=np.uint8)[:, None, None, None], (100, 4, 4, 1)).copy()
    return images, np.arange(100) % 5


def test_contaminate_replaces_the_count_asked_by_other_classes_only() -> None:
    pool, classes = numbered_set()
    train, rows = pool[classes == 0], np.flatnonzero(classes != 0)
    images, positions = contaminate(train, pool, 0.25, 0, "0", rows)
    assert images.dtype == np.uint8 and images.shape == train.shape and len(positions) == 5  # 25% of 20
    assert len(set(positions.tolist())) == 5
    drawn = images[positions, 0, 0, 0]
    assert np.all(drawn % 5 != 0) and len(set(drawn.tolist())) == 5  # others, without replacement
    kept = np.setdiff1d(np.arange(len(train)), positions)
    assert np.array_equal(images[kept], train[kept]) and np.array_equal(
        train[:, 0, 0, 0], np.arange(0, 100, 5)
    )


def test_contaminate_is_deterministic_and_clean_is_untouched() -> None:
    pool, classes = numbered_set()
    train, rows = pool[classes == 0], np.flatnonzero(classes != 0)
    first, again = contaminate(train, pool, 0.25, 3, "0", rows), contaminate(train, pool, 0.25, 3, "0", rows)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = [contaminate(train, pool, 0.25, 4, "0", rows), contaminate(train, pool, 0.25, 3, "1", rows)]
    assert all(not np.array_equal(first[0], o[0]) for o in other)  # the seed and the case change the draw
    images, positions = contaminate(train, pool, 0.0, 3, "0", rows)
    assert images is train and len(positions) == 0
    with pytest.raises(OddeyeError, match="expected 5 images of other classes"):
        contaminate(train, pool, 0.25, 0, "0", rows[:4])


class Spy:
    """A reference that remembers what it was trained on."""

    seen: list[np.ndarray] = []

    def get_params(self) -> dict[str, float]:
        return {}

    def fit(self, images: np.ndarray) -> Spy:
        Spy.seen.append(images.copy())
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).mean(1)


def test_every_detector_trains_on_the_same_contaminated_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(oneclass.CLASSICAL, "spy-a", Spy)
    monkeypatch.setitem(oneclass.CLASSICAL, "spy-b", Spy)
    data = load_digits_split()
    Spy.seen = []
    records = [run_method(data, name, [3], [0], {}, contamination=0.1) for name in ("spy-a", "spy-b")]
    a, b = Spy.seen
    (case,) = oneclass_cases(data, [3])
    assert np.array_equal(a, b) and a.dtype == np.uint8 and not np.array_equal(a, case.train)
    changed = int((a != case.train).any(axis=(1, 2, 3)).sum())
    assert records[0]["replaced_images"] == {"3": round(0.1 * len(case.train))} == {"3": changed}
    assert records[0]["contamination"] == 0.1


def test_digits_bench_contamination_runs_each_fraction(cli, tmp_path: Path) -> None:
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli(
        "bench", "digits", "--detectors", "knn,pca", "--contamination", "0,0.1",
        "--results-dir", results, "--markdown", md,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "digits contaminated 10%" in r.out
    names = sorted(p.name for p in results.iterdir())
    assert names == [f"oneclass-digits-{d}{c}.json" for d in ("knn", "pca") for c in ("-contam0.1", "")]
    clean = json.loads((results / "oneclass-digits-knn.json").read_text())
    dirty = json.loads((results / "oneclass-digits-knn-contam0.1.json").read_text())
    assert clean["contamination"] == 0.0 and clean["replaced_images"] == {str(c): 0 for c in range(10)}
    committed = json.loads((ROOT / "benchmarks/results/oneclass-digits-knn.json").read_text())
    assert clean["auroc"] == committed["auroc"]  # fraction 0 is the clean protocol, exactly
    assert dirty["contamination"] == 0.1 and all(9 <= n <= 10 for n in dirty["replaced_images"].values())
    assert dirty["mean_auroc"] < clean["mean_auroc"]  # 1-NN trusts every training image
    text = md.read_text()
    clean_table, contaminated = text.split("## One-class digits")[1:3]
    assert contaminated.startswith(" (scikit-learn's 8x8 digits; half of each class to train): contaminated")
    assert clean_table.count("| knn | classical |") == 1 and f"**{clean['mean_auroc']:.4f}**" in clean_table
    change = dirty["mean_auroc"] - clean["mean_auroc"]
    assert (
        f"| knn | classical | 0 | {clean['mean_auroc']:.4f} | {dirty['mean_auroc']:.4f} ({change:+.4f}) |"
        in contaminated
    )
    r = cli("bench", "digits", "--detectors", "knn", "--contamination", "0.5", "--no-save")
    assert r.code == 2 and "--contamination: expected a comma list of fractions in [0, 0.5)" in r.err


def test_contaminated_runs_get_their_own_table_only() -> None:
    full = fake_record(0.9)
    command = "oddeye bench fmnist --contamination 0.05,0.1"
    dirty = [
        fake_record(m, contamination=f, replaced_images={str(c): n for c in range(10)}, command=command)
        for f, m, n in ((0.05, 0.85, 300), (0.1, 0.8, 600))
    ]
    ref = {**dirty[1], "detector": "knn", "kind": "classical", "mean_auroc": 0.7, "_file": "k.json"}
    clean_text = render_markdown([full])
    text = render_markdown([full, *dirty, ref])
    assert text.startswith(clean_text)  # the clean table as it was; the contaminated after it
    rest = text[len(clean_text) :]
    assert "## One-class Fashion-MNIST" in rest and "contaminated training sets" in rest
    assert "| method | kind | seeds | clean | 5% | 10% |" in rest
    assert "| x | oddeye | 0 | 0.9000 | 0.8500 (-0.0500) | 0.8000 (-0.1000) |" in rest
    assert "| knn | classical | 0 | - | - | 0.7000 |" in rest  # no clean run with its seeds: no change
    assert "5%: 300; 10%: 600" in rest


def test_a_label_with_slashes_or_spaces_names_one_file() -> None:
    from oddeye.bench.emoji import results_name as emoji_name
    from oddeye.bench.oneclass import results_name

    name = results_name("fmnist", "default until issue 22 (k=3/1/3)", list(range(10)), [0], 0.05)
    assert name == "oneclass-fmnist-default-until-issue-22-k-3-1-3-contam0.05.json" and "/" not in name
    assert "/" not in emoji_name("category", "a/b c", [0], False)


def test_pairs_are_parsed_checked_and_the_fixed_list_is_five() -> None:
    from oddeye.bench.oneclass import DEFAULT_PAIRS, parse_pairs

    assert parse_pairs("default") == list(DEFAULT_PAIRS) and len(DEFAULT_PAIRS) == 5
    assert len(parse_pairs("all")) == 45 and parse_pairs("0-6, 2-4,0-6") == [(0, 6), (2, 4)]
    for bad in ("6-0", "0-10", "0,6", "x-1", ""):
        with pytest.raises(OddeyeError, match="--pairs: expected"):
            parse_pairs(bad)


def test_a_pair_case_trains_on_the_other_eight_classes() -> None:
    from oddeye.bench.oneclass import pair_cases

    data = load_digits_split()
    (case,) = pair_cases(data, [(3, 8)])
    assert case.key == "3-8" and case.title == "3 + 8"
    assert len(case.train) == int((~np.isin(data.train_classes, (3, 8))).sum())
    np.testing.assert_array_equal(case.anomalous, np.isin(data.test_classes, (3, 8)))
    np.testing.assert_array_equal(np.sort(np.unique(data.train_classes[case.pool_rows])), [3, 8])


def test_digits_bench_pairs_writes_its_records_and_its_table(cli, tmp_path: Path) -> None:
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli(
        "bench", "digits", "--detectors", "knn,pixel-knn", "--pairs", "3-8,1-7",
        "--results-dir", results, "--markdown", md,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "digits 8-vs-2" in r.out and "3-8" in r.out
    names = sorted(p.name for p in results.iterdir())
    assert names == ["pairs-digits-knn-pairs-38-17.json", "pairs-digits-pixel-knn-pairs-38-17.json"]
    record = json.loads((results / names[0]).read_text())
    assert record["benchmark"] == "pairs" and record["pairs"] == [[3, 8], [1, 7]]
    assert record["cases"] == ["3-8", "1-7"] and set(record["auroc"]) == {"3-8", "1-7"}
    assert 0.5 < record["mean_auroc"] <= 1.0
    text = md.read_text()
    section = text.split("## Digits, 8 vs 2")[1]
    assert "| knn | classical |" in section and "| 3-8 3 + 8 | 1-7 1 + 7 |" in section
    assert "- pixel-knn: above 1-NN on raw pixels on **" in section
    assert "## One-class digits" not in text  # the one-class table has no records here


def test_digits_pairs_contaminated_get_their_table(cli, tmp_path: Path) -> None:
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli(
        "bench", "digits", "--detectors", "knn", "--pairs", "3-8", "--contamination", "0,0.1",
        "--results-dir", results, "--markdown", md,
    )  # fmt: skip
    assert r.code == 0, r.err
    dirty = json.loads((results / "pairs-digits-knn-pairs-38-contam0.1.json").read_text())
    assert dirty["contamination"] == 0.1 and dirty["replaced_images"]["3-8"] > 0
    text = md.read_text()
    title = "## Digits, 8 vs 2 (train on half of eight digits' images; the other two anomalous)"
    assert f"{title}: contaminated training sets" in text
    assert "training images of the pair held out" in text


def test_full_bank_settings_put_every_image_in_each_whole_image_bank() -> None:
    import oddeye
    from oddeye.bench.common import full_bank_settings

    full = full_bank_settings("default", {}, 48000)
    assert full is not None and "local_members" not in full  # patch banks stay as they are
    assert full["members"] == [
        "pixel-knn:k_share=0.0035;k_max=20;max_bank=48000",
        "hog-knn:k_share=0.0035;k_max=20;max_bank=48000",
    ]
    assert full["colour_members"] == ["color-knn:max_bank=48000"]
    assert full["gray_members"] == ["shape-knn:k_share=0.0035;k_max=20;max_bank=48000"]
    assert full_bank_settings("pixel-knn", {"k": 3}, 10) == {"k": 3, "max_bank": 10}
    mixed = full_bank_settings("ensemble", {"members": ["pixel-knn:max_bank=5; k=2", "boss"], "epochs": 1}, 7)
    assert mixed == {"members": ["pixel-knn:k=2;max_bank=7", "boss"], "epochs": 1}  # its own cap replaced
    assert (
        full_bank_settings("cnn", {}, 10) is None
        and full_bank_settings("ensemble", {"members": ["boss"]}, 9) is None
    )
    for settings in (full, mixed):  # what it gives builds
        oddeye.create("default" if settings is full else "ensemble", **settings).build((8, 8, 1))


def test_digits_pairs_full_bank_runs_the_reference_in_the_same_run(cli, tmp_path: Path) -> None:
    from oddeye.bench.oneclass import load_digits_split

    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli(
        "bench", "digits", "--detectors", "knn,pixel-knn", "--pairs", "3-8", "--full-bank",
        "--set", "max_bank=50", "--results-dir", results, "--markdown", md,
    )  # fmt: skip
    assert r.code == 0, r.err
    own = json.loads((results / "pairs-digits-pixel-knn-max_bank-50-pairs-38.json").read_text())
    full = json.loads(
        (results / "pairs-digits-pixel-knn-max_bank-50-every-image-in-the-banks-pairs-38.json").read_text()
    )
    assert full["full_bank_of"] == own["label"] == "pixel-knn-max_bank-50" and "full_bank_of" not in own
    assert full["invocation"] == own["invocation"]
    assert own["settings"]["params"]["max_bank"] == 50
    assert full["settings"]["params"]["max_bank"] == len(
        load_digits_split(0).train
    )  # at least every training image
    assert len(list(results.glob("*every-image*"))) == 1  # knn (a reference) gets none
    line = f"- pixel-knn-max_bank-50: **{own['mean_auroc']:.4f}** against {full['mean_auroc']:.4f} with every"
    assert line in md.read_text() and line.replace("**", "") in r.out
    # records of separate runs are not compared
    again = cli("bench", "digits", "--detectors", "pixel-knn", "--pairs", "3-8", "--set", "max_bank=50",
                "--results-dir", results, "--markdown", md)  # fmt: skip
    assert again.code == 0, again.err
    assert "with every training image in its banks, in the same run" not in md.read_text()


def test_full_bank_skips_a_detector_with_no_bank_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from oddeye.bench.oneclass import with_full_banks

    methods = with_full_banks(["knn", "cnn", "default"], {}, None, 100)
    assert [(m.name, m.label, m.full_bank_of) for m in methods] == [
        ("knn", "knn", None),
        ("cnn", "cnn", None),
        ("default", "default", None),
        ("default", "default, every image in the banks", "default"),
    ]
    assert len({m.invocation for m in methods}) == 1
    out = capsys.readouterr().out
    assert "cnn keeps no bank of training images" in out and "knn keeps" not in out
    assert [m.full_bank_of for m in with_full_banks(["default"], {}, None, None)] == [None]  # no --full-bank
