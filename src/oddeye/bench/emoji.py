"""A colour benchmark at the homework's shape (64x64x3): emoji drawn by two vendors.

Data: the npm packages ``emoji-datasource-google`` and ``emoji-datasource-twitter`` (16.0.0;
Google's artwork Apache-2.0, Twitter's CC-BY-4.0): every emoji as a 64x64 RGBA PNG and
``emoji.json`` with each one's category and skin-tone variants. ``make bench-data`` fetches them
with ``npm pack``. Images are read by oddeye's own folder loader (transparency composited on
white).

Protocols (each base emoji travels with its skin-tone variants, so no variant of a test emoji is
ever trained on; the 70/30 split by base emoji is fixed, seed 0, whatever the training seed):

- ``style``: normal = Google's "Smileys & Emotion" and "People & Body"; train on 70% of them; test
  = the held-out 30% (normal) against the same emoji drawn by Twitter (anomalous): same content,
  another distribution, the homework's kind of anomaly.
- ``category``: one-class per category with at least 80 images (Google's drawings): train on 70% of
  the category; test on the held-out 30% of every category, the others anomalous.

``--validation`` runs the same protocols inside the 70% training split only (80/20 by base emoji;
for ``style`` the anomalies are Twitter's drawings of held-out *training* emoji): the place to
choose settings. The test split is never used for that.

``--contamination F`` replaces a fraction F of each training set by images of the anomalous kind,
from the training split only: for ``style``, Twitter's drawings of the training emoji (never of a
test emoji); for ``category``, the other categories' training images.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import oddeye
from oddeye.bench.args import MIN_CATEGORY
from oddeye.bench.classical import CLASSICAL
from oddeye.bench.common import contamination_desc, contamination_suffix
from oddeye.bench.oneclass import Case, fractions, int_list, method_label, run_cases, safe_name
from oddeye.data import image_files, load_images
from oddeye.errors import OddeyeError
from oddeye.io import write_text

VENDORS = ("google", "twitter")
VERSION = "16.0.0"
STYLE_CATEGORIES = ("Smileys & Emotion", "People & Body")
TRAIN_SHARE, VALIDATION_SHARE = 0.7, 0.8
PROTOCOLS = ("style", "category")


@dataclass
class Emoji:
    """One vendor's drawing of one emoji (a base emoji or one of its skin-tone variants)."""

    base: str  # the base emoji's code: variants share it
    category: str
    index: int  # row in the vendor's image array


@dataclass
class Vendor:
    name: str
    images: np.ndarray  # (N, 64, 64, 3) uint8, in the folder loader's order
    emoji: dict[str, Emoji]  # image file name -> emoji


def package_dir(data_dir: Path, vendor: str) -> Path:
    """The unpacked package of ``vendor`` in ``data_dir`` (``emoji-datasource-VENDOR/``, as made by
    ``make bench-data``; npm's own ``package/`` folder inside it is accepted too)."""
    root = Path(data_dir) / f"emoji-datasource-{vendor}"
    for candidate in (root, root / "package"):
        if (candidate / "emoji.json").is_file() and (candidate / "img" / vendor / "64").is_dir():
            return candidate
    raise OddeyeError(
        f"{root}: expected the unpacked npm package emoji-datasource-{vendor}@{VERSION} (emoji.json and "
        f"img/{vendor}/64/), found it missing; run 'make bench-data' (needs npm) or pass --data-dir"
    )


def load_vendor(data_dir: Path, vendor: str, progress: bool = True) -> Vendor:
    """A vendor's 64x64 images through oddeye's folder loader, with each file's emoji."""
    pkg = package_dir(data_dir, vendor)
    try:
        entries = json.loads((pkg / "emoji.json").read_text())
    except (OSError, ValueError) as e:
        raise OddeyeError(f"{pkg / 'emoji.json'}: expected the package's emoji list ({e})") from None
    folder = pkg / "img" / vendor / "64"
    data = load_images(folder, progress=progress)
    rows = {f.name: i for i, f in enumerate(image_files(folder))}
    emoji: dict[str, Emoji] = {}
    for entry in entries:
        base, category = entry["unified"], entry["category"]
        images = [(entry["image"], entry.get(f"has_img_{vendor}", False))]
        for variant in (entry.get("skin_variations") or {}).values():
            images.append((variant["image"], variant.get(f"has_img_{vendor}", False)))
        for name, present in images:
            if present and name in rows:
                emoji[name] = Emoji(base, category, rows[name])
    return Vendor(vendor, np.asarray(data.array), emoji)


def split_bases(bases: list[str], share: float, seed: int = 0) -> tuple[set[str], set[str]]:
    """(first, second): ``share`` of the base emoji (sorted, then shuffled by ``seed``) and the rest."""
    order = sorted(set(bases))
    np.random.default_rng(seed).shuffle(order)
    cut = int(round(share * len(order)))
    return set(order[:cut]), set(order[cut:])


def _rows(vendor: Vendor, keep: Any) -> np.ndarray:
    return np.array(sorted(e.index for e in vendor.emoji.values() if keep(e)), dtype=np.int64)


