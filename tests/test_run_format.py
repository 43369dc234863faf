"""A run folder means the same thing for good: every registered detector saves its fully resolved
build, reloads to identical scores, and keeps doing so when the code's defaults change; runs of
formats 1 and 2 load and score as the code of their time scored them."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import REGISTRY_SHAPE, REGISTRY_TEST, blobs
from oddeye.detectors import available, get_spec, memory, transforms
from oddeye.errors import OddeyeError
from oddeye.migrate import V1_DEFAULTS, upgrade_v1, upgrade_v2, upgrade_v3, upgrade_v4, upgrade_v5, upgrade_v6

SHAPE = REGISTRY_SHAPE
FORMAT1 = Path(__file__).parent / "data" / "format1-digits-default"
FORMAT2 = Path(__file__).parent / "data" / "format2-digits-default"
FORMAT3 = Path(__file__).parent / "data" / "format3-digits-default"
FORMAT4 = Path(__file__).parent / "data" / "format4-digits-default"
FORMAT5 = Path(__file__).parent / "data" / "format5-digits-default"
FORMAT6 = Path(__file__).parent / "data" / "format6-digits-ensemble"
# Another valid value for every string parameter (other types are changed by rule, see other_value).
OTHER_CHOICE = {
    ("boss", "score"): "classifier",
    ("transform", "score"): "both",
    ("deep-svdd", "score"): "knn",
    ("local-net", "score"): "logit",
    ("ensemble", "references"): "heldout",
    ("default", "references"): "heldout",
    ("default", "local_members"): ("patch-knn:patches=[4]",),
    ("default", "large_local_members"): ("patch-knn:patches=[8]",),
    ("default", "local_fusion"): "mean",
    ("default", "local_scale"): "spread",
    ("default", "unaligned"): "all",
    ("patch-knn", "match"): "anywhere",
    ("patch-knn", "radius_rule"): "auto",
    ("patch-knn", "select"): "coreset",
    **{(name, "select"): "spaced" for name in ("pixel-knn", "hog-knn", "color-knn", "shape-knn")},
}
TEST = REGISTRY_TEST


def other_value(name: str, key: str, value: object) -> object:
    """A different valid value for parameter ``key`` of ``name``: what a change of default is."""
    if (name, key) in OTHER_CHOICE:
        return OTHER_CHOICE[name, key]
    if key == "members":
        return ("cnn",)
    if key in ("colour_members", "gray_members"):
        return ("pixel-knn:k=1",)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 + 0.05
    if isinstance(value, tuple) and len(value) > 1:
        return value[:-1]
    raise AssertionError(f"no other value for {name}.{key}={value!r}: add one to OTHER_CHOICE")


def change_every_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a later version might do: every parameter default, epoch cap and derivation differs."""
    changed: set[int] = set()  # a subclass's dataclass shares its parent's fields: change each once
    for name in available():
        cls = get_spec(name).model_cls
        for f in dataclasses.fields(cls.Params):
            if id(f) not in changed:
                changed.add(id(f))
                monkeypatch.setattr(f, "default", other_value(name, f.name, f.default))
        monkeypatch.setattr(cls, "default_epochs", cls.default_epochs + 7)
    monkeypatch.setattr(memory, "blur_sigma", lambda blur, shape: 3.0 * blur * max(shape[:2]))
    monkeypatch.setattr(transforms, "shift_pixels", lambda shift, side: 1 + int(shift * side))
    monkeypatch.setattr(
        transforms, "transform_list", lambda flips, rotations, shift: [(1, 1, 0, 0), (0, 0, 0, 0)]
    )


