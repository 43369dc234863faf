"""The ``oddeye outliers`` page: one self-contained HTML file (every image embedded, nothing
fetched) with the summary, the score distribution, the oddest images beside their anomaly maps,
the duplicate groups and the unreadable files. Only the images shown are decoded (at most
``GALLERY`` + ``GROUPS_SHOWN`` x ``PER_GROUP``), so a set of 100,000 costs what one of 1,000 does.
"""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

import numpy as np

from oddeye.data.imageset import ImageSet, shape_text
from oddeye.detectors.screening import AUTO_CUT
from oddeye.reports import plots
from oddeye.reports.report import CSS, display_images, html_page

if TYPE_CHECKING:
    from oddeye.ranking import OutlierResult

GROUPS_SHOWN = 50  # duplicate groups shown, the largest first (the CSV has them all)
PER_GROUP = 6  # images shown per group
UNREADABLE_SHOWN = 1000  # unreadable files listed (the CLI prints the count)
THUMB = 96  # pixels on an image's longer side

CARDS_CSS = """
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.card { margin: 0; padding: 0.4em; border: 1px solid #eee; max-width: 220px; }
.card img { width: 96px; image-rendering: pixelated; border: none; margin-right: 2px; }
.card figcaption { font-size: 0.8em; word-break: break-all; margin: 0.3em 0 0; }
.group { margin: 1.2em 0; } .group .cards { margin: 0.3em 0; }
"""


def render_outliers_html(result: OutlierResult, data: ImageSet) -> str:
    """The page for ``result`` on ``data`` (the images it ranked)."""
    esc = html.escape
    title = f"oddeye outliers: {result.source}"
    body = [f"<h1>{esc(title)}</h1>", f"<p>{esc(_intro(result))}</p>"]
    rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(result))
    body += ["<h2>Summary</h2>", f"<table>{rows}</table>"]
    body += _histogram(result)
    body += _gallery(result, data)
    body += _duplicates(result, data)
    body += _unreadable(result)
    return html_page(title, body, CSS + CARDS_CSS)


def _intro(result: OutlierResult) -> str:
    return (
        "Every image ranked by how odd it is among the others (higher = odder): its atypicality, "
        f"the robust z-score of its distance to the typical images, in each memory bank of "
        f"{result.detector} built on the whole set, averaged"
        + (
            "; for an image typical as a whole, the larger of that and how odd its oddest patches are "
            "among the other images' at their place (the local view, less 4 per unit of the first)"
            if result.local
            else ""
        )
        + f". About 0 is typical; above {AUTO_CUT:g} is rare."
    )


def summary_rows(result: OutlierResult) -> list[tuple[str, str]]:
    """(name, value) rows: images, unreadable files, duplicates, scores, gallery."""
    s, d = result.scores, result.duplicates
    rows = [("images", f"{len(s):,} of {shape_text(result.shape)} (HxWxC) from {result.source}")]
    n_bad = len(result.unreadable)
    rows.append(("unreadable files", f"{n_bad:,} skipped (listed below)" if n_bad else "none"))
    rows.append(("duplicates", d.describe()))
    rows.append(("scores", f"min {s.min():.4g}, median {np.median(s):.4g}, max {s.max():.4g}"))
    above = int((s > AUTO_CUT).sum())
    rows.append((f"above {AUTO_CUT:g}", f"{above:,} images ({above / len(s):.1%})"))
    rows.append(("detector", f"{result.detector} (memory banks of every image; no model kept)"))
    rows.append(("gallery", f"the {len(result.gallery)} oddest, with their anomaly maps"))
    return rows


