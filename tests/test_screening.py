"""Screening training sets for contamination: atypical bank rows set aside, recorded, reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import oddeye
from oddeye.detectors import screening
from oddeye.errors import OddeyeError


def digits_with_strays(normal: int = 0, strays: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digit ``normal`` (8x8, uint8) with ``strays`` images of other digits planted at random
    positions; returns the images and the planted positions."""
    d = load_digits()
    images = (d.images * 255 / 16).astype(np.uint8)[..., None]
    rng = np.random.default_rng(seed)
    x = images[d.target == normal].copy()
    where = np.sort(rng.choice(len(x), strays, replace=False))
    x[where] = images[rng.choice(np.flatnonzero(d.target != normal), strays, replace=False)]
    return x, where


def test_strays_that_vouch_for_each_other_still_stand_out() -> None:
    gen = torch.Generator().manual_seed(0)
    normal = torch.randn(400, 32, generator=gen)
    strays = 6.0 + 0.05 * torch.randn(12, 32, generator=gen)  # a tight crowd, far from the rest
    z = screening.screen(torch.cat([normal, strays])).z
    assert z[400:].min() > z[:400].max()  # each stray's nearest rows are strays: k=1 would miss them
    aside = screening.set_aside(z, None)
    assert aside[400:].all() and aside[:400].mean() < 0.1


def test_a_fraction_sets_aside_exactly_that_share_and_0_none() -> None:
    z = torch.arange(100.0)
    assert screening.set_aside(z, 0.05).sum() == 5 and screening.set_aside(z, 0.05)[-5:].all()
    assert not screening.set_aside(z, 0.0).any()
    assert screening.screen(torch.zeros(5, 3)) is None  # too few rows to tell typical from not


