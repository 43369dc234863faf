"""``oddeye review`` in a real browser: headless Chromium (Debian's ``chromium``, as the report's
test uses) drives the page offline: load, sort, open an image, move the threshold, mark three
images, reload and see the marks, add the normal ones and see their flags go. Screenshots are
saved as test artefacts (``ODDEYE_TEST_ARTIFACTS``) and checked to be non-blank."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oddeye
from helpers import blobs
from review_helpers import running

pytest.importorskip("fastapi", reason="the review page needs the serve extra")
from oddeye.review.session import Review  # noqa: E402

SHAPE = (16, 16, 3)


def shot(page, name: str, tmp_path: Path) -> Path:
    """A screenshot under the artefacts folder, checked to show something (not one flat colour)."""
    out = Path(os.environ.get("ODDEYE_TEST_ARTIFACTS", tmp_path)) / f"review-{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    pixels = np.asarray(Image.open(io.BytesIO(out.read_bytes())).convert("L"), dtype=float)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50, f"{out} looks blank"
    return out


def cards(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#grid .card",
        "els => els.map(e => ({id: +e.dataset.id, flagged: e.classList.contains('flagged'),"
        " badges: [...e.querySelectorAll('.badge')].map(b => b.textContent)}))",
    )


def wait_page(page, number: int = 0) -> None:
    page.wait_for_selector(f'#grid[data-loaded="{number}"]', timeout=30_000)


def test_review_page_end_to_end(browser, tmp_path: Path) -> None:
    run = tmp_path / "run"
    oddeye.train(blobs(80, SHAPE, seed=1), "pixel-knn", run, progress=False, val_fraction=0.25)
    test = np.concatenate([blobs(40, SHAPE, seed=2), blobs(20, SHAPE, seed=3, anomalous=True)])
    labels = np.r_[np.zeros(40, np.int64), np.ones(20, np.int64)]
    np.save(tmp_path / "test.npy", test)
    np.save(tmp_path / "labels.npy", labels)
    marks = tmp_path / "marks.csv"
    review = Review(
        run, tmp_path / "test.npy", labels=tmp_path / "labels.npy", marks=marks,
        cache=tmp_path / "cache", progress=False, page_size=24,
    )  # fmt: skip
    scores = review.current.scores
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside: list[str] = []
    with running(review) as url:

        def local_only(route) -> None:
            if route.request.url.startswith(url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", local_only)
        # load: most anomalous first, every thumbnail decoded
        page.goto(url)
        wait_page(page)
        shown = cards(page)
        assert [c["id"] for c in shown] == np.argsort(-scores, kind="stable")[:24].tolist()
        widths = page.eval_on_selector_all("#grid img", "els => els.map(e => e.naturalWidth)")
        assert len(widths) == 24 and min(widths) == SHAPE[0]
        assert "flagged" in page.inner_text("#counts") and "precision" in page.inner_text("#counts")
        shot(page, "grid", tmp_path)

        # sort: least anomalous first, then back
        page.select_option("#sort", "score-asc")
        page.wait_for_function(
            f"document.querySelector('#grid .card').dataset.id == '{int(np.argmin(scores))}'"
        )
        wait_page(page)
        page.select_option("#sort", "score")
        page.wait_for_function(
            f"document.querySelector('#grid .card').dataset.id == '{int(np.argmax(scores))}'"
        )
        wait_page(page)

        # open an image: the picture, its map over it with an opacity control
        page.click("#grid .card >> nth=0")
        page.wait_for_selector("#detail[data-loaded]")
        sizes = page.evaluate(
            "['d-image', 'd-map'].map(id => { const e = document.getElementById(id);"
            " return [e.complete, e.naturalWidth, e.hidden]; })"
        )
        assert sizes == [[True, SHAPE[1], False], [True, SHAPE[1], False]], sizes
        boxes = [page.locator(f"#{name}").bounding_box() for name in ("d-image", "d-map")]
        assert boxes[0] == boxes[1] and boxes[0]["width"] >= 4 * SHAPE[1]  # the map lies on the image
        page.fill("#d-opacity", "30")
        assert page.evaluate("document.getElementById('d-map').style.opacity") == "0.3"
        assert "rank" in page.inner_text("#d-facts")
        shot(page, "detail", tmp_path)
        page.keyboard.press("Escape")
        assert page.is_hidden("#detail")

        # move the threshold: drag the handle to the middle of the histogram, then type a value
        before = page.inner_text("#counts")
        box = page.locator("#hist").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + 20)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20, steps=5)
        page.mouse.up()
        moved = float(page.get_attribute("#hist", "data-threshold"))
        assert page.inner_text("#counts") != before
        assert f"flagged {int((scores > moved).sum())} of 60" in page.inner_text("#counts")
        top = np.argsort(-scores, kind="stable")[:24]
        assert [c["flagged"] for c in cards(page)] == (scores[top] > moved).tolist()
        value = float(np.sort(scores)[-10])  # the 9 above it are flagged
        page.fill("#threshold", repr(value))
        page.dispatch_event("#threshold", "change")
        page.click("#save-threshold")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('saved into')")
        saved = json.loads((run / "model.json").read_text())["threshold"]
        assert saved["value"] == pytest.approx(value, rel=1e-5)
        assert [c["flagged"] for c in cards(page)].count(True) == 9

        # mark three images with the keys: the top three (flagged) as normal
        page.click("body", position={"x": 5, "y": 5})
        for k in range(3):
            page.keyboard.press("n")
            page.wait_for_function(f"document.querySelectorAll('#grid .badge.normal').length == {k + 1}")
            page.keyboard.press("j")
        marked = [int(i) for i in top[:3]]
        assert marks.read_text().splitlines() == ["Id,label", *[f"{i},0" for i in sorted(marked)]]
        page.keyboard.press("a")  # a fourth, then undone
        page.wait_for_function("document.querySelectorAll('#grid .badge.anomalous').length == 1")
        page.keyboard.press("u")
        page.wait_for_function("document.querySelectorAll('#grid .badge.anomalous').length == 0")
        assert len(marks.read_text().splitlines()) == 4

        # reload: the marks are still there
        page.reload()
        wait_page(page)
        page.wait_for_function("document.querySelectorAll('#grid .badge.normal').length == 3")
        badges = {c["id"]: c["badges"] for c in cards(page)}
        assert all("normal" in badges[i] and "flagged" in badges[i] for i in marked)
        shot(page, "marked", tmp_path)

        # add the images marked normal to the model: their flags go
        assert "add the 3 images" in page.inner_text("#add-normal")
        page.click("#add-normal")
        page.wait_for_selector('body[data-updated="1"]', timeout=60_000)
        message = page.inner_text("#message")
        assert "of the images added, 3 before and 0 after" in message, message
        page.select_option("#filter", "normal")
        page.wait_for_function("document.querySelectorAll('#grid .card').length == 3")
        wait_page(page)
        assert {c["id"] for c in cards(page)} == set(marked)
        assert not any(c["flagged"] for c in cards(page))
        assert "run-updated" in page.inner_text("#about")
        shot(page, "updated", tmp_path)
    assert errors == [] and outside == []
    page.close()


def test_with_a_token_the_page_and_its_pictures_load_and_without_nothing(browser, tmp_path: Path) -> None:
    """Token mode (any host but loopback): the printed address's token becomes a cookie, so the
    detail view's pictures load too; the same address without it gets a 401 JSON body."""
    run = tmp_path / "run"
    oddeye.train(blobs(40, SHAPE, seed=1), "pixel-knn", run, progress=False, val_fraction=0.25)
    np.save(tmp_path / "test.npy", blobs(10, SHAPE, seed=2))
    review = Review(
        run, tmp_path / "test.npy", marks=tmp_path / "m.csv", cache=tmp_path / "c", progress=False
    )
    with running(review, token="t0ken") as url:
        page = browser.new_page()
        response = page.goto(url)
        assert response.status == 401 and "token needed" in page.content()
        page.goto(f"{url}?token=t0ken")
        wait_page(page)
        page.click("#grid .card >> nth=0")
        page.wait_for_selector("#detail[data-loaded]")
        widths = page.evaluate("['d-image', 'd-map'].map(id => document.getElementById(id).naturalWidth)")
        assert widths == [SHAPE[1], SHAPE[1]]
        page.close()
