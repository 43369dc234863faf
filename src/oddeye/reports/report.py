"""The report: one self-contained HTML file (figures embedded, opens offline) plus the same figures
as PNG files. Each section appears when its inputs are there: the training curve needs the run,
ROC and precision-recall curves need labels, image panels and the latent map need the images."""

from __future__ import annotations

import base64
import datetime
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oddeye._version import __version__
from oddeye.data.decode import decode
from oddeye.data.imageset import ImageSet, shape_text
from oddeye.errors import OddeyeError
from oddeye.io import atomic_dir, atomic_path
from oddeye.progress import track
from oddeye.reports import plots
from oddeye.runs import all_histories, metadata
from oddeye.thresholds import Threshold, threshold_rows

if TYPE_CHECKING:
    from oddeye.data.masks import GroundTruth
    from oddeye.estimator import Detector
    from oddeye.evaluation import Evaluation
    from oddeye.maps import MapFiles


@dataclass
class ReportInputs:
    """What a report is made from; only ``scores`` is required."""

    scores: np.ndarray  # (N,) higher = more anomalous
    scores_source: str  # the images scored (or the CSV read), for the summary
    labels: np.ndarray | None = None  # (N,) 0/1, 1 = anomaly
    classes: np.ndarray | None = None  # (N,) class ids to colour by (e.g. Fashion-MNIST's ten)
    class_names: list[str] | None = None
    det: Detector | None = None
    data: ImageSet | None = None  # the scored images, as the detector sees them
    threshold: Threshold | None = None
    title: str = "oddeye report"
    truth: GroundTruth | None = None  # labels, defect types and masks (e.g. an MVTec AD category)
    maps: MapFiles | None = None  # the scored images' maps on disk (score --maps)
    evaluation: Evaluation | None = None  # per-defect and pixel metrics already computed


@dataclass
class Section:
    key: str  # also the PNG's file name
    title: str
    caption: str
    png: bytes | None = None


@dataclass
class ReportFiles:
    html: Path
    figures: list[Path] = field(default_factory=list)