def _img(png: bytes, alt: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def _histogram(result: OutlierResult) -> list[str]:
    fig = plots.score_histogram_figure(
        result.scores, threshold=AUTO_CUT, threshold_label="rare", xlabel="outlier score (higher = odder)"
    )
    caption = f"Distribution of the scores of all {len(result.scores):,} images."
    figure = f"<figure>{_img(plots.png_bytes(fig), 'score distribution')}<figcaption>{caption}</figcaption>"
    return ['<h2 id="scores">Score distribution</h2>', figure + "</figure>"]


def _gallery(result: OutlierResult, data: ImageSet) -> list[str]:
    index = result.gallery
    if not len(index):
        return []
    images = display_images(data, index)
    maps = result.maps
    scale = (0.0, 1.0)
    if maps is not None and maps.size:
        scale = (min(0.0, float(np.percentile(maps, 0.5))), float(np.percentile(maps, 99.5)))
    cards = []
    for rank, (i, image) in enumerate(zip(index, images), start=1):
        shown = _img(plots.image_png(image, THUMB), f"image {i}")
        if maps is not None:
            shown += _img(plots.map_png(maps[rank - 1], *scale, THUMB), f"anomaly map of image {i}")
        lines = [f"{rank}. {result.name(int(i))}", f"score {result.scores[i]:.4g}"]
        lines += _copy_note(result, int(i))
        text = "<br>".join(html.escape(line) for line in lines)
        cards.append(f'<figure class="card">{shown}<figcaption>{text}</figcaption></figure>')
    maps_text = (
        f" Beside each, the detector's anomaly map ({result.map_meaning}), made with the gallery's own "
        "images out of the banks so that each is compared with the others; one colour scale for "
        "all maps, brighter is odder."
        if maps is not None
        else ""
    )
    caption = f"The {len(index)} oddest images, the oddest first, each with its id and score.{maps_text}"
    return ['<h2 id="oddest">Oddest images</h2>', f"<p>{html.escape(caption)}</p>", _cards(cards)]


def _copy_note(result: OutlierResult, i: int) -> list[str]:
    kind = result.duplicates.kind(i)
    return [f"{kind} duplicate (group {result.duplicates.group[i]})"] if kind else []


def _cards(cards: list[str]) -> str:
    return '<div class="cards">' + "\n".join(cards) + "</div>"


def _duplicates(result: OutlierResult, data: ImageSet) -> list[str]:
    d = result.duplicates
    groups = sorted(d.groups(), key=lambda g: (-len(g), int(g[0])))
    out = ['<h2 id="duplicates">Duplicate groups</h2>']
    meaning = (
        "Exact: the same pixels. Near: the same picture re-encoded, resized or slightly brightened: "
        "the lowest frequencies of the grayscale images (their 32x32 DCT's 8x8 corner) correlate at "
        "about 0.995 or more, the two are far closer than either is to its 16th nearest image, and "
        "their mean brightness is within 10%."
    )
    if not groups:
        return [*out, f"<p>No duplicates. {html.escape(meaning)}</p>"]
    shown = groups[:GROUPS_SHOWN]
    more = f"; the {len(shown)} largest shown, all in the CSV" if len(groups) > len(shown) else ""
    text = f"{d.describe()}, each named by its smallest id{more}. {meaning}"
    out.append(f"<p>{html.escape(text)}</p>")
    index = np.unique(np.concatenate([g[:PER_GROUP] for g in shown]))
    pictures = dict(zip(index.tolist(), display_images(data, index)))
    for g in shown:
        kinds = sorted({d.kind(int(i)) for i in g})
        head = f"group {int(g[0])}: {len(g)} images ({', '.join(kinds)})"
        cards = [
            f'<figure class="card">{_img(plots.image_png(pictures[int(i)], THUMB), f"image {i}")}'
            f"<figcaption>{html.escape(result.name(int(i)))}<br>{d.kind(int(i))}, score "
            f"{result.scores[i]:.4g}</figcaption></figure>"
            for i in g[:PER_GROUP]
        ]
        extra = f"<p>and {len(g) - PER_GROUP} more</p>" if len(g) > PER_GROUP else ""
        out.append(f'<div class="group"><p>{html.escape(head)}</p>{_cards(cards)}{extra}</div>')
    return out


def _unreadable(result: OutlierResult) -> list[str]:
    bad = result.unreadable
    out = ['<h2 id="unreadable">Unreadable files</h2>']
    if not bad:
        return [*out, "<p>None: every file was read.</p>"]
    rows = "\n".join(
        f"<tr><td>{html.escape(u.path)}</td><td>{html.escape(u.reason)}</td></tr>"
        for u in bad[:UNREADABLE_SHOWN]
    )
    more = f"<p>and {len(bad) - UNREADABLE_SHOWN:,} more</p>" if len(bad) > UNREADABLE_SHOWN else ""
    text = f"{len(bad):,} files were skipped; every other image was ranked."
    return [*out, f"<p>{text}</p>", f"<table><tr><th>file</th><th>why</th></tr>{rows}</table>{more}"]
