"""The CLI end to end on a small homework-shaped set, and its error contract (one line, exit 2)."""

from __future__ import annotations

import csv as csv_module
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import blobs
from oddeye.evaluation import read_scores_csv

EPOCHS = ["--epochs", "3", "--batch-size", "32", "--quiet"]


def test_train_score_evaluate_end_to_end(cli, homework, tmp_path: Path) -> None:
    run, csv = tmp_path / "run", tmp_path / "prediction.csv"
    r = cli("train", homework["train"], "--detector", "cnn-bn", "--out", run, *EPOCHS)
    assert r.code == 0, r.err
    assert "trained cnn-bn on 96 images of 16x16x3" in r.out
    r = cli("score", run, homework["test"], "--out", csv, "--quiet")
    assert r.code == 0, r.err
    lines = csv.read_text().splitlines()
    assert lines[0] == "Id,Predicted" and len(lines) == 41
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(40))
    course = "Id,Predicted\n" + "".join(f"{i},{float(s)!r}\n" for i, s in enumerate(read_scores_csv(csv)))
    assert csv.read_bytes() == course.encode()  # .npy input: the course's file, byte for byte
    r = cli("evaluate", csv, "--labels", homework["labels"], "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert 0.0 <= result["auroc"] <= 1.0 and result["n_normal"] == 20


def test_a_scored_folder_names_each_file_in_every_csv(cli, tmp_path: Path) -> None:
    from PIL import Image

    run, folder, out = tmp_path / "run", tmp_path / "imgs", tmp_path / "p.csv"
    oddeye.train(blobs(40, (8, 8, 3)), "pixel-knn", run, progress=False)
    names = ["z.png", "sub/b.png", "sub/c d,1.png", "ü/é.png"]  # sorted: sub/b, sub/c d,1, z, ü/é
    imgs = dict(zip(names, np.concatenate([blobs(2, (8, 8, 3), 5), blobs(2, (8, 8, 3), 6, True)])))
    for name, img in imgs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / name)
    r = cli("score", run, folder, "--out", out, "--threshold", "top:0.5", "--quiet")
    assert r.code == 0, r.err
    with open(out, encoding="utf-8", newline="") as f:
        head, *rows = list(csv_module.reader(f))
    assert head == ["Id", "path", "Predicted"] and [r[1] for r in rows] == sorted(names)
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    expected = oddeye.load(run, progress=False).score(np.stack([imgs[n] for n in sorted(names)]))
    np.testing.assert_array_equal([float(r[2]) for r in rows], expected)  # each score is its file's
    with open(tmp_path / "p.flags.csv", encoding="utf-8", newline="") as f:
        head, *flags = list(csv_module.reader(f))
    assert head[:3] == ["Id", "path", "score"] and [r[1] for r in flags] == sorted(names)
    labels = _save(tmp_path / "labels.npy", np.array([n.startswith("sub/") for n in sorted(names)], np.int64))
    assert cli("evaluate", out, "--labels", labels).code == 0  # the path column is read past


@pytest.mark.slow  # fresh interpreters
def test_python_m_oddeye_and_2022_header(homework, tmp_path: Path) -> None:
    """A real subprocess: the module entry point works and prints no traceback."""
    run, csv = tmp_path / "run", tmp_path / "p.csv"
    py = [sys.executable, "-m", "oddeye"]
    subprocess.run(
        [*py, "train", homework["train"], "--detector", "cnn", "--out", run, *EPOCHS],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*py, "score", run, homework["test"], "--out", csv, "--header", "ID,score"],
        check=True,
        capture_output=True,
    )
    assert csv.read_text().startswith("ID,score\n0,")


def test_bad_input_is_one_line_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "train.npy"
    np.save(bad, np.zeros((4, 8, 8, 2), np.uint8))
    p = subprocess.run(
        [sys.executable, "-m", "oddeye", "train", bad, "--out", tmp_path / "run"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert str(bad) in p.stderr and "2 channels" in p.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "missing.npy", "nothing there"),
        (lambda d: _write(d / "text.npy", b"not an array"), "expected a NumPy .npy array"),
        (lambda d: _save(d / "empty.npy", np.zeros((0, 8, 8, 3), np.uint8)), "0 images"),
        (lambda d: _save(d / "flat.npy", np.zeros((4, 8), np.uint8)), "2 dimension"),
        (lambda d: _save(d / "str.npy", np.array([["a"]] * 4)), "numeric"),
        (lambda d: _save(d / "nan.npy", np.full((3, 8, 8, 1), np.nan, np.float32)), "NaN"),
        (lambda d: _save(d / "inf.npy", np.full((3, 8, 8, 1), np.inf)), "inf"),
        (lambda d: _save(d / "two.npy", np.zeros((3, 8, 8, 2), np.uint8)), "2 channels"),
        (lambda d: _folder_with_garbage(d), "bad.png"),
    ],
)
def test_train_errors(cli, tmp_path: Path, make, match: str) -> None:
    path = make(tmp_path)
    r = cli("train", path, "--out", tmp_path / "run", "--quiet")
    assert r.code == 2 and r.err.startswith("oddeye: error: ") and r.err.count("\n") == 1
    assert str(path) in r.err and match in r.err
    assert not (tmp_path / "run").exists()