def write_report(
    out: str | Path,
    inputs: ReportInputs,
    *,
    n_images: int = 16,
    embed_max: int = 5000,
    tsne_max: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> ReportFiles:
    """Write ``out`` (HTML) and ``<stem>_figures/*.png`` next to it, each atomically."""
    out = Path(out)
    steps = [
        lambda: _training_section(inputs),
        lambda: _histogram_section(inputs),
        lambda: _roc_section(inputs),
        lambda: _image_sections(inputs, n_images),
        lambda: _local_sections(inputs),
        lambda: _set_aside_section(inputs),
        lambda: _reconstruction_section(inputs),
        lambda: _latent_section(inputs, embed_max, tsne_max, seed, progress),
    ]
    sections: list[Section] = []
    for step in track(steps, "report", len(steps), "sections", progress):
        made = step()
        sections += made if isinstance(made, list) else [made] if made is not None else []
    figures_dir = out.with_name(f"{out.stem}_figures")
    files = ReportFiles(out, [figures_dir / f"{s.key}.png" for s in sections if s.png is not None])
    with atomic_path(out) as tmp_html:
        tmp_html.write_text(render_html(inputs, sections), encoding="utf-8")
    try:
        with atomic_dir(figures_dir, force=True) as tmp:
            for s in sections:
                if s.png is not None:
                    (tmp / f"{s.key}.png").write_bytes(s.png)
    except OddeyeError:
        out.unlink(missing_ok=True)  # the page without its figures folder would be half a report
        raise
    return files


# -- sections ---------------------------------------------------------------------------------
def _groups(inputs: ReportInputs, index: np.ndarray | None = None) -> list[tuple[str, np.ndarray]]:
    labels = inputs.labels if index is None or inputs.labels is None else inputs.labels[index]
    classes = inputs.classes if index is None or inputs.classes is None else inputs.classes[index]
    return plots.groups_of(labels, classes, inputs.class_names)


def _training_section(inputs: ReportInputs) -> Section | None:
    det = inputs.det
    if det is None:
        return None
    histories = all_histories(det.record_)
    if not any(histories.values()):
        return None  # memory banks alone: no training loop to show
    fig = plots.training_curve_figure(histories, f"{det.detector} training")
    caption = (
        "Training loss and the loss on held-out normal training images, per epoch; the dashed line "
        "marks the epoch whose weights were kept."
    )
    if det.model_.members():
        caption += " One panel per ensemble member that trains (memory banks have no loop)."
    return Section("training_curve", "Training curve", caption, plots.png_bytes(fig))


def _histogram_section(inputs: ReportInputs) -> Section:
    t = inputs.threshold
    fig = plots.score_histogram_figure(
        inputs.scores,
        _groups(inputs),
        t.value if t is not None else None,
        f"threshold {t.value:.4g} ({t.rule})" if t is not None else "threshold",
    )
    by = "class" if inputs.classes is not None else "label" if inputs.labels is not None else None
    caption = "Distribution of the scores" + (
        f", one colour per {by} (each scaled to unit area)" if by else ""
    )
    if t is not None:
        caption += f"; dashed line: {t.describe()}"
    return Section("score_histogram", "Score distributions", caption + ".", plots.png_bytes(fig))


def both_classes(labels: np.ndarray | None) -> bool:
    """Labels with normal and anomalous images both present (needed for ROC and its kin)."""
    return labels is not None and 0 < int(labels.sum()) < len(labels)


def _roc_section(inputs: ReportInputs) -> Section | None:
    if not both_classes(inputs.labels):
        return None
    t = inputs.threshold.value if inputs.threshold is not None else None
    fig = plots.roc_pr_figure(inputs.scores, inputs.labels, t)
    caption = (
        "ROC and precision-recall curves against the labels (anomaly = positive); the dot is the threshold."
    )
    return Section("roc_pr", "ROC and precision-recall", caption, plots.png_bytes(fig))


def display_images(data: ImageSet, index: np.ndarray) -> np.ndarray:
    """(B, H, W, C) images in [0, 1] for display, from the scaling the detector uses."""
    return data.display(index)


def _name(inputs: ReportInputs, i: int, width: int = 28) -> str:
    """Image ``i`` in a caption: its file (the end of its path, within ``width`` characters) for a
    folder, else its row number."""
    paths = inputs.data.paths if inputs.data is not None else None
    if paths is None:
        return f"#{i}"
    path = paths[i]
    return path if len(path) <= width else "..." + path[-(width - 3) :]


def _captions(inputs: ReportInputs, index: np.ndarray) -> tuple[list[str], list[Any] | None]:
    captions = [f"{_name(inputs, i)}  {inputs.scores[i]:.4g}" for i in index]
    if inputs.labels is None:
        return captions, None
    return captions, [plots.NORMAL_ANOMALOUS[int(inputs.labels[i])][1] for i in index]


def _image_sections(inputs: ReportInputs, n: int) -> list[Section]:
    if inputs.data is None:
        return []
    order = np.argsort(inputs.scores, kind="stable")
    sections = []
    framed = " Frames: red = labelled anomalous, blue = labelled normal." if inputs.labels is not None else ""
    for key, title, index in (
        ("most_anomalous", "Most anomalous images", order[::-1][:n]),
        ("most_normal", "Most normal images", order[:n]),
    ):
        captions, colours = _captions(inputs, index)
        fig = plots.image_grid_figure(display_images(inputs.data, index), captions, title, colours)
        caption = f"The {len(index)} {title.lower()}, each with its image id and score.{framed}"
        sections.append(Section(key, title, caption, plots.png_bytes(fig)))
    return sections


def _local_sections(inputs: ReportInputs, n: int = 4) -> list[Section]:
    """The ``n`` highest-scoring images at their files' full size, under their map (resized to
    it), with the true regions' outline (green) and the found one's (cyan, above the pixel
    threshold): needs the truth's image files, its masks and the maps."""
    truth, maps = inputs.truth, inputs.maps
    if truth is None or truth.masks is None or truth.images is None or maps is None:
        return []

    from oddeye.maps import overlay, resize_map

    sections = []
    threshold = maps.threshold
    found = f"cyan: above the {threshold.describe()}" if threshold is not None else "no pixel threshold"
    for rank, i in enumerate(np.argsort(-inputs.scores, kind="stable")[:n]):
        i = int(i)
        mask = truth.masks.mask(i)
        image = decode(truth.images[i], "RGB", mask.shape[::-1]) / 255.0  # as training reads files
        picture = overlay(image, resize_map(maps.map(i), mask.shape), threshold, truth=mask)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        name = truth.paths[i] if truth.paths is not None else f"#{i}"
        caption = (
            f"{name} ({truth.defects[i]}; score {inputs.scores[i]:.4g}, one of the {n} highest) at "
            f"{mask.shape[0]}x{mask.shape[1]}: its anomaly map as a heat overlay; green: the true region; "
            f"{found}."
        )
        title = f"Local anomaly {rank + 1}: {name}"
        sections.append(Section(f"local_{rank + 1}", title, caption, buffer.getvalue()))
    return sections


def _set_aside_section(inputs: ReportInputs) -> Section | None:
    """The training images screening set aside (the oddest first), from the run's sample of them."""
    det = inputs.det
    record = det.record_ if det is not None else None
    if record is None or record.set_aside is None or record.set_aside_sample is None:
        return None
    s, images = record.set_aside, record.set_aside_sample
    order = np.argsort(-s.scores, kind="stable")[: len(images)]
    names = record.set_aside_paths
    captions = [
        f"{names[i] if names is not None else '#' + str(s.indices[i])}  {s.scores[i]:.3g}" for i in order
    ]
    shown = ((det.normalisation_.apply(_as_tensor(images)).numpy() + 1) / 2).clip(0, 1)  # NHWC
    fig = plots.image_grid_figure(shown, captions, "Training images set aside")
    told = f"{len(s.indices)} training images were set aside as unlike the rest ({s.rule})"
    caption = f"{told}; the {len(order)} oddest, each with its id (or path) and atypicality (set_aside.csv)."
    return Section("set_aside", "Training images set aside", caption, plots.png_bytes(fig))


def _reconstruction_section(inputs: ReportInputs, n_top: int = 5, n_bottom: int = 3) -> Section | None:
    det, data = inputs.det, inputs.data
    if det is None or data is None:
        return None
    order = np.argsort(inputs.scores, kind="stable")
    index = np.concatenate([order[::-1][:n_top], order[:n_bottom]])
    result = det.infer(data, maps=True, indices=index)
    if result.anomaly_maps is None:
        return None
    shown = None
    if result.reconstructions is not None:
        recon = data.normalisation.apply(_as_tensor(result.reconstructions))  # (B, H, W, C) in [-1, 1]
        shown = ((recon.numpy() + 1) / 2).clip(0, 1)
    kinds = ["most anomalous"] * min(n_top, len(index)) + ["most normal"] * (
        len(index) - min(n_top, len(index))
    )
    captions = [f"{k}\n{_name(inputs, i)}  {inputs.scores[i]:.4g}" for i, k in zip(index, kinds)]
    title = "input / reconstruction / anomaly map" if shown is not None else "input / anomaly map"
    maps = result.anomaly_maps
    fig = plots.triplets_figure(display_images(data, index), shown, maps, captions, title)
    recon_text = " and their reconstructions" if shown is not None else ""
    caption = (
        f"The {n_top} most anomalous and the {n_bottom} most normal images{recon_text}, with the "
        f"detector's anomaly map: {det.model_.map_meaning}. One colour scale for all rows; brighter "
        "is more anomalous."
    )
    return Section("anomaly_maps", "Anomaly maps", caption, plots.png_bytes(fig))


def _as_tensor(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def _latent_section(
    inputs: ReportInputs, embed_max: int, tsne_max: int, seed: int, progress: bool
) -> Section | None:
    det, data = inputs.det, inputs.data
    if det is None or data is None or len(inputs.scores) < 3:
        return None
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from oddeye.scoring import embed

    rng = np.random.default_rng(seed)
    n = len(inputs.scores)
    index = np.sort(rng.choice(n, min(n, embed_max), replace=False))
    codes = embed(det.model_, data, det.device_, det.config.score_batch_size, index, progress)
    panels = [(f"PCA ({len(index)} images)", PCA(2, random_state=seed).fit_transform(codes), index)]
    m = min(len(index), tsne_max)
    if m >= 10:
        sub = np.sort(rng.choice(len(index), m, replace=False))
        reduced = PCA(min(50, codes.shape[1], m), random_state=seed).fit_transform(codes[sub])
        tsne = TSNE(2, perplexity=min(30.0, (m - 1) / 3), init="pca", random_state=seed)
        panels.append((f"t-SNE ({m} images)", tsne.fit_transform(reduced), index[sub]))
    fig = plots.latent_map_figure(
        [(name, xy, _groups(inputs, rows), inputs.scores[rows]) for name, xy, rows in panels],
        f"{det.detector}: latent codes",
    )
    coloured = "class" if inputs.classes is not None else "label" if inputs.labels is not None else "score"
    caption = (
        f"Latent codes ({det.model_.latent}, {codes.shape[1]} numbers per image) projected to 2-D, "
        f"coloured by {coloured}. PCA keeps the large-scale layout; t-SNE keeps neighbourhoods."
    )
    return Section("latent_map", "Latent space", caption, plots.png_bytes(fig))


# -- HTML ---------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
  padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { padding: 0.25em 0.9em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { color: #555; font-weight: 600; white-space: nowrap; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.4em; } .note { color: #8a5300; }
footer { color: #888; font-size: 0.8em; margin-top: 3em; }
"""


def _epochs_text(det: Detector, training: dict[str, Any]) -> str:
    """'12 epochs, kept epoch 9', per member for ensembles, or no training loop (memory banks)."""
    members = getattr(det, "member_histories_", {})
    if not members:
        if not training.get("epochs_run"):
            return "no training loop (memory bank)"
        return f"{training.get('epochs_run', 0)} epochs, kept epoch {training.get('best_epoch', 0)}"
    kept = {name: max((r.epoch for r in h if r.improved), default=0) for name, h in members.items()}
    parts = [f"{name} {len(h)} epochs (kept {kept[name]})" for name, h in members.items()]
    return "members: " + ", ".join(parts)


def _training_rows(det: Detector) -> list[tuple[str, str]]:
    meta = metadata(det.record_)
    tr = meta.get("training", {})
    shape = shape_text(tuple(meta["input_shape"]))
    how = f"{tr.get('seconds', 0):.1f} s on {tr.get('device', '?')} ({tr.get('precision', '?')})"
    rows = [
        ("detector", det.build_.describe()),
        ("parameters", f"{meta.get('n_parameters', 0):,}"),
        ("training images", f"{tr.get('n_images', '?')} of {shape} (HxWxC)"),
        ("training", f"{how}, {_epochs_text(det, tr)}"),
    ]
    screening = meta.get("screening")
    if screening:
        bank, held = screening["bank_images_set_aside"], screening["heldout_images_set_aside"]
        told = f"{bank} of {screening['bank_images_screened']} bank images and {held} held-out images"
        rows.append(("set aside", f"{told} ({screening['rule']}; set_aside.csv)"))
    held = meta.get("heldout_scores") or {}
    if held.get("n"):
        stats = f"median {held['median']:.4g}, p99 {held['p99']:.4g}"
        rows.append(("held-out scores", f"{held['n']} {held.get('basis', '')}: {stats}"))
    return rows


def summary_rows(inputs: ReportInputs) -> list[tuple[str, str]]:
    """(name, value) rows: detector, parameters, training, data shapes, threshold, counts, metrics."""
    rows = _training_rows(inputs.det) if inputs.det is not None else []
    s = inputs.scores
    shape = f" of {shape_text(inputs.data.shape)}" if inputs.data is not None else ""
    rows.append(("scored", f"{len(s)} images{shape} from {inputs.scores_source}"))
    rows.append(("scores", f"min {s.min():.4g}, median {np.median(s):.4g}, max {s.max():.4g}"))
    if inputs.labels is not None and not both_classes(inputs.labels):
        rows.append(("labels", f"all {len(s)} labelled {'anomalous' if inputs.labels[0] else 'normal'}"))
    if both_classes(inputs.labels):
        from oddeye.evaluation import evaluate

        ev = evaluate(s, inputs.labels)
        rows.append(("labels", f"{ev.n_normal} normal, {ev.n_anomalous} anomalous"))
        rows.append(("ROC AUC", f"{ev.auroc:.4f}"))
        rows.append(("average precision", f"{ev.average_precision:.4f}"))
    if inputs.threshold is not None:
        rows += threshold_rows(inputs.threshold, s, inputs.labels)
    ev = inputs.evaluation
    if ev is not None and ev.per_defect:
        rows.append(("ROC AUC per defect", ", ".join(f"{k} {v:.4f}" for k, v in ev.per_defect.items())))
    if ev is not None and ev.pixel is not None:
        px = ev.pixel
        rows.append(("pixel AUROC", f"{px.pixel_auroc:.4f}"))
        rows.append((f"AUPRO (FPR <= {px.fpr_limit:g})", f"{px.aupro:.4f} ({px.n_regions} regions)"))
    return rows


def render_html(inputs: ReportInputs, sections: list[Section]) -> str:
    """The report page; every figure is an embedded data: URI, so nothing is fetched."""
    esc = html.escape
    table = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(inputs))
    body = [f"<h1>{esc(inputs.title)}</h1>", "<p>Higher score = more anomalous.</p>"]
    body += ["<h2>Summary</h2>", f"<table>{table}</table>"]
    if inputs.threshold is not None and inputs.threshold.uses_labels:
        body.append('<p class="note">The threshold was chosen with the labels: for analysis only.</p>')
    for s in sections:
        body.append(f'<h2 id="{s.key}">{esc(s.title)}</h2>')
        if s.png is not None:
            src = "data:image/png;base64," + base64.b64encode(s.png).decode("ascii")
            img = f'<img src="{src}" alt="{esc(s.title)}">'
            body.append(f"<figure>{img}<figcaption>{esc(s.caption)}</figcaption></figure>")
        else:
            body.append(f"<p>{esc(s.caption)}</p>")
    return html_page(inputs.title, body)


def html_page(title: str, body: list[str], css: str = CSS) -> str:
    """A self-contained page: ``body``'s parts in order, then a footer with the version and time."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    footer = f"<footer>oddeye {html.escape(__version__)}, {stamp}</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{css}</style></head>\n<body>\n"
        + "\n".join([*body, footer])
        + "\n</body></html>\n"
    )
