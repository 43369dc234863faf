"""One-class benchmarks: train on one class only, test on the whole test set.

For each class c: fit on the training images of c; score every test image; AUROC with c normal
(label 0) and every other class anomalous (label 1). The protocol of the one-class Fashion-MNIST
literature (GEOM, GOAD, ARNet), and the same on scikit-learn's digits (half of each class to train).

``--contamination F`` runs it again with a fraction F of each training set replaced by the other
classes' training images (:func:`contaminate`): how much a detector suffers from unclean data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import roc_auc_score

import oddeye
from oddeye.bench.classical import CLASSICAL
from oddeye.bench.common import (
    FMNIST_DIR,
    FULL_BANK_LABEL,
    contamination_desc,
    contamination_suffix,
    full_bank_settings,
)
from oddeye.bench.provenance import provenance
from oddeye.bench.published import PUBLISHED
from oddeye.data import as_imageset, digits_classes, read_idx
from oddeye.errors import OddeyeError
from oddeye.io import write_text
from oddeye.progress import Task

FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FMNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class MultiClass:
    """A labelled image set split into train and test, each image with its class."""

    name: str
    train: np.ndarray
    train_classes: np.ndarray
    test: np.ndarray
    test_classes: np.ndarray
    class_names: list[str] = field(default_factory=list)


class Estimator(Protocol):
    def fit(self, images: np.ndarray) -> Any: ...

    def score(self, images: np.ndarray) -> np.ndarray: ...


def fmnist_files(data_dir: Path) -> list[Path]:
    """The four idx files (``.gz`` or not) in ``data_dir``; a clear error naming what is missing."""
    found = []
    for stem in FMNIST_FILES:
        candidates = [data_dir / stem, data_dir / f"{stem}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            raise OddeyeError(
                f"{data_dir}: expected the Fashion-MNIST idx files ({stem}[.gz] and the other three), "
                "found them missing; install Debian's dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist) or pass --data-dir with the four files"
            )
        found.append(hit)
    return found


def load_fmnist(data_dir: Path = FMNIST_DIR) -> MultiClass:
    x_train, y_train, x_test, y_test = (read_idx(p) for p in fmnist_files(Path(data_dir)))
    return MultiClass(
        "fmnist",
        np.asarray(x_train),
        np.asarray(y_train, np.int64),
        np.asarray(x_test),
        np.asarray(y_test, np.int64),
        FMNIST_CLASSES,
    )


def load_digits_split(seed: int = 0) -> MultiClass:
    train, train_classes, test, test_classes = digits_classes(seed)
    return MultiClass("digits", train, train_classes, test, test_classes, [str(d) for d in range(10)])


def make_method(name: str, seed: int, settings: dict[str, Any]) -> Estimator:
    """A registered detector (trained from scratch) or a classical reference, by name."""
    if name in CLASSICAL:
        return CLASSICAL[name]()
    return oddeye.create(name, **{"progress": False, **settings, "seed": seed})


@dataclass
class Case:
    """One train/test task of a benchmark: normal training images, and test images marked."""

    key: str  # the results key ("6", "Smileys & Emotion")
    title: str  # what progress shows ("Shirt")
    train: np.ndarray
    test: np.ndarray
    anomalous: np.ndarray  # (n_test,) bool: True = anomaly
    pool: np.ndarray  # what contamination draws from (shared by the cases, never copied whole)
    pool_rows: np.ndarray  # (k,) int64: the rows of ``pool`` that may go in (other classes' training)


def oneclass_cases(data: MultiClass, classes: list[int]) -> list[Case]:
    """Class ``c`` normal, for each ``c``: its training images; the whole test set, others anomalous;
    the other classes' training images as the contamination pool."""
    return [
        Case(
            str(c),
            data.class_names[c],
            data.train[data.train_classes == c],
            data.test,
            data.test_classes != c,
            data.train,
            np.flatnonzero(data.train_classes != c),
        )
        for c in classes
    ]