def test_test_images_of_another_shape(cli, homework, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", homework["train"], "--out", run, *EPOCHS).code == 0
    other = _save(tmp_path / "other.npy", np.zeros((5, 8, 8, 1), np.uint8))
    r = cli("score", run, other, "--out", tmp_path / "p.csv")
    assert r.code == 2 and "other.npy: expected images of 16x16x3" in r.err and "found 8x8x1" in r.err
    assert not (tmp_path / "p.csv").exists()


def test_test_images_on_another_value_scale(cli, tmp_path: Path) -> None:
    train = _save(tmp_path / "train.npy", np.random.default_rng(0).random((40, 8, 8, 1), np.float32))
    run = tmp_path / "run"
    assert cli("train", train, "--out", run, *EPOCHS).code == 0
    test = _save(tmp_path / "test.npy", np.full((5, 8, 8, 1), 200, np.uint8))
    r = cli("score", run, test, "--out", tmp_path / "p.csv")
    assert r.code == 2 and "expected values within [0, 1] like the training images" in r.err


def test_a_run_of_another_float_range_scores_dark_images_within_0_1(cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 4095, (40, 8, 8, 1)).astype(np.float32)
    values[0, 0, 0, 0] = 0
    train = _save(tmp_path / "train.npy", values)
    run = tmp_path / "run"
    assert cli("train", train, "--detector", "pixel-knn", "--out", run, "--quiet").code == 0
    dark = _save(tmp_path / "dark.npy", rng.random((5, 8, 8, 1)).astype(np.float32))
    r = cli("score", run, dark, "--out", tmp_path / "p.csv", "--quiet")
    assert r.code == 0, r.err


def test_images_within_0_1_are_refused_by_a_run_of_0_255_images(cli, homework, tmp_path: Path) -> None:
    """Not divided by 255 a second time (nearly black images, scored or added to the banks)."""
    run = tmp_path / "run"
    assert cli("train", homework["train"], "--out", run, *EPOCHS).code == 0
    unit = _save(tmp_path / "unit.npy", np.load(homework["test"])[:5].astype(np.float32) / 255)
    for args in (("score", run, unit, "--out", tmp_path / "p.csv"), ("update", run, unit)):
        r = cli(*args)
        assert r.code == 2 and "unit.npy: expected values within [0, 255] like the training images" in r.err
        assert "found floating-point values within [0, 1] (multiply them by 255)" in r.err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "run-updated").exists()


