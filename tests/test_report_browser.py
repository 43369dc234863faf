"""The report in a real browser: headless Chromium (Debian's ``chromium``, which ``.ci/run`` installs
where apt is available; the ``browser`` fixture is in conftest) opens it offline, every image loads,
nothing goes to the network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import oddeye
from helpers import FAST, blobs


def test_report_opens_offline_with_every_image_loaded(browser, tmp_path: Path) -> None:
    det = oddeye.create("cnn", **FAST).fit(blobs(60))
    images = np.concatenate([blobs(30, seed=2), blobs(30, seed=3, anomalous=True)])
    labels = np.r_[np.zeros(30, np.int64), np.ones(30, np.int64)]
    files = oddeye.report(det, images, tmp_path / "report.html", labels=labels, progress=False)

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    def block_network(route) -> None:
        url = route.request.url
        route.continue_() if url.startswith(("file:", "data:")) else route.abort()

    page.route("**/*", block_network)
    page.goto(files.html.resolve().as_uri(), wait_until="load")
    states = page.evaluate(
        "Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth}))"
    )
    assert len(states) == len(files.figures) == 7
    assert all(s["complete"] and s["width"] > 0 for s in states), states
    network = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert network == [], f"the report requested {network}"
    shot = Path(os.environ.get("ODDEYE_TEST_ARTIFACTS", tmp_path)) / "report-screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
    page.close()


def test_the_network_check_catches_a_page_that_fetches(browser, tmp_path: Path) -> None:
    """The control: the same check on a page with a remote image sees the request and a broken image."""
    page_file = tmp_path / "remote.html"
    page_file.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.route(
        "**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort()
    )
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    assert "http://example.invalid/x.png" in requests
    assert page.evaluate("document.images[0].naturalWidth") == 0
    page.close()