# the 8-vs-2 protocol's fixed list (issue 24): fixed before any figure, each pair two classes alike
# (tops, warm tops, long garments, low shoes, bag and boot), where the classes left to train on
# hold the nearest look-alikes of the anomalies
DEFAULT_PAIRS = ((0, 6), (2, 4), (1, 3), (5, 7), (8, 9))


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """``--pairs``: 'A-B,C-D', 'default' (:data:`DEFAULT_PAIRS`) or 'all' (the 45 pairs of 0..9)."""
    if text.strip() == "default":
        return list(DEFAULT_PAIRS)
    if text.strip() == "all":
        return [(a, b) for a in range(10) for b in range(a + 1, 10)]
    pairs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        a, sep, b = item.partition("-")
        if not (sep and a.isdigit() and b.isdigit() and 0 <= int(a) < int(b) <= 9):
            raise OddeyeError(
                "--pairs: expected 'default', 'all' or a comma list of A-B with 0 <= A < B <= 9, "
                f"found {item!r}"
            )
        pairs.append((int(a), int(b)))
    if not pairs:
        raise OddeyeError(f"--pairs: expected at least one pair A-B, found {text!r}")
    return list(dict.fromkeys(pairs))


def pair_cases(data: MultiClass, pairs: list[tuple[int, int]]) -> list[Case]:
    """The 8-vs-2 protocol (the course's earlier edition): for each pair, the training images of
    the eight other classes are normal; the whole test set, the pair's classes anomalous; the
    pair's own training images the contamination pool."""
    cases = []
    for pair in pairs:
        held = np.isin(data.train_classes, pair)
        cases.append(
            Case(
                f"{pair[0]}-{pair[1]}",
                " + ".join(data.class_names[c] for c in pair),
                data.train[~held],
                data.test,
                np.isin(data.test_classes, pair),
                data.train,
                np.flatnonzero(held),
            )
        )
    return cases


def contaminate(
    train: np.ndarray, pool: np.ndarray, fraction: float, seed: int, key: str, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images, replaced positions): ``round(fraction * len(train))`` random positions of ``train``
    replaced by images of ``pool`` (of its ``rows`` only, when given) drawn without replacement.

    The draw depends on ``(seed, key, fraction)`` alone, so every detector of a run trains on the same
    images. Only the drawn images are copied out of ``pool``, in its dtype (uint8 stays uint8);
    fraction 0 returns ``train`` itself.
    """
    k = int(round(fraction * len(train)))
    if k == 0:
        return train, np.empty(0, np.int64)
    rows = np.arange(len(pool)) if rows is None else np.asarray(rows, np.int64)
    if k > len(rows):
        raise OddeyeError(
            f"--contamination {fraction:g} of {key!r}: expected {k} images of other classes to draw, "
            f"found {len(rows)}"
        )
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), round(fraction * 1_000_000)])
    positions = np.sort(rng.choice(len(train), k, replace=False))
    images = train.copy()
    images[positions] = pool[rows[rng.choice(len(rows), k, replace=False)]]
    return images, positions


def run_case(case: Case, name: str, seed: int, settings: dict[str, Any]) -> tuple[float, float, Estimator]:
    """(AUROC, seconds, the fitted method): fit on the case's training images, score its test set."""
    start = time.perf_counter()
    method = make_method(name, seed, settings)
    method.fit(case.train)
    scores = method.score(case.test)
    seconds = time.perf_counter() - start
    return float(roc_auc_score(case.anomalous, scores)), seconds, method


def run_cases(
    cases: list[Case],
    name: str,
    seeds: list[int],
    settings: dict[str, Any],
    desc: str,
    contamination: float = 0.0,
) -> dict[str, Any]:
    """Every (seed, case) for one method: AUROC and seconds per case, means per seed, provenance;
    each training set contaminated by ``contamination`` of its case's pool (the draw of each seed)."""
    auroc: dict[str, list[float]] = {c.key: [] for c in cases}
    seconds: dict[str, list[float]] = {c.key: [] for c in cases}
    replaced: dict[str, int] = {}
    context: dict[str, Any] | None = None
    build = None
    jobs = [(seed, case) for seed in seeds for case in cases]
    with Task(f"{desc} {name}", len(jobs), "cases") as task:
        for seed, case in jobs:
            train, positions = contaminate(
                case.train, case.pool, contamination, seed, case.key, case.pool_rows
            )
            replaced[case.key] = len(positions)
            a, s, method = run_case(dataclasses.replace(case, train=train), name, seed, settings)
            auroc[case.key].append(a)
            seconds[case.key].append(s)
            build = build or getattr(method, "build_", None)
            if context is None:  # the device the first fitted method ran on (classical: the CPU)
                context = provenance(getattr(method, "device_", "cpu"))
            task.update()
            task.set_postfix(last=f"{case.title} {a:.3f}")
    per_seed = [float(np.mean([auroc[c.key][i] for c in cases])) for i in range(len(seeds))]
    return {
        "detector": name,
        "kind": "classical" if name in CLASSICAL else "oddeye",
        "settings": settings_record(name, settings, build),
        "seeds": seeds,
        "auroc": auroc,
        "seconds": seconds,
        "mean_auroc": float(np.mean(per_seed)),
        "mean_auroc_per_seed": per_seed,
        "std_over_seeds": float(np.std(per_seed)),
        "contamination": contamination,
        "replaced_images": replaced,
        **(context or provenance("cpu")),
    }