def test_existing_run_needs_force(cli, homework, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", homework["train"], "--out", run, *EPOCHS).code == 0
    r = cli("train", homework["train"], "--out", run, *EPOCHS)
    assert r.code == 2 and "--force" in r.err
    assert cli("train", homework["train"], "--out", run, *EPOCHS, "--force").code == 0


def test_config_file_layers_under_flags(cli, homework, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps({"detector": "cnn", "epochs": 5, "batch_size": 16, "params": {"channels": [8, 16, 32]}})
    )
    run = tmp_path / "run"
    assert (
        cli("train", homework["train"], "--config", cfg, "--epochs", "2", "--out", run, "--quiet").code == 0
    )
    meta = json.loads((run / "model.json").read_text())
    assert meta["detector"] == "cnn" and meta["config"]["epochs"] == 2
    assert meta["config"]["batch_size"] == 16 and meta["params"] == {"channels": [8, 16, 32]}
    cfg.write_text(json.dumps({"epochz": 5}))
    r = cli("train", homework["train"], "--config", cfg, "--out", tmp_path / "r2")
    assert r.code == 2 and "'epochz'" in r.err
    cfg.write_text(json.dumps({"params": [1, 2]}))
    r = cli("train", homework["train"], "--config", cfg, "--out", tmp_path / "r2")
    assert r.code == 2 and '"params" to be an object' in r.err


def test_detectors_lists_names_and_counts(cli) -> None:
    r = cli("detectors", "--shape", "64x64x3")
    assert r.code == 0
    for name, count in [("fcn", "3,176,419"), ("cnn", "47,355"), ("cnn-bn", "47,595")]:
        assert any(line.split()[:2] == [name, count] for line in r.out.splitlines())


@pytest.mark.parametrize("command", ["train", "update", "score", "evaluate", "report", "detectors", "demo"])
def test_help_shows_an_example(cli, command: str) -> None:
    r = cli(command, "--help")
    assert r.code == 0 and f"oddeye {command}" in r.out and "example" in r.out


def test_unknown_detector_lists_valid_ones(cli, homework, tmp_path: Path) -> None:
    r = cli("train", homework["train"], "--detector", "bosss", "--out", tmp_path / "r")
    assert r.code == 2 and ", ".join(oddeye.available()) in r.err


def _save(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder_with_garbage(d: Path) -> Path:
    from PIL import Image

    folder = d / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "bad.png").write_bytes(b"\x89PNG garbage")
    return folder


def test_out_of_memory_is_one_line_exit_2(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line of defence behind the loaders' free-memory checks."""
    from oddeye import commands

    def exhausted(args: object) -> int:
        raise MemoryError

    monkeypatch.setattr(commands, "cmd_detectors", exhausted)
    r = cli("detectors")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert r.err.startswith("oddeye: error: out of memory during 'detectors'")


@pytest.mark.parametrize("blocked", ["--flags", "--report"])
def test_an_output_that_cannot_be_written_stops_score_before_anything_is_written(
    cli, homework, tmp_path: Path, blocked: str
) -> None:
    """A folder where a file should go: one line, exit 2, no scores CSV and the run's threshold
    unchanged (a rule given with --threshold is saved only once everything has worked)."""
    run = tmp_path / "run"
    assert cli("train", homework["train"], "--out", run, *EPOCHS).code == 0
    before = (run / "model.json").read_bytes()
    (tmp_path / "adir").mkdir()
    out = tmp_path / "p.csv"
    r = cli(
        "score", run, homework["test"], "--out", out, "--threshold", "top:0.5", blocked, tmp_path / "adir"
    )
    assert r.code == 2 and "adir: expected a writable location, found: Is a directory" in r.err
    assert not out.exists() and not out.with_name("p.flags.csv").exists()
    assert (run / "model.json").read_bytes() == before


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """``oddeye detectors | head -1``: the pipe closes before oddeye has written; it stops quietly
    with the exit status of a tool killed by SIGPIPE."""
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-m", "oddeye", "detectors"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    p.stdout.close()  # type: ignore[union-attr]
    err = p.stderr.read().decode()  # type: ignore[union-attr]
    assert p.wait() == 141 and err == ""


def test_a_folder_that_does_not_fit_the_run_names_the_file_or_the_size_option(cli, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    gray, other = tmp_path / "gray", tmp_path / "other"
    gray.mkdir(), other.mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(gray / f"{i:02d}.png")
    run = tmp_path / "run"
    assert cli("train", gray, "--detector", "pixel-knn", "--out", run, "--quiet").code == 0
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(other / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(other / "1b.png")
    r = cli("score", run, other, "--out", tmp_path / "p.csv", "--quiet")
    assert r.code == 2 and f"{other / '1b.png'}: expected images of 16x16x1" in r.err
    assert "(a colour image among gray ones makes the folder colour), found 16x16x3" in r.err
    for i in range(3):  # every file colour: the folder is named, not one file
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(other / f"{i}.png")
    r = cli("score", run, other, "--out", tmp_path / "p.csv", "--quiet")
    assert (
        r.code == 2
        and f"{other}: expected images of 16x16x1 (HxWxC, as the model was trained), found" in r.err
    )
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(other / f"{i}.png")
    (other / "1b.png").unlink()
    r = cli("score", run, other, "--out", tmp_path / "p.csv", "--size", "8x8", "--quiet")
    assert (
        r.code == 2
        and "expected images of 16x16x1 (HxWxC, as the model was trained); --size 16x16 resizes them" in r.err
    )
    assert not (tmp_path / "p.csv").exists()


def test_score_never_writes_over_its_images_its_run_or_its_other_output(
    cli, homework, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    assert cli("train", homework["train"], "--out", run, *EPOCHS).code == 0
    images = tmp_path / "test.npy"
    shutil.copy(homework["test"], images)
    before = images.read_bytes(), (run / "model.json").read_bytes()
    labels = tmp_path / "labels.npy"
    shutil.copy(homework["labels"], labels)
    classes = tmp_path / "classes.npy"
    np.save(classes, np.arange(40) % 3)
    cases = [
        (("--out", images), "expected an --out file apart from the images read, found it"),
        (
            ("--out", labels, "--labels", labels, "--threshold", "f1"),
            "apart from the --labels file read, found it",
        ),
        (("--out", tmp_path / "p.csv", "--maps", run / "maps"), "expected an --maps folder outside the run"),
        (
            (
                "--out",
                tmp_path / "p.csv",
                "--threshold",
                "--flags",
                tmp_path / "r.html",
                "--report",
                tmp_path / "r.html",
            ),
            "found the same one",
        ),
        (
            ("--out", tmp_path / "p.csv", "--threshold", "top:0.3", "--report", tmp_path / "r.html")
            + ("--classes", classes, "--class-names", "a"),
            "--class-names: expected a name for each class id 0..2, found 1 name",
        ),
        (
            ("--out", run / "model.json"),
            f"expected an --out file outside the run folder {run}, found one in it",
        ),
        (("--out", tmp_path / "p.csv", "--threshold", "--flags", tmp_path / "p.csv"), "found the same one"),
        (("--out", tmp_path / "p.csv", "--report", tmp_path / "p.csv"), "found the same one"),
    ]
    for args, needle in cases:
        r = cli("score", run, images, *args, "--quiet")
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, r.err
    (tmp_path / "q_figures").write_text("a file where the report's figures go")
    more = [
        (("--out", tmp_path / "maps" / "p.csv", "--maps", tmp_path / "maps"), "outside the --maps folder"),
        (
            ("--out", tmp_path / "p.csv", "--threshold", "top:0.3", "--report", tmp_path / "q.html"),
            "q_figures: expected an --report's figures folder, found a file",
        ),
    ]
    for args, needle in more:
        r = cli("score", run, images, *args, "--quiet")
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, r.err
    assert cli("score", run, images, "--out", tmp_path / "s.csv", "--quiet").code == 0
    r = cli(
        "evaluate",
        tmp_path / "s.csv",
        "--labels",
        labels,
        "--run",
        run,
        "--images",
        images,
        "--report",
        images,
    )
    assert r.code == 2 and "expected an --report file apart from the images read, found it" in r.err
    assert (images.read_bytes(), (run / "model.json").read_bytes()) == before
    assert not (tmp_path / "p.csv").exists() and not (run / "maps").exists()
    assert np.array_equal(np.load(labels), np.load(homework["labels"]))


def test_threshold_rules_are_checked_first_and_evaluate_json_carries_the_threshold(
    cli, homework, tmp_path: Path
) -> None:
    import json

    run, csv = tmp_path / "run", tmp_path / "p.csv"
    assert cli("train", homework["train"], "--out", run, *EPOCHS).code == 0
    for command in (
        ("score", run, homework["test"], "--out", csv, "--threshold", "top:1.5"),
        ("report", run, homework["test"], "--out", tmp_path / "r.html", "--threshold", "top:2"),
    ):
        r = cli(*command, "--quiet")
        assert r.code == 2 and "expected a fraction in [0, 1)" in r.err and r.out == "", r.err
    assert not csv.exists() and not (tmp_path / "r.html").exists()
    assert cli("score", run, homework["test"], "--out", csv, "--quiet").code == 0
    r = cli("evaluate", csv, "--labels", homework["labels"], "--threshold", "fpr:abc")
    assert r.code == 2 and r.out == "" and "threshold: expected" in r.err
    r = cli("evaluate", csv, "--labels", homework["labels"], "--threshold", "top:0.5", "--json")
    assert r.code == 0, r.err
    t = json.loads(r.out)["threshold"]
    assert t["rule"] == "top:0.5" and (t["flagged"], t["n"]) == (20, 40)
    assert {"precision", "recall", "fpr", "value", "basis"} <= set(t)
    r = cli("evaluate", csv, "--labels", homework["labels"], "--threshold", "fpr:0.05")
    assert r.code == 2 and r.out == "" and "--run RUN" in r.err


def test_with_a_report_a_threshold_rule_is_saved_after_the_report(
    cli, homework, tmp_path: Path, monkeypatch
) -> None:
    """A report that fails after the scores leaves the run's threshold as it was."""
    import json

    from oddeye import commands

    run = tmp_path / "run"
    assert cli("train", homework["train"], "--out", run, *EPOCHS).code == 0
    rule = json.loads((run / "model.json").read_text())["threshold"]["rule"]

    def broken(*args, **kwargs):
        raise commands.OddeyeError("r.html: expected a writable location, found: No space left on device")

    monkeypatch.setattr(commands, "_write_report", broken)
    out = ("--out", tmp_path / "p.csv", "--threshold", "top:0.3", "--report", tmp_path / "r.html", "--quiet")
    assert cli("score", run, homework["test"], *out).code == 2
    assert json.loads((run / "model.json").read_text())["threshold"]["rule"] == rule
    monkeypatch.undo()
    r = cli("score", run, homework["test"], *out[:-1])
    assert r.code == 0 and "saved as the run's operating threshold" in r.out, r.err
    assert json.loads((run / "model.json").read_text())["threshold"]["rule"] == "top:0.3"
