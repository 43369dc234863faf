"""One function resolves settings for the CLI and the API: defaults < --config < --set < flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import oddeye
from oddeye.cli import build_parser
from oddeye.config import TrainConfig
from oddeye.detectors import available, get_spec
from oddeye.errors import OddeyeError
from oddeye.settings import resolve_settings

QUICK = ("--detector", "cnn", "--epochs", "1", "--quiet")


def test_later_layers_win_in_the_documented_order(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"lr": 0.3, "seed": 3, "batch_size": 8, "params": {"channels": [4, 8]}}))
    s = resolve_settings("cnn", cfg, [("lr", 0.2), ("seed", 2), ("seed", 5)], {"lr": 0.1})
    assert s.config.lr == 0.1 and s.sources["lr"] == "flags"  # flags over --set over the file
    assert s.config.seed == 5 and s.sources["seed"] == "--set"  # --set over the file; last --set wins
    assert s.config.batch_size == 8 and s.params == {"channels": [4, 8]}
    assert s.config.patience == TrainConfig().patience and "patience" not in s.sources  # the default
    assert any("lr=0.1 from flags replaces 0.2 from --set" in t for t in s.overridden)


def test_detector_parameters_and_the_detector_itself_can_come_from_any_layer(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"detector": "pixel-knn", "params": {"k": 7}}))
    assert resolve_settings(None, cfg).params == {"k": 7}
    assert resolve_settings(None, cfg, [("k", 9)], {"blur": 0.1}).params == {"k": 9, "blur": 0.1}
    with pytest.raises(OddeyeError, match=r"unknown setting 'k' \(from .*cfg.json\).*parameter of cnn"):
        resolve_settings(None, cfg, [("detector", "cnn")])  # the file's k is not a cnn parameter
    cfg.write_text(json.dumps({"detector": "pixel-knn"}))
    assert resolve_settings("fcn", cfg, [("detector", "cnn")], {"hidden": [4]}).detector == "fcn"


@pytest.mark.parametrize(
    "sets, explicit, message",
    [
        ([("force", 1)], {}, r"unknown setting 'force' \(from --set\); expected a training setting"),
        ([("widht", 3)], {}, r"unknown setting 'widht'.*parameter of cnn \(channels\)"),
        ([("lr", "fast")], {}, r"lr expects float, found 'fast' \(from --set\)"),
        ([], {"batch_size": 0}, r"invalid training setting batch_size=0 \(from flags\)"),
        ([("detector", "cnnbn")], {}, "unknown detector 'cnnbn'; expected one of"),
    ],
)
def test_bad_keys_and_values_are_refused_naming_the_valid_ones(sets, explicit, message) -> None:
    with pytest.raises(OddeyeError, match=message):
        resolve_settings("cnn" if not sets or sets[0][0] != "detector" else None, None, sets, explicit)


def test_the_api_shares_the_resolver(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epochs": 4, "params": {"channels": [4]}}))
    det = oddeye.create("cnn", config_file=cfg, epochs=2)
    assert det.config.epochs == 2 and det.params == {"channels": [4]}
    with pytest.raises(OddeyeError, match=r"unknown setting 'force' \(from arguments\)"):
        oddeye.create("cnn", force=True)


def test_the_train_flags_are_generated_from_the_config_fields() -> None:
    parser = build_parser()
    train = next(
        a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train")
    )
    dests = {a.dest for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert (f.name in dests) == f.metadata.get("flag", True), f.name
    args = parser.parse_args(["train", "x.npy", "--out", "r", "--no-compile", "--precision", "fp32"])
    assert args.compile is False and args.precision == "fp32" and args.lr is None
    assert isinstance(args, argparse.Namespace)


@pytest.mark.parametrize("name", available())
def test_detector_parameters_never_share_a_name_with_a_training_setting(name: str) -> None:
    assert not set(get_spec(name).arch_defaults()) & {"detector", *TrainConfig.fields()}


def test_a_key_given_twice_follows_the_order_and_says_so(cli, homework, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = cli("train", homework["train"], *QUICK, "--lr", "0.1", "--set", "lr=0.2", "--out", run)
    assert r.code == 0, r.err
    assert json.loads((run / "model.json").read_text())["config"]["lr"] == 0.1
    assert "note: lr=0.1 from flags replaces 0.2 from --set" in r.err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "force=1"], "unknown setting 'force' (from --set)"),
        (["--set", "lr=x"], "lr expects float, found 'x' (from --set)"),
        (["--set", "nokey"], "expected KEY=VALUE, found 'nokey'"),
    ],
)
def test_bad_settings_on_the_command_line_are_one_line_exit_2(
    cli, homework, tmp_path, extra, message
) -> None:
    r = cli("train", homework["train"], *QUICK, "--out", tmp_path / "run", *extra)
    assert r.code == 2 and message in r.err
    assert r.err.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


def test_a_bad_setting_in_a_fresh_interpreter_prints_no_traceback(homework, tmp_path) -> None:
    cmd = [sys.executable, "-m", "oddeye", "train", homework["train"], *QUICK, "--out", tmp_path / "run"]
    p = subprocess.run([*cmd, "--set", "lr=x"], capture_output=True, text=True)
    assert p.returncode == 2 and "lr expects float, found 'x' (from --set)" in p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0


def test_set_reaches_training_settings(cli, homework, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ("--set", "batch_size=16", "--set", "channels=[4,8]")
    assert cli("train", homework["train"], *QUICK, *args, "--out", run).code == 0
    meta = json.loads((run / "model.json").read_text())
    assert meta["config"]["batch_size"] == 16 and meta["params"] == {"channels": [4, 8]}