def run_method(
    data: MultiClass,
    name: str,
    classes: list[int],
    seeds: list[int],
    settings: dict[str, Any],
    contamination: float = 0.0,
) -> dict[str, Any]:
    """Every (seed, class) for one method; the results record with its provenance."""
    cases = oneclass_cases(data, classes)
    record = run_cases(
        cases, name, seeds, settings, data.name + contamination_desc(contamination), contamination
    )
    return {
        "benchmark": "oneclass",
        "dataset": data.name,
        **record,
        "classes": classes,
        "class_names": [data.class_names[c] for c in classes],
    }


def run_pairs(
    data: MultiClass,
    name: str,
    pairs: list[tuple[int, int]],
    seeds: list[int],
    settings: dict[str, Any],
    contamination: float = 0.0,
) -> dict[str, Any]:
    """Every (seed, pair) of the 8-vs-2 protocol for one method; the results record."""
    cases = pair_cases(data, pairs)
    desc = f"{data.name} 8-vs-2" + contamination_desc(contamination)
    return {
        "benchmark": "pairs",
        "dataset": data.name,
        **run_cases(cases, name, seeds, settings, desc, contamination),
        "pairs": [list(p) for p in pairs],
        "cases": [c.key for c in cases],
        "case_titles": {c.key: c.title for c in cases},
        "case_sizes": {
            c.key: [len(c.train), int((~c.anomalous).sum()), int(c.anomalous.sum())] for c in cases
        },
    }


def settings_record(name: str, settings: dict[str, Any], build: Any = None) -> dict[str, Any]:
    """What was asked for, and (for detectors) the build the first case resolved it to."""
    if name in CLASSICAL:
        return CLASSICAL[name]().get_params()
    det = oddeye.create(name, **{"progress": False, **settings})
    record = {"config": det.config.to_dict(), "params": det.params}
    return {**record, "build": build.to_dict()} if build is not None else record


def method_label(name: str, settings: dict[str, Any]) -> str:
    """The detector's name, plus any architecture parameters and epoch cap in ``settings``
    (file-name safe), so runs with different settings keep separate result files."""
    if name in CLASSICAL:
        return name
    params = {k: v for k, v in settings.items() if k == "epochs" or k not in oddeye.TrainConfig.fields()}
    parts = [name] + [f"{k}-{v}" for k, v in sorted(params.items())]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_")


@dataclass(frozen=True)
class Method:
    """One method of a benchmark run: a detector (or classical reference) with its settings and
    label; a full-bank reference also names the method it is the full bank of. ``invocation``:
    shared by the records of one run of the benchmark (the report compares only those)."""

    name: str
    settings: dict[str, Any]
    label: str
    invocation: str
    full_bank_of: str | None = None

    def record(self) -> dict[str, Any]:
        """What the method adds to its record."""
        out: dict[str, Any] = {"label": self.label, "invocation": self.invocation}
        if self.full_bank_of is not None:
            out["full_bank_of"] = self.full_bank_of
        return out


def new_invocation() -> str:
    return uuid.uuid4().hex[:12]


def with_full_banks(
    names: list[str], settings: dict[str, Any], label: str | None, n: int | None, invocation: str = ""
) -> list[Method]:
    """The methods of a run: each of ``names`` (labelled ``label`` or by :func:`method_label`),
    and with ``n`` (``--full-bank``: at least the training sets' size) each memory-bank detector's
    full-bank reference right after it (:func:`~oddeye.bench.common.full_bank_settings`)."""
    invocation = invocation or new_invocation()
    methods = []
    for name in names:
        own = label or method_label(name, settings)
        methods.append(Method(name, settings, own, invocation))
        if n is None or name in CLASSICAL:  # a classical reference is itself the comparison
            continue
        full = full_bank_settings(name, settings, n)
        if full is None:
            print(f"--full-bank: {name} keeps no bank of training images; no full-bank reference for it")
            continue
        methods.append(Method(name, full, FULL_BANK_LABEL.format(label=own), invocation, own))
    return methods