def _bases_in(vendor: Vendor, categories: set[str]) -> list[str]:
    return [e.base for e in vendor.emoji.values() if e.category in categories]


def style_cases(google: Vendor, twitter: Vendor, validation: bool = False) -> list[Case]:
    """The ``style`` protocol (one case); ``validation``: within the training split only."""
    cats = set(STYLE_CATEGORIES)
    train, test = split_bases(_bases_in(google, cats), TRAIN_SHARE)
    if validation:
        train, test = split_bases(sorted(train), VALIDATION_SHARE)
    normal = _rows(google, lambda e: e.category in cats and e.base in test)
    odd = _rows(twitter, lambda e: e.category in cats and e.base in test)
    fit = google.images[_rows(google, lambda e: e.category in cats and e.base in train)]
    test_images = np.concatenate([google.images[normal], twitter.images[odd]])
    anomalous = np.r_[np.zeros(len(normal), bool), np.ones(len(odd), bool)]
    pool = _rows(twitter, lambda e: e.category in cats and e.base in train)  # the training emoji only
    return [Case("style", "Google vs Twitter", fit, test_images, anomalous, twitter.images, pool)]


def category_cases(google: Vendor, validation: bool = False, min_images: int = MIN_CATEGORY) -> list[Case]:
    """The ``category`` protocol: one case per category with at least ``min_images`` images."""
    counts: dict[str, int] = {}
    for e in google.emoji.values():
        counts[e.category] = counts.get(e.category, 0) + 1
    categories = sorted(c for c, n in counts.items() if n >= min_images)
    split: dict[str, tuple[set[str], set[str]]] = {}
    for c in categories:
        train, test = split_bases(_bases_in(google, {c}), TRAIN_SHARE)
        split[c] = split_bases(sorted(train), VALIDATION_SHARE) if validation else (train, test)
    test_rows = _rows(google, lambda e: e.category in split and e.base in split[e.category][1])
    by_row = {e.index: e.category for e in google.emoji.values()}
    test_categories = np.array([by_row[i] for i in test_rows])
    train_rows = _rows(google, lambda e: e.category in split and e.base in split[e.category][0])
    train_categories = np.array([by_row[i] for i in train_rows])
    cases = []
    for c in categories:
        fit = google.images[train_rows[train_categories == c]]
        pool = train_rows[train_categories != c]  # the other categories' training images
        cases.append(Case(c, c, fit, google.images[test_rows], test_categories != c, google.images, pool))
    return cases


def cases_for(
    protocol: str, google: Vendor, twitter: Vendor, validation: bool = False, min_images: int = MIN_CATEGORY
) -> list[Case]:
    if protocol == "style":
        return style_cases(google, twitter, validation)
    return category_cases(google, validation, min_images)


def results_name(
    protocol: str, label: str, seeds: list[int], validation: bool, contamination: float = 0.0
) -> str:
    stem = f"emoji-{protocol}{'-validation' if validation else ''}-{safe_name(label)}"
    stem += "" if seeds == [0] else "-seeds-" + "-".join(map(str, seeds))
    return stem + contamination_suffix(contamination) + ".json"


# ------------------------------------------------------------------------------------------- CLI
def run(args: argparse.Namespace) -> int:
    """``oddeye bench emoji``: run, print the tables, save JSON, regenerate the markdown."""
    from oddeye.bench.report import emoji_table, regenerate

    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise OddeyeError(f"--protocols: expected style and/or category, found {args.protocols!r}")
    if args.label and len(names) != 1:
        raise OddeyeError("--label names the results of one detector; give one name in --detectors")
    settings = dict(args.settings)
    for name in names:  # bad names or settings fail now, before hours of training
        if name not in CLASSICAL:
            oddeye.create(name, **settings).build((64, 64, 3))
    seeds = int_list(args.seeds, "seeds")
    contaminations = fractions(args.contamination)
    google, twitter = (load_vendor(args.data_dir, v) for v in VENDORS)
    for protocol in protocols:
        cases = cases_for(protocol, google, twitter, args.validation, args.min_category)
        if not cases:
            raise OddeyeError(f"{args.data_dir}: no category has {args.min_category} images")
        sizes = {c.key: [len(c.train), int((~c.anomalous).sum()), int(c.anomalous.sum())] for c in cases}
        for fraction in contaminations:
            results = []
            for name in names:
                desc = f"emoji {protocol}{contamination_desc(fraction)}"
                record = {
                    "benchmark": "emoji",
                    "dataset": f"emoji-{protocol}{'-validation' if args.validation else ''}",
                    "protocol": protocol,
                    "validation": args.validation,
                    "cases": [c.key for c in cases],
                    "case_sizes": sizes,
                    **run_cases(cases, name, seeds, settings, desc, fraction),
                    "label": args.label or method_label(name, settings),
                }
                results.append(record)
                if not args.no_save:
                    file = results_name(protocol, record["label"], seeds, args.validation, fraction)
                    write_text(Path(args.results_dir) / file, json.dumps(record, indent=2) + "\n")
            print(emoji_table(results))
    regenerate(args)
    return 0