@pytest.mark.parametrize("text", ["0.7", "-0.1", "most", "nan"])
def test_bad_contamination_settings_are_refused_in_one_line(text: str, cli, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", digits_with_strays()[0])
    r = cli("train", tmp_path / "x.npy", "--out", tmp_path / "run", "--contamination", text, "--quiet")
    assert r.code == 2 and "contamination" in r.err and r.err.count("\n") <= 1
    assert not (tmp_path / "run").exists()


def test_the_default_sets_aside_planted_images_and_records_them(tmp_path: Path) -> None:
    x, planted = digits_with_strays()
    det = oddeye.create("default", progress=False).fit(x)
    det.save(tmp_path / "run")
    s = det.record_.set_aside
    found = set(s.indices.tolist())
    assert len(found & set(planted.tolist())) >= 7  # of 9 planted, the members agree on most
    assert len(found) <= 0.2 * len(x)
    banks = [bank.bank.shape[0] for bank, _ in det.model_.banks()]
    assert len(set(banks)) == 1  # the members' banks were screened together: the same images left
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["config"]["contamination"] == "auto" and meta["format"] == "oddeye-run/7"
    assert meta["screening"]["bank_images_set_aside"] + meta["screening"]["heldout_images_set_aside"] == len(
        found
    )
    with open(tmp_path / "run" / "set_aside.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["Id"]) for r in rows} == found
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    again = oddeye.load(tmp_path / "run", progress=False)  # read back whole
    assert set(again.record_.set_aside.indices.tolist()) == found
    np.testing.assert_array_equal(again.score(x), det.score(x))


def test_contamination_0_keeps_every_image_as_before(tmp_path: Path) -> None:
    x, _ = digits_with_strays()
    det = oddeye.create("pixel-knn", contamination="0", progress=False).fit(x)
    assert det.record_.set_aside is None
    n_heldout = len(det.heldout_scores_)
    assert det.model_.memory.bank.shape[0] == len(x) - n_heldout
    det.save(tmp_path / "run")
    assert not (tmp_path / "run" / "set_aside.csv").exists()
    assert "screening" not in json.loads((tmp_path / "run" / "model.json").read_text())


def test_a_fraction_sets_aside_its_share_of_the_bank(tmp_path: Path) -> None:
    x, _ = digits_with_strays()
    det = oddeye.create("pixel-knn", contamination="0.1", progress=False, val_fraction=0.0).fit(x)
    s = det.record_.set_aside
    assert int((~s.heldout).sum()) == round(0.1 * len(x))
    assert det.model_.memory.bank.shape[0] == len(x) - round(0.1 * len(x))


def test_a_folder_run_lists_set_aside_images_by_path_and_the_report_shows_them(tmp_path: Path, cli) -> None:
    x, planted = digits_with_strays()
    folder = tmp_path / "normal"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img[..., 0]).save(folder / f"img{i:03d}.png")
    assert cli("train", folder, "--out", tmp_path / "run", "--quiet").code == 0
    with open(tmp_path / "run" / "set_aside.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["Id", "path", "score", "heldout"]
    assert all(r["path"] == f"img{int(r['Id']):03d}.png" for r in rows)
    assert len({int(r["Id"]) for r in rows} & set(planted.tolist())) >= 7
    r = cli("report", tmp_path / "run", folder, "--out", tmp_path / "r.html", "--quiet")
    assert r.code == 0, r.err
    page = (tmp_path / "r.html").read_text()
    assert "Training images set aside" in page and (tmp_path / "r_figures" / "set_aside.png").exists()


def test_a_damaged_set_aside_list_is_refused_in_one_line(tmp_path: Path) -> None:
    x, _ = digits_with_strays()
    oddeye.create("pixel-knn", progress=False).fit(x).save(tmp_path / "run")
    (tmp_path / "run" / "set_aside.csv").write_text("Id,score\nnot-a-number,1\n")
    with pytest.raises(OddeyeError, match="set_aside.csv") as info:
        oddeye.load(tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)


def test_k_grows_with_the_bank_within_its_bounds() -> None:
    from oddeye.detectors.memory import KNNBank, bank_k

    assert bank_k(3, 0.0, 20, 100_000) == 3  # no share: the fixed k, as every run before
    assert bank_k(3, 0.0035, 20, 85) == 3 and bank_k(1, 0.0035, 20, 85) == 1  # small: the k of before
    assert bank_k(3, 0.0035, 20, 5700) == 20 and bank_k(3, 0.0035, 20, 140_000) == 20  # capped
    bank = KNNBank(k=1, k_share=0.01, k_max=20)
    bank.bank = torch.zeros(500, 4)
    assert bank.k_now == 5


def test_the_default_records_its_growing_k_and_old_records_keep_a_fixed_one() -> None:
    x, _ = digits_with_strays()
    det = oddeye.create("default", progress=False).fit(x)
    members = det.build_.params["members"]
    assert all(m["params"]["k_share"] == 0.0035 and m["params"]["k_max"] == 20 for m in members[:2])
    assert [m.memory.k_now for m in det.model_.detectors[:3]] == [3, 1, 3]  # 80-odd images: k as before
    fixed = oddeye.create("pixel-knn", progress=False).fit(x)
    assert fixed.build_.params["k_share"] == 0.0 and fixed.model_.memory.k_now == 3


def test_a_trained_detector_trims_its_training_set_after_a_first_pass(tmp_path: Path) -> None:
    x, planted = digits_with_strays(strays=9)
    det = oddeye.create("fcn", epochs=10, progress=False).fit(x)  # trimmed after epoch 5 (100 steps)
    assert det.config_.trim is True
    s = det.record_.set_aside
    assert s is not None and "after epoch 5" in s.rule
    found = set(s.indices.tolist())
    assert len(found & set(planted.tolist())) >= 5 and len(found) <= 0.25 * len(x)
    det.save(tmp_path / "run")
    with open(tmp_path / "run" / "set_aside.csv", newline="") as f:
        assert {int(r["Id"]) for r in csv.DictReader(f)} == found
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["config"]["trim"] is True and meta["screening"]["bank_images_screened"] == s.screened


def test_trim_off_contamination_0_or_one_epoch_trains_on_every_image() -> None:
    x, _ = digits_with_strays()
    assert oddeye.create("fcn", epochs=3, trim=False, progress=False).fit(x).record_.set_aside is None
    assert oddeye.create("fcn", epochs=3, contamination="0", progress=False).fit(x).record_.set_aside is None
    assert oddeye.create("fcn", epochs=1, progress=False).fit(x).record_.set_aside is None  # nothing after


def test_a_fraction_trims_that_share_of_the_training_images() -> None:
    x, _ = digits_with_strays()
    det = oddeye.create("fcn", epochs=3, contamination="0.1", val_fraction=0.0, progress=False).fit(x)
    s = det.record_.set_aside
    assert int((~s.heldout).sum()) == round(0.1 * len(x)) and "0.1 share" in s.rule


def test_a_trained_bank_is_screened_after_trimming_and_both_are_recorded() -> None:
    x, planted = digits_with_strays()
    det = oddeye.create("deep-svdd", score="knn", epochs=3, progress=False).fit(x)
    s = det.record_.set_aside
    assert "after epoch 1" in s.rule and "; then" in s.rule
    assert len(set(s.indices.tolist())) == len(s.indices)  # no image set aside twice
    bank = det.model_.features.bank.shape[0]
    trimmed_away = int((~s.heldout).sum())
    assert bank == len(x) - len(det.heldout_scores_) - trimmed_away or bank < len(x)


def test_trimming_helps_a_trained_detector_find_what_was_planted() -> None:
    """Digit 0 with 9 strays of other digits: the strays, scored by the trained model, rank higher
    when the model did not go on learning them."""
    from sklearn.metrics import roc_auc_score

    x, planted = digits_with_strays(strays=9)
    d = load_digits()
    images = (d.images * 255 / 16).astype(np.uint8)[..., None]
    test = np.concatenate([images[d.target == 0][-40:], images[d.target != 0][:200]])
    truth = np.r_[np.zeros(40), np.ones(200)]
    kept = oddeye.create("fcn", epochs=20, trim=False, progress=False).fit(x).score(test)
    trimmed = oddeye.create("fcn", epochs=20, progress=False).fit(x).score(test)
    assert roc_auc_score(truth, trimmed) >= roc_auc_score(truth, kept) - 0.01


def test_an_ensembles_trained_member_trims_its_training_set_and_the_ensembles_heldout_set() -> None:
    x, planted = digits_with_strays(strays=9)
    settings = {"members": ["fcn:epochs=10"], "val_fraction": 0.2, "progress": False}
    det = oddeye.create("ensemble", **settings).fit(x)
    s = det.record_.set_aside
    assert det.config_.trim_members is True
    assert s is not None and "fcn (member 1/1)'s own scores after epoch 5" in s.rule
    assert len(set(s.indices.tolist()) & set(planted.tolist())) >= 5 and len(s.indices) <= 0.25 * len(x)
    held = int(s.heldout.sum())
    assert held > 0 and len(det.heldout_scores_) == round(0.2 * len(x)) - held  # out of fusion and threshold
    kept = oddeye.create("ensemble", trim_members=False, **settings).fit(x)
    assert kept.record_.set_aside is None and len(kept.heldout_scores_) == round(0.2 * len(x))


def test_member_trims_and_bank_screening_are_recorded_together_once_each() -> None:
    x, _ = digits_with_strays(strays=9)
    settings = {"members": ["pixel-knn", "fcn:epochs=10"], "val_fraction": 0.2, "progress": False}
    both = oddeye.create("ensemble", **settings).fit(x).record_.set_aside
    banks_only = oddeye.create("ensemble", trim_members=False, **settings).fit(x).record_.set_aside
    assert "fcn (member 2/2)'s own scores after epoch 5; then auto: atypicality" in both.rule
    assert "member" not in banks_only.rule
    assert len(set(both.indices.tolist())) == len(both.indices)  # no image listed twice
    assert set(banks_only.indices.tolist()) < set(both.indices.tolist())  # the banks screen the same way


def test_training_says_what_it_trimmed(cli, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", digits_with_strays()[0])
    r = cli("train", tmp_path / "x.npy", "--detector", "fcn", "--epochs", "10", "--out", tmp_path / "run")
    assert r.code == 0, r.err
    assert "after epoch 5, set aside" in r.err + r.out
    r = cli(
        "train",
        tmp_path / "x.npy",
        "--detector",
        "fcn",
        "--epochs",
        "10",
        "--no-trim",
        "--out",
        tmp_path / "b",
    )
    assert (
        r.code == 0 and "after epoch" not in r.err + r.out and not (tmp_path / "b" / "set_aside.csv").exists()
    )
