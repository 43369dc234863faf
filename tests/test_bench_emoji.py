"""oddeye bench emoji on a tiny stand-in for the two npm packages (same layout, made here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oddeye.bench.emoji import (
    STYLE_CATEGORIES,
    TRAIN_SHARE,
    category_cases,
    load_vendor,
    split_bases,
    style_cases,
)

CATEGORIES = {"Smileys & Emotion": 6, "People & Body": 6, "Objects": 5, "Food & Drink": 5}


def fake_packages(root: Path) -> Path:
    """emoji-datasource-{google,twitter}: emoji.json and img/VENDOR/64/*.png (RGBA, some see-through)."""
    rng = np.random.default_rng(0)
    entries = []
    for c, (category, n) in enumerate(CATEGORIES.items()):
        for i in range(n):
            code = f"{c + 1:X}{i:03X}"
            variations = {}
            if category == "People & Body" and i < 2:  # skin-tone variants travel with their base
                variations = {f"{code}-1F3FB": {"image": f"{code.lower()}-1f3fb.png", "has_img_google": True,
                                               "has_img_twitter": True}}  # fmt: skip
            entries.append(
                {
                    "unified": code,
                    "image": f"{code.lower()}.png",
                    "category": category,
                    "has_img_google": True,
                    "has_img_twitter": True,
                    "skin_variations": variations,
                }  # fmt: skip
            )
    for vendor, tint in (("google", 0), ("twitter", 60)):
        pkg = root / f"emoji-datasource-{vendor}"
        folder = pkg / "img" / vendor / "64"
        folder.mkdir(parents=True)
        (pkg / "emoji.json").write_text(json.dumps(entries))
        names = [e["image"] for e in entries] + [
            v["image"] for e in entries for v in e["skin_variations"].values()
        ]
        for name in names:
            rgba = np.zeros((64, 64, 4), np.uint8)
            rgba[16:48, 16:48, :3] = rng.integers(100, 200, 3) + tint
            rgba[16:48, 16:48, 3] = 255  # an opaque square on a transparent background
            Image.fromarray(rgba, "RGBA").save(folder / name)
    return root


def test_the_protocols_split_by_base_emoji(tmp_path: Path) -> None:
    root = fake_packages(tmp_path)
    google, twitter = (
        load_vendor(root, "google", progress=False),
        load_vendor(root, "twitter", progress=False),
    )
    assert google.images.shape == (24, 64, 64, 3) and google.images[0, 0, 0].tolist() == [255, 255, 255]
    (style,) = style_cases(google, twitter)
    assert len(style.train) + int((~style.anomalous).sum()) == 14  # 12 people/smileys + 2 variants
    assert int(style.anomalous.sum()) == int((~style.anomalous).sum())  # Twitter's drawings of the same
    cases = category_cases(google, min_images=5)
    assert [c.key for c in cases] == sorted(CATEGORIES)
    food = next(c for c in cases if c.key == "Food & Drink")
    assert len(food.train) == 4 and int((~food.anomalous).sum()) == 1  # 70/30 of 5 base emoji


def test_a_base_emoji_and_its_variants_land_on_the_same_side(tmp_path: Path) -> None:
    root = fake_packages(tmp_path)
    google = load_vendor(root, "google", progress=False)
    bases = [e.base for e in google.emoji.values() if e.category in STYLE_CATEGORIES]
    train, test = split_bases(bases, TRAIN_SHARE)
    assert not train & test and train | test == set(bases)


def test_bench_emoji_writes_results_and_tables(cli, tmp_path: Path) -> None:
    root = fake_packages(tmp_path / "data")
    results, md = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    r = cli(
        "bench", "emoji", "--data-dir", root, "--detectors", "default,knn", "--min-category", "5",
        "--results-dir", results, "--markdown", md,
    )  # fmt: skip
    assert r.code == 0, r.err
    names = sorted(p.name for p in results.iterdir())
    expected = [f"emoji-{p}-{d}.json" for p in ("category", "style") for d in ("default", "knn")]
    assert names == expected
    record = json.loads((results / "emoji-style-default.json").read_text())
    assert record["cases"] == ["style"] and 0 <= record["mean_auroc"] <= 1
    assert record["settings"]["build"]["detector"] == "default"  # the resolved build, recorded
    text = md.read_text()
    assert "## Emoji, style" in text and "## Emoji, category" in text and "| default | oddeye |" in text


def test_missing_packages_say_how_to_get_them(cli, tmp_path: Path) -> None:
    r = cli("bench", "emoji", "--data-dir", tmp_path, "--no-save")
    assert r.code == 2 and "make bench-data" in r.err and r.err.count("\n") == 1


@pytest.mark.parametrize("protocols", ["colour", ""])
def test_unknown_protocols_are_refused(cli, tmp_path: Path, protocols: str) -> None:
    r = cli("bench", "emoji", "--data-dir", tmp_path, "--protocols", protocols, "--no-save")
    assert r.code == 2 and "--protocols" in r.err


def test_contamination_pools_are_the_anomalous_kind_from_the_training_split(tmp_path: Path) -> None:
    root = fake_packages(tmp_path)
    google, twitter = (load_vendor(root, v, progress=False) for v in ("google", "twitter"))
    (style,) = style_cases(google, twitter)
    train_bases, _ = split_bases(
        [e.base for e in google.emoji.values() if e.category in STYLE_CATEGORIES], TRAIN_SHARE
    )
    tw = {e.index: e for e in twitter.emoji.values()}
    assert style.pool is twitter.images and len(style.pool_rows) == len(style.train)
    assert {tw[i].base for i in style.pool_rows} == train_bases  # Twitter's drawings of training emoji
    g = {e.index: e for e in google.emoji.values()}
    cases = category_cases(google, min_images=5)
    for case in cases:
        assert case.pool is google.images and {g[i].category for i in case.pool_rows} == set(CATEGORIES) - {
            case.key
        }
    pooled = sum(len(c.train) for c in cases)  # every other category's training images, no test image
    assert all(len(c.pool_rows) == pooled - len(c.train) for c in cases)


def test_bench_emoji_contamination(cli, tmp_path: Path) -> None:
    root = fake_packages(tmp_path / "data")
    results, md = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    r = cli(
        "bench", "emoji", "--data-dir", root, "--detectors", "knn", "--min-category", "5",
        "--contamination", "0,0.2", "--results-dir", results, "--markdown", md,
    )  # fmt: skip
    assert r.code == 0, r.err
    names = sorted(p.name for p in results.iterdir())
    assert names == [f"emoji-{p}-knn{c}.json" for p in ("category", "style") for c in ("-contam0.2", "")]
    record = json.loads((results / "emoji-style-knn-contam0.2.json").read_text())
    n = record["case_sizes"]["style"][0]
    assert record["contamination"] == 0.2 and record["replaced_images"] == {"style": round(0.2 * n)}
    text = md.read_text()
    assert (
        "## Emoji, style: held-out Google people and smileys vs the same emoji drawn by Twitter: contaminated"
        in text
    )
    assert text.count("| knn | classical |") == 4  # a clean table and a contaminated one per protocol