def safe_name(label: str) -> str:
    """``label`` as a file-name part: runs of other characters than letters, digits, ``._-``
    become one ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "run"


def results_name(
    dataset: str, name: str, classes: list[int], seeds: list[int], contamination: float = 0.0
) -> str:
    """File name of a run: the full clean protocol gets the plain name, others say what they cover.
    A label's characters other than letters, digits, '.', '_' and '-' become '-' (a '/' in a label
    made a folder)."""
    stem = f"oneclass-{dataset}-{safe_name(name)}"
    if classes != list(range(10)):
        stem += "-classes-" + "-".join(map(str, classes))
    if seeds != [0]:
        stem += "-seeds-" + "-".join(map(str, seeds))
    return stem + contamination_suffix(contamination) + ".json"


def pairs_results_name(
    dataset: str, name: str, pairs: list[tuple[int, int]], seeds: list[int], contamination: float = 0.0
) -> str:
    """File name of an 8-vs-2 run: the fixed list gets the plain name, others say their pairs."""
    stem = f"pairs-{dataset}-{safe_name(name)}"
    if pairs != list(DEFAULT_PAIRS):
        stem += "-pairs-" + "-".join(f"{a}{b}" for a, b in pairs)
    if seeds != [0]:
        stem += "-seeds-" + "-".join(map(str, seeds))
    return stem + contamination_suffix(contamination) + ".json"


# ------------------------------------------------------------------------------------------- CLI
def int_list(text: str, what: str, lo: int = 0, hi: int | None = None) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < lo or (hi is not None and v > hi) for v in values):
        limits = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise OddeyeError(f"--{what}: expected a comma list of integers {limits}, found {text!r}")
    return values


def fractions(text: str) -> list[float]:
    """``--contamination``: the distinct fractions in [0, 0.5), in the order given."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 <= v < 0.5 for v in values):
        raise OddeyeError(f"--contamination: expected a comma list of fractions in [0, 0.5), found {text!r}")
    return list(dict.fromkeys(values))


def run(args: argparse.Namespace, dataset: str) -> int:
    """``oddeye bench fmnist|digits``: run, print the table, save JSON, regenerate the markdown."""
    from oddeye.bench.report import oneclass_table, pairs_table, regenerate

    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    for name in names:  # unknown names fail now, listing the valid ones
        if name not in CLASSICAL:
            oddeye.create(name)
    classes = int_list(args.classes, "classes", 0, 9)
    seeds = int_list(args.seeds, "seeds")
    contaminations = fractions(args.contamination)
    settings = dict(args.settings)
    data = load_fmnist(args.data_dir) if dataset == "fmnist" else load_digits_split()
    shape = as_imageset(data.train[:1]).shape
    for name in names:  # bad settings or parameters fail now, not after earlier methods have run
        if name not in CLASSICAL:
            oddeye.create(name, **settings).build(shape)
    if args.label and len(names) != 1:
        raise OddeyeError("--label names the results of one detector; give one name in --detectors")
    pairs = None if args.pairs is None else parse_pairs(args.pairs)
    methods = with_full_banks(names, settings, args.label, len(data.train) if args.full_bank else None)
    for fraction in contaminations:
        results = []
        for method in methods:
            name, label = method.name, method.label
            if pairs is not None:
                result = run_pairs(data, name, pairs, seeds, method.settings, fraction)
                file = pairs_results_name(dataset, label, pairs, seeds, fraction)
            else:
                result = run_method(data, name, classes, seeds, method.settings, fraction)
                file = results_name(dataset, label, classes, seeds, fraction)
            result.update(method.record())
            results.append(result)
            if not args.no_save:
                write_text(Path(args.results_dir) / file, json.dumps(result, indent=2) + "\n")
        if fraction or pairs is not None:
            print(f"\n{dataset}{' 8-vs-2' if pairs is not None else ''}{contamination_desc(fraction)}")
        if pairs is not None:
            print(pairs_table(results))
            continue
        published = PUBLISHED[dataset] if classes == list(range(10)) and not fraction else []
        print(oneclass_table(results, published))
    regenerate(args)
    return 0
