"""``oddeye bench review``: how fast the review page shows a 20,000-image run, and the server's memory.

Trains the detector on generated images of the homework's shape, then starts ``oddeye review`` on
20,000 others in its own process (a fresh cache: the first start scores them all; a second start
reads the cached scores) and drives the page in headless Chromium (Playwright), timing from the
navigation to every thumbnail of the page decoded:

- the first page, with no thumbnail made yet (a page's thumbnails are made with it, kept on disk);
- ten later pages ("next page"), also cold; then the first page again, from the cache;
- five detail views (the image and its anomaly map, the map computed on that request).

Without Chromium the same requests are made by a plain HTTP client (the record says which).
Memory: the server's RSS (its anonymous part apart from mapped file pages) and its peak, from
/proc, beside the uint8 size of the images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import oddeye
from oddeye.bench.common import generate_images, status_kib
from oddeye.bench.provenance import provenance
from oddeye.errors import OddeyeError
from oddeye.io import write_text
from oddeye.serving.loadtest import ChildServer, free_port, request

LATER_PAGES = 10
DETAILS = 5
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


class ReviewServer(ChildServer):
    """``oddeye review RUN IMAGES`` in a child process on a free loopback port, until closed."""

    def __init__(self, run: Path, images: Path, cache: Path, marks: Path) -> None:
        port = free_port()
        args = ["review", str(run), str(images), "--port", str(port), "--cache", str(cache)]
        super().__init__([*args, "--marks", str(marks), "--quiet"], port, "/api/info", timeout=1800.0)

    def memory(self) -> dict[str, int]:
        """Bytes from /proc: VmRSS, RssAnon (the process's own), RssFile (mapped files), VmHWM (peak)."""
        fields = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
        return {f: (status_kib(f, self.proc.pid) or 0) * 1024 for f in fields}


def run(args: argparse.Namespace) -> int:
    from oddeye.bench.report import write_markdown

    if args.n < 1 or args.train < 10:
        raise OddeyeError("--n: expected a positive number; --train: at least 10")
    folder = Path(args.data_dir)
    shape = (64, 64, 3)
    train = generate_images(folder / f"review-train-{args.train}.npy", args.train, seed=5, shape=shape)
    images = generate_images(folder / f"review-images-{args.n}.npy", args.n, seed=6, shape=shape)
    run_dir = folder / f"review-run-{args.detector}-{args.train}"
    started = time.perf_counter()
    oddeye.train(train, args.detector, run_dir, force=True, progress=False)
    train_s = time.perf_counter() - started
    work = Path(tempfile.mkdtemp(prefix="oddeye-review-bench-", dir=folder))
    try:
        record = measure(run_dir, images, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {
        "benchmark": "review",
        "detector": args.detector,
        "n": args.n,
        "shape": list(shape),
        "train_images": args.train,
        "train_s": round(train_s, 1),
        "data_bytes": args.n * shape[0] * shape[1] * shape[2],
        **record,
        **provenance("cpu"),
    }
    print(format_result(record))
    if not args.no_save:
        name = f"review-{args.detector}-{args.n}.json"
        write_text(Path(args.results_dir) / name, json.dumps(record, indent=2) + "\n")
        write_markdown(Path(args.results_dir), Path(args.markdown))
    return 0


def measure(run_dir: Path, images: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cache, marks = work / "cache", work / "marks.csv"
    first = ReviewServer(run_dir, images, cache, marks)  # scores every image
    first_start, scoring = first.ready_s, first.memory()
    first.close()
    server = ReviewServer(run_dir, images, cache, marks)  # reads the cached scores
    try:
        idle = server.memory()
        info = json.loads(request(server.port, "GET", "/api/info")[1])
        later = min(LATER_PAGES, -(-info["n"] // info["page_size"]) - 1)  # pages after the first
        timings = _browser(server.port, later) if not args.http_only else None
        client = "chromium" if timings is not None else "http"
        if timings is None:
            timings = _http(server.port, later)
        after = server.memory()
    finally:
        server.close()
    return {
        "start_scoring_s": round(first_start, 1),
        "start_cached_s": round(server.ready_s, 1),
        "client": client,
        **timings,
        "memory_bytes": {"scoring": scoring, "idle": idle, "after": after},
    }


def _browser(port: int, pages: int) -> dict[str, Any] | None:
    """Page timings in headless Chromium, as the page itself measures them (performance.now():
    from the navigation, or from the page's request after a click, to its last thumbnail
    decoded), with Playwright's own wall clock beside them; None where Playwright or Chromium is
    missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return None
    url = f"http://127.0.0.1:{port}/"
    viewport = {"width": 1400, "height": 1000}

    def shown(page: Any, k: int, since: str) -> float:
        page.wait_for_selector(f'#grid[data-loaded="{k}"]', timeout=60_000)
        return float(page.get_attribute("#grid", since)) / 1000

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport=viewport)
        start = time.perf_counter()
        page.goto(url)
        first = shown(page, 0, "data-since-start")
        wall = [time.perf_counter() - start]
        cards = page.locator("#grid .card").count()
        later = []
        for k in range(1, pages + 1):
            start = time.perf_counter()
            page.click("#next")
            later.append(shown(page, k, "data-ms"))
            wall.append(time.perf_counter() - start)
        fresh = browser.new_page(viewport=viewport)  # no browser cache: thumbnails from the disk cache
        fresh.goto(url)
        warm = shown(fresh, 0, "data-since-start")
        fresh.close()
        details = []
        for k in range(DETAILS):
            start = time.perf_counter()
            page.click(f"#grid .card >> nth={k}")
            page.wait_for_selector("#detail[data-loaded]", timeout=60_000)
            details.append(time.perf_counter() - start)
            page.keyboard.press("Escape")
        browser.close()
    return {**_timings(first, later, warm, details, cards), "playwright_wall_s": [round(t, 3) for t in wall]}


def _http(port: int, pages: int) -> dict[str, Any]:
    """The page's requests, as the page makes them: the page and its API calls, then each page's
    listing with its thumbnails inline (the browser's decoding is not timed)."""

    def get(path: str) -> bytes:
        status, body = request(port, "GET", path)
        if status != 200:
            raise OddeyeError(f"GET {path}: {status} {body[:200]!r}")
        return body

    def show(page: int) -> tuple[float, int]:
        start = time.perf_counter()
        if page == 0:
            for path in ("/", "/static/review.js", "/static/review.css", "/api/info", "/api/scores"):
                get(path)
        items = json.loads(get(f"/api/page?page={page}&thumbs=true"))["items"]  # as the page asks
        return time.perf_counter() - start, len(items)

    first, cards = show(0)
    later = [show(k)[0] for k in range(1, pages + 1)]
    warm = show(0)[0]
    ids = [it["id"] for it in json.loads(get("/api/page?page=0"))["items"][:DETAILS]]
    details = []
    for i in ids:
        start = time.perf_counter()
        get(f"/api/images/{i}")
        get(f"/images/{i}/full")
        get(f"/images/{i}/map")
        details.append(time.perf_counter() - start)
    return _timings(first, later, warm, details, cards)


def _timings(first: float, later: list[float], warm: float, details: list[float], cards: int) -> dict:
    return {
        "page_images": cards,
        "first_page_s": round(first, 3),
        "later_pages_s": [round(t, 3) for t in later],
        "later_page_max_s": round(max(later, default=0.0), 3),
        "first_page_cached_s": round(warm, 3),
        "detail_s": [round(t, 3) for t in details],
    }


def format_result(r: dict[str, Any]) -> str:
    mib = {k: {f: v / 2**20 for f, v in m.items()} for k, m in r["memory_bytes"].items()}
    after = mib["after"]
    return "\n".join(
        [
            f"oddeye review: {r['n']:,} images of {'x'.join(map(str, r['shape']))} scored by "
            f"{r['detector']} ({r['client']}; {r['page_images']} thumbnails a page)",
            f"  start: {r['start_scoring_s']:.1f} s scoring every image, {r['start_cached_s']:.1f} s "
            "from the cached scores",
            f"  first page {r['first_page_s']:.2f} s (thumbnails made), {r['first_page_cached_s']:.2f} s "
            f"(cached); later pages at most {r['later_page_max_s']:.2f} s "
            f"({', '.join(f'{t:.2f}' for t in r['later_pages_s'])})",
            f"  detail view (image + its map made): {', '.join(f'{t:.2f}' for t in r['detail_s'])} s",
            f"  server memory: RSS {after['VmRSS']:.0f} MiB (own {after['RssAnon']:.0f}, mapped files "
            f"{after['RssFile']:.0f}), peak {after['VmHWM']:.0f} MiB; the first start's peak (scoring) "
            f"{mib['scoring']['VmHWM']:.0f} MiB; the images are {r['data_bytes'] / 2**20:.0f} MiB of uint8",
        ]
    )