@pytest.mark.parametrize("name", available())
def test_every_detector_records_its_resolved_build(name: str, trained_run) -> None:
    run = trained_run(name).run
    meta = json.loads((run / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7"
    spec = get_spec(name)
    assert set(meta["params"]) == set(spec.arch_defaults())  # every parameter, not just the typed ones
    assert set(meta["derived"]) == set(spec.model_cls.Derived.names())
    assert (meta["epoch_cap"] is None) == (not spec.model_cls.trainable)
    for member in meta["params"].get("members", []):
        member_spec = get_spec(member["detector"])
        assert set(member["params"]) == set(member_spec.arch_defaults())
        assert set(member["derived"]) == set(member_spec.model_cls.Derived.names())
        assert (member["epoch_cap"] is None) == (not member_spec.model_cls.trainable)


@pytest.mark.parametrize("name", available())
def test_every_detector_reloads_to_identical_scores(name: str, trained_run, tmp_path) -> None:
    run, scores = trained_run(name).run, trained_run(name).scores
    det = oddeye.load(run, progress=False)
    np.testing.assert_array_equal(det.score(TEST), scores)
    again = det.save(tmp_path / "saved-again")  # a loaded run saves the same record
    assert json.loads((again / "model.json").read_text()) == json.loads((run / "model.json").read_text())


@pytest.mark.parametrize("name", available())
def test_changed_code_defaults_leave_saved_runs_alone(name: str, trained_run, monkeypatch) -> None:
    run, scores = trained_run(name).run, trained_run(name).scores
    saved = oddeye.load(run, progress=False).build_
    change_every_default(monkeypatch)
    fresh = oddeye.create(name).build(SHAPE)
    from oddeye.detectors.registry import record_of

    assert record_of(fresh) != saved  # the patch bites: a new model would be built differently
    det = oddeye.load(run, progress=False)
    assert det.build_ == saved
    np.testing.assert_array_equal(det.score(TEST), scores)


def test_the_default_runs_params_name_every_member_in_full(trained_run) -> None:
    run = trained_run("default").run
    members = json.loads((run / "model.json").read_text())["params"]["members"]
    assert [m["detector"] for m in members] == ["pixel-knn", "hog-knn", "color-knn"]  # colour images
    assert members[0]["derived"] == {
        "sigma": pytest.approx(SHAPE[0] / 28),
        "blur_hw": [12, 12],
        "bank_hw": [12, 12],
    }


def test_a_refit_of_a_loaded_run_trains_the_same_recipe(trained_run) -> None:
    run = trained_run("default").run
    det = oddeye.load(run, progress=False)
    refit = oddeye.Detector(det.detector, det.config, det.params).fit(blobs(48, (16, 16, 1)))
    members = refit.build_.params["members"]
    assert members[0]["derived"]["sigma"] == pytest.approx(16 / 28)  # derived anew for the new shape
    assert [m["params"] for m in members] == [m["params"] for m in det.build_.params["members"]]


# -- format 1 -----------------------------------------------------------------------------------
@pytest.fixture
def format1_run(tmp_path: Path) -> Path:
    """The checked-in format-1 run (written by the last format-1 code), copied so tests may write."""
    return Path(shutil.copytree(FORMAT1 / "run", tmp_path / "run"))


def assert_scores_as_written(run: Path, kept: Path) -> None:
    """``run`` (a copy of ``kept/run``) scores ``kept``'s test images as its writer did."""
    scores = oddeye.load(run, progress=False).score(kept / "test_images.npy")
    expected = np.load(kept / "expected_scores.npy")
    # Bit-identical on the machine that wrote it. Other CPUs round the float32 sums of the conv
    # members differently (oneDNN picks kernels by instruction set): on an AMD EPYC the format-1
    # run, written on an Intel Xeon, differs by up to 7.5e-5 of the scores' spread. 1e-4 of it.
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4 * float(np.std(expected)))


def assert_format1_scores(run: Path) -> None:
    assert_scores_as_written(run, FORMAT1)


def test_the_checked_in_format1_run_still_loads_and_scores_as_written(format1_run: Path) -> None:
    assert json.loads((format1_run / "model.json").read_text())["format"] == "oddeye-run/1"
    assert_format1_scores(format1_run)


def test_format1_runs_ignore_todays_defaults(format1_run: Path, monkeypatch) -> None:
    change_every_default(monkeypatch)
    assert_format1_scores(format1_run)
    build = oddeye.load(format1_run, progress=False).build_
    assert [m["detector"] for m in build.params["members"]] == ["pixel-knn", "boss", "transform"]


def test_saving_a_threshold_into_a_format1_run_keeps_its_scores(format1_run: Path, cli, tmp_path) -> None:
    r = cli(
        "score",
        format1_run,
        FORMAT1 / "test_images.npy",
        "--out",
        tmp_path / "p.csv",
        "--threshold",
        "fpr:0.5",
    )
    assert r.code == 0, r.err
    meta = json.loads((format1_run / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7" and meta["upgraded_from"] == "oddeye-run/1"
    assert meta["threshold"]["rule"] == "fpr:0.5"
    assert_format1_scores(format1_run)


def test_format1_params_resolve_against_format1_defaults() -> None:
    meta = {
        "format": "oddeye-run/1",
        "detector": "ensemble",
        "params": {"members": "pixel-knn:k=5,boss:width=8;epochs=4,cnn"},
        "config": {"epochs": None},
        "input_shape": [28, 28, 1],
    }
    up = upgrade_v1(meta)
    knn, boss, cnn = up["params"]["members"]
    assert knn["params"] == {**V1_DEFAULTS["pixel-knn"], "k": 5}  # only what format 1 had
    rebuilt = get_spec("pixel-knn").params_cls.from_record(knn["params"], "pixel-knn")
    assert rebuilt.max_side == 0  # added later: its ``before``, what format-1 code did
    assert knn["derived"] == {"sigma": 1.0, "blur_hw": [28, 28], "bank_hw": [28, 28]}
    assert boss["params"]["width"] == 8 and boss["params"]["score"] == "both" and boss["epoch_cap"] == 4
    assert cnn["params"] == {"channels": [12, 24, 48]} and cnn["epoch_cap"] == 50
    capped = upgrade_v1({**meta, "config": {"epochs": 2}})
    assert [m["epoch_cap"] for m in capped["params"]["members"]] == [None, 2, 2]
    assert up["config"]["threshold"] == "fpr:0.01"  # keys format-1 code added later, filled as then


def test_format1_transform_derivations_are_frozen() -> None:
    meta = {"detector": "transform", "params": {"shift": 0.25}, "config": {}, "input_shape": [8, 12, 3]}
    derived = upgrade_v1(meta)["derived"]
    assert len(derived["transforms"]) == 72 and derived["transforms"][0] == [0, 0, -1, -1]
    assert derived["shift_px"] == 3  # a quarter of the padded square's side, 12


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["params"].pop("channels"), "no value for parameter 'channels'"),
        (lambda m: m["params"].update(widht=3), "unknown parameter 'widht'"),
        (lambda m: m.pop("epoch_cap"), "no 'epoch_cap'"),
        (lambda m: m["config"].pop("lr"), "no 'lr'"),
    ],
)
def test_an_incomplete_record_is_one_clear_line(change, message, trained_run, tmp_path) -> None:
    run = trained_run("cnn").run
    broken = Path(shutil.copytree(run, tmp_path / "broken"))
    meta = json.loads((broken / "model.json").read_text())
    change(meta)
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(OddeyeError, match=message) as info:
        oddeye.load(broken)
    assert "model.json" in str(info.value) and "\n" not in str(info.value)


