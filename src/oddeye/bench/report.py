"""Tables from benchmark results, and BENCHMARKS.md regenerated from the JSON files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oddeye.bench.large import format_result as format_large
from oddeye.bench.published import PUBLISHED, Published
from oddeye.errors import OddeyeError
from oddeye.io import write_text

NOTES = Path("benchmarks/NOTES.md")
DATASET_TITLES = {
    "fmnist": "One-class Fashion-MNIST (train on the 6,000 images of one class; test on all 10,000)",
    "digits": "One-class digits (scikit-learn's 8x8 digits; half of each class to train)",
}


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise OddeyeError(f"{path}: expected a JSON results file, found unreadable data ({e})") from None
        record["_file"] = path.name
        out.append(record)
    return out


def _class_means(r: dict[str, Any]) -> list[float]:
    return [float(np.mean(r["auroc"][str(c)])) for c in r["classes"]]


def _mean_cell(r: dict[str, Any]) -> str:
    cell = f"{r['mean_auroc']:.4f}"
    return cell + (f" ± {r['std_over_seeds']:.4f}" if len(r["seeds"]) > 1 else "")


def oneclass_table(results: Sequence[dict[str, Any]], published: Sequence[Published] = ()) -> str:
    """Plain-text table: one row per method (ours and classical), published rows marked."""
    if not results:
        return "(no results)"
    classes = results[0]["classes"]
    head = f"{'method':<22}{'mean AUROC':>18}" + "".join(f"{c:>7}" for c in classes) + f"{'s/class':>9}"
    lines = [head, "-" * len(head)]
    for r in sorted(results, key=lambda r: -r["mean_auroc"]):
        cells = "".join(f"{a:7.3f}" for a in _class_means(r))
        secs = np.mean([np.mean(v) for v in r["seconds"].values()])
        lines.append(f"{r.get('label', r['detector']):<22}{_mean_cell(r):>18}{cells}{secs:9.1f}")
    for p in published:
        cells = "".join(f"{a:7.3f}" for a in p.per_class) if p.per_class else f"{'(mean only)':>14}"
        lines.append(f"{p.method + '*':<22}{p.mean:18.3f}{cells}")
    if published:
        lines.append("* published, not re-run: " + "; ".join(f"{p.method}: {p.source}" for p in published))
    return "\n".join(lines)


def _oneclass_markdown(dataset: str, results: list[dict[str, Any]]) -> list[str]:
    full = [r for r in results if r["classes"] == list(range(10))]
    if not full:
        return []
    names = full[0]["class_names"]
    heads = [n if n == str(i) else f"{i} {n}" for i, n in enumerate(names)]
    lines = [
        f"## {DATASET_TITLES[dataset]}",
        "",
        "| method | kind | mean AUROC | " + " | ".join(heads) + " | s/class | seeds |",
        "|---" * (len(names) + 5) + "|",
    ]
    for r in sorted(full, key=lambda r: -r["mean_auroc"]):
        secs = np.mean([np.mean(v) for v in r["seconds"].values()])
        cells = " | ".join(f"{a:.3f}" for a in _class_means(r))
        seeds = ",".join(map(str, r["seeds"]))
        label = r.get("label", r["detector"])
        lines.append(f"| {label} | {r['kind']} | **{_mean_cell(r)}** | {cells} | {secs:.1f} | {seeds} |")
    for p in PUBLISHED[dataset]:
        cells = " | ".join(f"{a:.3f}" for a in p.per_class) if p.per_class else " | ".join([""] * 10)
        kind = "published, pretrained" if p.pretrained else "published"
        lines.append(f"| {p.method} | {kind} ({p.source}) | {p.mean:.3f} | {cells} | | |")
    machine = "; ".join(sorted({_machine(r) for r in full}))
    commits = ", ".join(sorted({_short_commit(r.get("git_commit")) for r in full}))
    commands = "; ".join(f"`{c}`" for c in sorted({r.get("command", "?") for r in full}))
    return [
        *lines,
        "",
        f"Machine: {machine}. Commits: {commits}. s/class: wall time to train on one class and score "
        "the whole test set.",
        "",
        f"Produced by: {commands}",
        "",
    ]


def _short_commit(commit: str | None) -> str:
    if not commit:
        return "unknown"
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def _machine(r: dict[str, Any]) -> str:
    m = r["machine"]
    return f"{m['cpu']}, {m['torch_threads']} threads, {m.get('gpu') or m['device']}"


def _speed_markdown(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    lines = [
        f"### `{r['_file']}`: {m['cpu']}, {m['torch_threads']} threads, device {m['device']}",
        "",
        f"Command: `{r.get('command', 'oddeye bench speed')}`; {r['data']['n']:,} images "
        f"64x64x3 uint8; {r['max_images'] or 'a full epoch of'} training images timed per loop.",
        "",
        "| detector | loop | train img/s | s/epoch | score img/s | peak RSS GiB | precision, batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["results"]:
        star = "*" if x.get("epoch_extrapolated") else ""
        lines.append(
            f"| {x['detector']} | {x['loop']} | {x['train']['images_per_s']:,.0f} | "
            f"{x['epoch_s']:.1f}{star} | {x['score']['images_per_s']:,.0f} | "
            f"{x['peak_rss_kib'] / 2**20:.2f} | {x['precision']}, {x['batch_size']} |"
        )
    for name, ratio in r.get("ratios", {}).items():
        lines.append(
            f"\n{name}: ours / course = **{ratio['train']:.2f}x** train, {ratio['score']:.2f}x score"
        )
    return [*lines, "", "\\* extrapolated from the timed images to a full epoch.", ""]


def render_markdown(results: list[dict[str, Any]], notes: str = "") -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `oddeye bench` from the JSON files in `benchmarks/results/` (regenerate with "
        "`oddeye bench report`). Figures only: nothing here is a pass/fail test. Published numbers "
        "are printed beside ours and marked; they were not re-run. Hyperparameters are the same for "
        "every class: fixed in advance, or (the `default` ensemble) chosen on validation data made "
        "from Fashion-MNIST training images only (held-out normal training images against other "
        "classes' training images; see Notes). Nothing is tuned on test labels.",
        "",
    ]
    for dataset in DATASET_TITLES:
        lines += _oneclass_markdown(dataset, [r for r in results if r.get("dataset") == dataset])
    speed = [r for r in results if "ratios" in r or r["_file"].startswith("speed")]
    speed.sort(key=lambda r: not r.get("ratios"))  # the ours-vs-course comparisons first
    if speed:
        lines += ["## Speed at the homework scale (140,001 x 64 x 64 x 3)", ""]
        for r in speed:
            lines += _speed_markdown(r)
    large = [r for r in results if r["_file"].startswith("large")]
    if large:
        lines += ["## Scoring a set larger than memory (`oddeye bench large`)", ""]
        for r in large:
            lines += [
                f"`{r['_file']}` ({r['provenance']['command']}):",
                "",
                "```",
                format_large(r),
                "```",
                "",
            ]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


def write_markdown(results_dir: Path, out: Path, notes_path: Path = NOTES) -> Path:
    notes = notes_path.read_text() if notes_path.is_file() else ""
    return write_text(out, render_markdown(load_results(results_dir), notes))