def test_a_detector_format1_did_not_know_is_refused() -> None:
    meta = {"detector": "fancy-new", "params": {}, "config": {}, "input_shape": [8, 8, 1]}
    with pytest.raises(ValueError, match="did not exist in format 1"):
        upgrade_v1(meta)


# -- format 2 -----------------------------------------------------------------------------------
@pytest.fixture
def format2_run(tmp_path: Path) -> Path:
    """The checked-in format-2 run (written by the last format-2 code), copied so tests may write."""
    return Path(shutil.copytree(FORMAT2 / "run", tmp_path / "run"))


def assert_format2_scores(run: Path) -> None:
    assert_scores_as_written(run, FORMAT2)


def test_the_checked_in_format2_run_still_loads_and_scores_as_written(format2_run: Path) -> None:
    assert json.loads((format2_run / "model.json").read_text())["format"] == "oddeye-run/2"
    assert_format2_scores(format2_run)
    build = oddeye.load(format2_run, progress=False).build_
    # format 2's default had no gray members: today's (shape-knn on gray images) must not appear
    assert [m["detector"] for m in build.params["members"]] == ["pixel-knn", "hog-knn"]
    assert build.params["gray_members"] == []


def test_format2_runs_ignore_todays_defaults(format2_run: Path, monkeypatch) -> None:
    change_every_default(monkeypatch)
    assert_format2_scores(format2_run)


def test_saving_a_threshold_into_a_format2_run_writes_format3_and_keeps_its_scores(
    format2_run: Path, cli, tmp_path
) -> None:
    out = tmp_path / "p.csv"
    r = cli("score", format2_run, FORMAT2 / "test_images.npy", "--out", out, "--threshold", "fpr:0.5")
    assert r.code == 0, r.err
    meta = json.loads((format2_run / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7" and meta["upgraded_from"] == "oddeye-run/2"
    assert "gray_members" not in meta["params"]  # the record stays as written: no migration step
    assert oddeye.load(format2_run, progress=False).build_.params["gray_members"] == []  # its before
    assert_format2_scores(format2_run)


def test_format2_upgrade_changes_only_the_format() -> None:
    params = {"members": [], "references": "heldout"}
    meta = {"format": "oddeye-run/2", "detector": "default", "params": params}
    up = upgrade_v2(meta)
    assert up["params"] == params  # gray_members, added since, comes from its field's ``before``
    assert up["format"] == "oddeye-run/3" and up["upgraded_from"] == "oddeye-run/2"
    assert get_spec("default").params_cls.from_record(params, "default").gray_members == ()
    kept = get_spec("default").params_cls.from_record({**params, "gray_members": ["shape-knn"]}, "default")
    assert kept.gray_members == ("shape-knn",)  # a recorded value is never replaced


# -- format 3 -----------------------------------------------------------------------------------
@pytest.fixture
def format3_run(tmp_path: Path) -> Path:
    """The checked-in format-3 run (written by the last format-3 code), copied so tests may write."""
    return Path(shutil.copytree(FORMAT3 / "run", tmp_path / "run"))


def test_the_checked_in_format3_run_still_loads_and_scores_as_written(format3_run: Path) -> None:
    assert json.loads((format3_run / "model.json").read_text())["format"] == "oddeye-run/3"
    assert_scores_as_written(format3_run, FORMAT3)
    det = oddeye.load(format3_run, progress=False)
    assert det.config_.contamination == "0"  # format 3 kept every training image: so it reads
    assert det.record_.set_aside is None
    # its members are as format-3 code built them (k=3, k=1, k=3), not today's default k=20
    assert [m["params"]["k"] for m in det.build_.params["members"]] == [3, 1, 3]


def test_saving_a_threshold_into_a_format3_run_writes_format5_and_keeps_its_scores(
    format3_run: Path, cli, tmp_path
) -> None:
    r = cli(
        "score",
        format3_run,
        FORMAT3 / "test_images.npy",
        "--out",
        tmp_path / "p.csv",
        "--threshold",
        "fpr:0.5",
    )
    assert r.code == 0, r.err
    meta = json.loads((format3_run / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7" and meta["upgraded_from"] == "oddeye-run/3"
    assert meta["config"]["contamination"] == "0" and meta["config"]["max_heldout"] == 0
    assert_scores_as_written(format3_run, FORMAT3)


@pytest.fixture
def format4_run(tmp_path: Path) -> Path:
    """The checked-in format-4 run (written by the last format-4 code), copied so tests may write."""
    return Path(shutil.copytree(FORMAT4 / "run", tmp_path / "run"))


def test_the_checked_in_format4_run_still_loads_and_scores_as_written(format4_run: Path) -> None:
    assert json.loads((format4_run / "model.json").read_text())["format"] == "oddeye-run/4"
    assert_scores_as_written(format4_run, FORMAT4)
    det = oddeye.load(format4_run, progress=False)
    assert det.config_.max_heldout == 0 and det.config_.contamination == "auto"  # as format 4 did
    members = det.build_.params["members"]
    # built before coresets and principal axes: evenly spaced banks, every dimension, 48 patch values
    assert [m["params"]["select"] for m in members] == ["spaced"] * 3
    assert [m["params"]["dims"] for m in members] == [0] * 3
    (patch,) = det.build_.params["local_members"]
    assert patch["params"]["dims"] == 0 and patch["params"]["select"] == "spaced"


def test_saving_a_threshold_into_a_format4_run_writes_format5_and_keeps_its_scores(
    format4_run: Path, cli, tmp_path
) -> None:
    out = tmp_path / "p.csv"
    r = cli("score", format4_run, FORMAT4 / "test_images.npy", "--out", out, "--threshold", "fpr:0.5")
    assert r.code == 0, r.err
    meta = json.loads((format4_run / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7" and meta["upgraded_from"] == "oddeye-run/4"
    assert meta["config"]["max_heldout"] == 0
    assert_scores_as_written(format4_run, FORMAT4)


def test_large_sets_hold_out_at_most_max_heldout_images() -> None:
    from oddeye.training.loop import split_indices

    rng = np.random.default_rng
    train, held = split_indices(140_001, 0.05, rng(0), 2048)
    assert len(held) == 2048 and len(train) == 140_001 - 2048
    assert len(split_indices(140_001, 0.05, rng(0))[1]) == 7000  # no cap: the share
    assert len(split_indices(1000, 0.05, rng(0), 2048)[1]) == 50  # a small set: the share


@pytest.fixture
def format5_run(tmp_path: Path) -> Path:
    """The checked-in format-5 run (written by the last format-5 code), copied so tests may write."""
    return Path(shutil.copytree(FORMAT5 / "run", tmp_path / "run"))


def test_the_checked_in_format5_run_still_loads_and_scores_as_written(format5_run: Path) -> None:
    assert json.loads((format5_run / "model.json").read_text())["format"] == "oddeye-run/5"
    assert_scores_as_written(format5_run, FORMAT5)
    det = oddeye.load(format5_run, progress=False)
    assert det.config_.contamination == "auto" and det.config_.trim is False  # as format 5 did
    assert det.record_.set_aside is not None and len(det.record_.set_aside.indices) > 0


def test_saving_a_threshold_into_a_format5_run_writes_format7_and_keeps_its_scores(
    format5_run: Path, cli, tmp_path
) -> None:
    out = tmp_path / "p.csv"
    r = cli("score", format5_run, FORMAT5 / "test_images.npy", "--out", out, "--threshold", "fpr:0.5")
    assert r.code == 0, r.err
    meta = json.loads((format5_run / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7" and meta["upgraded_from"] == "oddeye-run/5"
    assert meta["config"]["trim"] is False
    assert_scores_as_written(format5_run, FORMAT5)


# -- format 6 -----------------------------------------------------------------------------------
@pytest.fixture
def format6_run(tmp_path: Path) -> Path:
    """The checked-in format-6 run (an ensemble with a member that trains), copied so tests may write."""
    return Path(shutil.copytree(FORMAT6 / "run", tmp_path / "run"))


def test_the_checked_in_format6_run_still_loads_and_scores_as_written(format6_run: Path) -> None:
    assert json.loads((format6_run / "model.json").read_text())["format"] == "oddeye-run/6"
    assert_scores_as_written(format6_run, FORMAT6)
    det = oddeye.load(format6_run, progress=False)
    assert det.config_.trim is True and det.config_.trim_members is False  # as format 6 did


def test_saving_a_threshold_into_a_format6_run_writes_format7_and_keeps_its_scores(
    format6_run: Path, cli, tmp_path
) -> None:
    out = tmp_path / "p.csv"
    r = cli("score", format6_run, FORMAT6 / "test_images.npy", "--out", out, "--threshold", "fpr:0.5")
    assert r.code == 0, r.err
    meta = json.loads((format6_run / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7" and meta["upgraded_from"] == "oddeye-run/6"
    assert meta["config"]["trim_members"] is False
    assert_scores_as_written(format6_run, FORMAT6)


def test_a_refit_of_a_format6_ensemble_trains_its_members_on_every_image(format6_run: Path) -> None:
    """Format-6 code trimmed a detector trained alone, never an ensemble's member: a refit of the
    recorded recipe does the same, where today's settings trim the member."""
    from oddeye.data.loaders import digits_one_class

    x = digits_one_class(0)[0]  # the images the run was trained on
    old = oddeye.load(format6_run, progress=False)
    refit = oddeye.Detector(old.detector, old.config, old.params).fit(x)
    assert refit.config_.trim_members is False
    assert refit.record_.set_aside is None or "member" not in refit.record_.set_aside.rule
    today = oddeye.create(old.detector, **old.params, progress=False).fit(x)
    assert "fcn (member 2/2)'s own scores" in today.record_.set_aside.rule


# -- formats 3 to 6: each added training settings only ------------------------------------------
@pytest.mark.parametrize(
    "kept", [FORMAT3, FORMAT4, FORMAT5, FORMAT6], ids=["format3", "format4", "format5", "format6"]
)
def test_runs_of_formats_3_to_6_ignore_todays_defaults(kept: Path, tmp_path: Path, monkeypatch) -> None:
    run = Path(shutil.copytree(kept / "run", tmp_path / "run"))
    change_every_default(monkeypatch)
    assert_scores_as_written(run, kept)


@pytest.mark.parametrize(
    "upgrade, old, added",
    [
        (upgrade_v3, 3, {"contamination": "0"}),
        (upgrade_v4, 4, {"max_heldout": 0}),
        (upgrade_v5, 5, {"trim": False}),
        (upgrade_v6, 6, {"trim_members": False}),
    ],
)
def test_an_upgrade_from_formats_3_to_6_adds_only_its_settings(upgrade, old: int, added: dict) -> None:
    meta = {"format": f"oddeye-run/{old}", "detector": "default", "params": {}, "config": {"seed": 3}}
    up = upgrade(meta)
    assert up["config"] == {"seed": 3, **added}
    assert up["format"] == f"oddeye-run/{old + 1}" and up["upgraded_from"] == f"oddeye-run/{old}"
    assert upgrade({**meta, "upgraded_from": "oddeye-run/1"})["upgraded_from"] == "oddeye-run/1"
    with pytest.raises(ValueError, match="config"):
        upgrade({"format": f"oddeye-run/{old}"})
