"""``oddeye review`` without a browser: the session, the marks file, the HTTP API and its guards,
the cache, folders and MVTec AD categories, the CLI, and a ``kill -9`` that loses no mark."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oddeye
from helpers import FAST, blobs, make_mvtec
from oddeye.errors import OddeyeError

pytest.importorskip("fastapi", reason="the review page needs the serve extra")
from fastapi.testclient import TestClient  # noqa: E402

from oddeye.review.app import MAX_BODY, create_app, is_loopback  # noqa: E402
from oddeye.review.marks import MarksFile, read_marks  # noqa: E402
from oddeye.review.session import Review  # noqa: E402
from review_helpers import free_port  # noqa: E402

SHAPE = (12, 12, 3)
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("review") / "run"
    oddeye.train(blobs(60, SHAPE, seed=1), "pixel-knn", run, progress=False, val_fraction=0.25)
    return run


@pytest.fixture
def test_set(tmp_path: Path) -> tuple[Path, Path]:
    images = np.concatenate([blobs(30, SHAPE, seed=2), blobs(10, SHAPE, seed=3, anomalous=True)])
    np.save(tmp_path / "test.npy", images)
    np.save(tmp_path / "labels.npy", np.r_[np.zeros(30, np.int64), np.ones(10, np.int64)])
    return tmp_path / "test.npy", tmp_path / "labels.npy"


def session(run: Path, images: Path | str, tmp_path: Path, **options) -> Review:
    options = {"marks": tmp_path / "marks.csv", "cache": tmp_path / "cache", "progress": False, **options}
    return Review(run, images, **options)


def client(review: Review, base: str = LOCAL, token: str | None = None) -> TestClient:
    return TestClient(create_app(review, token), base_url=base)


# -- the marks file ------------------------------------------------------------------------------
def test_marks_are_written_at_once_in_id_order_and_resumed(tmp_path: Path) -> None:
    path = tmp_path / "marks.csv"
    marks = MarksFile(path, 10)
    marks.set(7, 1)
    assert path.read_text() == "Id,label\n7,1\n"
    marks.set(2, 0)
    marks.set(7, 0)
    assert path.read_text() == "Id,label\n2,0\n7,0\n"
    assert marks.undo() == (7, 1) and path.read_text() == "Id,label\n2,0\n7,1\n"
    assert marks.undo() == (2, None) and path.read_text() == "Id,label\n7,1\n"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    again = MarksFile(path, 10)
    assert again.labels == {7: 1} and again.resumed == 1 and again.undo() is None


def test_marks_of_a_folder_name_their_files_and_are_checked_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "marks.csv"
    MarksFile(path, 3, ["a.png", "b.png", "c.png"]).set(1, 1)
    assert path.read_text() == "Id,path,label\n1,b.png,1\n"
    assert read_marks(path, 3, ["a.png", "b.png", "c.png"]) == {1: 1}
    with pytest.raises(OddeyeError, match=r"marks.csv: expected image 1 to be 'x.png'.*found 'b.png'"):
        read_marks(path, 3, ["a.png", "x.png", "c.png"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Id,score\n1,0\n", "the header Id,label or Id,path,label"),
        ("Id,label\n12,0\n", r"an image id in 0..9 on line 2, found '12'"),
        ("Id,label\n-1,0\n", "an image id in 0..9"),
        ("Id,label\n3,maybe\n", "a label 0, 1, normal or anomalous on line 2"),
        ("Id,label\n3\n", "2 cells on line 2"),
    ],
)
def test_bad_marks_files_get_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "marks.csv"
    path.write_text(text)
    with pytest.raises(OddeyeError, match=message) as e:
        read_marks(path, 10)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_words_are_read_as_labels(tmp_path: Path) -> None:
    path = tmp_path / "marks.csv"
    path.write_text("Id,label\n1,normal\n2,Anomalous\n")
    assert read_marks(path, 5) == {1: 0, 2: 1}


# -- pages, pictures and marks through the API ---------------------------------------------------
def test_pages_list_every_image_once_in_the_order_asked(knn_run: Path, test_set, tmp_path: Path) -> None:
    images, labels = test_set
    review = session(knn_run, images, tmp_path, labels=labels, page_size=7)
    c = client(review)
    scores = oddeye.load(knn_run, progress=False).score(images)
    np.testing.assert_allclose(review.current.scores, scores)
    info = c.get("/api/info").json()
    assert (
        info["n"] == 40 and info["labels"] and info["calibrated"] and info["threshold"]["rule"] == "fpr:0.01"
    )
    for sort, expected in [
        ("score", np.argsort(-scores, kind="stable")),
        ("score-asc", np.argsort(scores, kind="stable")),
        ("id", np.arange(40)),
    ]:
        pages = [c.get("/api/page", params={"sort": sort, "page": p}).json() for p in range(6)]
        assert {p["pages"] for p in pages} == {6} and {p["total"] for p in pages} == {40}
        assert [it["id"] for p in pages for it in p["items"]] == expected.tolist()
    first = c.get("/api/page").json()["items"][0]
    assert first["rank"] == 1 and first["label"] == 1 and 0 <= first["calibrated"] <= 1
    assert c.get("/api/page", params={"page": 99}).json()["page"] == 5  # past the end: the last page
    body = c.get("/api/scores").json()
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-6)
    assert body["labels"] == [0] * 30 + [1] * 10


def test_filters_follow_the_threshold_given_and_the_marks(knn_run: Path, test_set, tmp_path: Path) -> None:
    images, _ = test_set
    review = session(knn_run, images, tmp_path, page_size=100)
    c = client(review)
    scores = review.current.scores
    saved = review.current.threshold.value

    def ids(**params) -> set[int]:
        return {it["id"] for it in c.get("/api/page", params=params).json()["items"]}

    assert ids(filter="flagged") == set(np.flatnonzero(scores > saved).tolist())
    t = float(np.median(scores))
    assert ids(filter="flagged", threshold=t) == set(np.flatnonzero(scores > t).tolist())
    assert ids(filter="unflagged", threshold=t) == set(np.flatnonzero(scores <= t).tolist())
    c.post("/api/marks", json={"id": 4, "label": "normal"})
    c.post("/api/marks", json={"id": 9, "label": "anomalous"})
    assert ids(filter="marked") == {4, 9} and ids(filter="normal") == {4} and ids(filter="anomalous") == {9}
    assert ids(filter="unmarked") == set(range(40)) - {4, 9}
    assert c.get("/api/marks").json()["marks"] == {"4": 0, "9": 1}


def test_a_listing_stays_the_same_while_its_images_are_marked(
    knn_run: Path, test_set, tmp_path: Path
) -> None:
    """Pages of "not marked" images, marked page by page, still show every image once: the listing
    is frozen when it is made (its view), not recomputed as the marks change it."""
    review = session(knn_run, test_set[0], tmp_path, page_size=10)
    c = client(review)
    seen: list[int] = []
    first = c.get("/api/page", params={"filter": "unmarked"}).json()
    view, pages = first["view"], first["pages"]
    for page in range(pages):
        body = c.get("/api/page", params={"filter": "unmarked", "page": page, "view": view}).json()
        assert body["view"] == view and body["total"] == 40
        for it in body["items"]:
            c.post("/api/marks", json={"id": it["id"], "label": "normal"})
            seen.append(it["id"])
    assert sorted(seen) == list(range(40))  # none skipped, none twice
    fresh = c.get("/api/page", params={"filter": "unmarked"}).json()  # a new listing: the marks count now
    assert fresh["total"] == 0 and fresh["view"] != view
    gone = c.get("/api/page", params={"view": 10**6}).json()  # an unknown view: made again
    assert gone["total"] == 40


def test_marks_and_listings_do_not_race(knn_run: Path, test_set, tmp_path: Path, monkeypatch) -> None:
    """Requests read the marks while other requests mark: a snapshot each time, never a dict that
    changes under them (the disk write is stubbed out to make the race likely)."""
    from concurrent.futures import ThreadPoolExecutor

    review = session(knn_run, test_set[0], tmp_path)
    monkeypatch.setattr(MarksFile, "_write", lambda self: None)

    def marking(k: int) -> None:
        review.mark(k % 40, k % 2)
        review.mark(k % 40, None)

    def reading(_: int) -> None:
        review.page(filt="normal")
        review.scores_json()
        review.pending()

    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(marking if k % 2 else reading, k) for k in range(4000)]
        for job in jobs:
            job.result()


@pytest.mark.parametrize("kind", ["float in [0, 1]", "gray (N, H, W)", "NCHW"], ids=["float", "gray", "nchw"])
def test_other_arrays_show_and_update(kind: str, tmp_path: Path) -> None:
    train, test = blobs(40, SHAPE, seed=1), blobs(12, SHAPE, seed=2)
    if kind.startswith("float"):
        train, test = train / 255.0, test / 255.0
    elif kind.startswith("gray"):
        train, test = train[..., 0], test[..., 0]
    else:
        train, test = train.transpose(0, 3, 1, 2).copy(), test.transpose(0, 3, 1, 2).copy()
    run = tmp_path / "run"
    oddeye.train(train, "pixel-knn", run, progress=False, val_fraction=0.25)
    np.save(tmp_path / "test.npy", test)
    c = client(session(run, tmp_path / "test.npy", tmp_path))
    channels = 1 if kind.startswith("gray") else 3
    thumb = Image.open(io.BytesIO(c.get("/images/0/thumb").content))
    assert thumb.size == SHAPE[:2] and len(thumb.getbands()) == channels
    full = np.asarray(Image.open(io.BytesIO(c.get("/images/0/full").content)))
    shown = test[0] if not kind == "NCHW" else test[0].transpose(1, 2, 0)
    expected = np.round(np.asarray(shown, float) * (255 if kind.startswith("float") else 1))
    np.testing.assert_allclose(full.reshape(expected.shape), expected, atol=1)
    assert c.get("/api/images/0").json()["map"]
    c.post("/api/marks", json={"id": 0, "label": "normal"})
    c.post("/api/update", json={})
    assert wait_job(c)["state"] == "done"


def test_a_run_without_held_out_images_or_threshold(test_set, tmp_path: Path) -> None:
    """No held-out scores: no calibrated scale and no threshold; the page still lists, and the
    update says there were no flags to compare."""
    run = tmp_path / "run"
    oddeye.train(blobs(40, SHAPE, seed=1), "pixel-knn", run, progress=False, val_fraction=0.25)
    for name in ("heldout_scores.npy", "heldout_sample.npy"):  # as a run written before held-out scores
        (run / name).unlink()
    meta = json.loads((run / "model.json").read_text())
    meta["threshold"] = None
    (run / "model.json").write_text(json.dumps(meta))
    c = client(session(run, test_set[0], tmp_path))
    info = c.get("/api/info").json()
    assert info["threshold"] is None and not info["calibrated"]
    items = c.get("/api/page", params={"filter": "flagged"}).json()
    assert items["total"] == 0  # no threshold: nothing flagged
    assert c.get("/api/page").json()["items"][0]["calibrated"] is None
    c.post("/api/marks", json={"id": 5, "label": "normal"})
    c.post("/api/update", json={})
    job = wait_job(c)
    assert job["state"] == "done" and "No flags to compare: the old run had no threshold" in job["message"]


def test_the_threshold_is_not_saved_while_an_update_runs(
    knn_run: Path, test_set, tmp_path: Path, monkeypatch
) -> None:
    """A threshold saved during an update would go into the run being replaced: refused (409)."""
    import threading

    from oddeye.review import session as session_module

    run = tmp_path / "run"
    shutil.copytree(knn_run, run)
    gate = threading.Event()
    real_update = session_module.update

    def slow_update(*args, **kwargs):
        gate.wait(30)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(session_module, "update", slow_update)
    c = client(session(run, test_set[0], tmp_path))
    c.post("/api/marks", json={"id": 1, "label": "normal"})
    assert c.post("/api/update", json={}).status_code == 202
    before = (run / "model.json").read_text()
    r = c.post("/api/threshold", json={"value": 0.5})
    assert r.status_code == 409 and "an update is running" in r.json()["error"]
    assert c.post("/api/update", json={}).status_code == 409  # one at a time
    gate.set()
    assert wait_job(c)["state"] == "done"
    assert (run / "model.json").read_text() == before
    assert c.post("/api/threshold", json={"value": 0.5}).json()["run"] == str(tmp_path / "run-updated")


def test_pictures_are_made_when_asked_and_kept_on_disk(knn_run: Path, test_set, tmp_path: Path) -> None:
    images, _ = test_set
    review = session(knn_run, images, tmp_path)
    c = client(review)
    thumbs = review.image_cache / "thumbs"
    assert not thumbs.exists()  # nothing made before it is asked for
    r = c.get("/images/5/thumb")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert sorted(p.name for p in thumbs.iterdir()) == ["5.jpg"]
    full = c.get("/images/5/full")
    pixels = np.asarray(Image.open(io.BytesIO(full.content)))
    np.testing.assert_array_equal(pixels, np.load(images)[5])  # the image itself, lossless
    d = c.get("/api/images/5").json()
    assert d["map"] and not d["recon"] and not d["mask"]
    heat = Image.open(io.BytesIO(c.get("/images/5/map").content))
    assert heat.mode == "RGBA" and heat.size == SHAPE[:2]
    assert c.get("/images/5/recon").status_code == 404 and c.get("/images/5/mask").status_code == 404
    assert (review.current.cache / "maps" / "5.png").exists()
    listed = c.get("/api/page", params={"sort": "id", "thumbs": "true"}).json()["items"]
    assert (
        listed[5]["thumb"]
        == "data:image/jpeg;base64," + base64.b64encode((thumbs / "5.jpg").read_bytes()).decode()
    )
    assert len(list(thumbs.iterdir())) == 40  # one request made the page's thumbnails, kept on disk
    assert "thumb" not in c.get("/api/page").json()["items"][0]


def test_a_restart_reads_the_cached_scores(knn_run: Path, test_set, tmp_path: Path, monkeypatch) -> None:
    images, _ = test_set
    first = session(knn_run, images, tmp_path)
    kept = first.current.cache / "scores.npy"
    assert kept.exists()

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(Review, "_score", no_scoring)
    again = session(knn_run, images, tmp_path)
    np.testing.assert_array_equal(again.current.scores, first.current.scores)
    np.save(images, np.load(images)[::-1].copy())  # other images under the same name: scored anew
    with pytest.raises(AssertionError, match="scored again"):
        session(knn_run, images, tmp_path)


def test_marks_undo_and_threshold_through_the_api(knn_run: Path, test_set, tmp_path: Path) -> None:
    images, _ = test_set
    run = tmp_path / "run"
    shutil.copytree(knn_run, run)
    review = session(run, images, tmp_path)
    c = client(review)
    assert c.post("/api/marks", json={"id": 3, "label": "anomalous"}).json()["marks"] == 1
    assert c.post("/api/marks", json={"id": 3, "label": None}).json() == {
        "id": 3, "mark": None, "marks": 0, "to_add": 0,
    }  # fmt: skip
    assert c.post("/api/undo", json={}).json()["mark"] == 1
    assert (tmp_path / "marks.csv").read_text() == "Id,label\n3,1\n"
    c.post("/api/undo", json={})
    assert c.post("/api/undo", json={}).status_code == 409
    value = float(np.sort(review.current.scores)[-5])
    saved = c.post("/api/threshold", json={"value": value}).json()["threshold"]
    assert saved["value"] == value and not saved["uses_labels"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["threshold"]["value"] == value  # as `oddeye score --threshold VALUE` saves it
    assert oddeye.load(run, progress=False).predict(images).sum() == 4
    assert c.get("/api/info").json()["threshold"]["value"] == value


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("get", "/api/images/40", None, 404, "no such image"),
        ("get", "/images/-1/thumb", None, 404, "no such image"),
        ("get", "/images/abc/thumb", None, 422, "invalid request"),
        ("get", "/api/page?sort=path", None, 422, "unknown sort"),
        ("get", "/api/page?filter=../x", None, 422, "unknown filter"),
        ("get", "/static/../session.py", None, 404, "Not Found"),
        ("get", "/static/index.html", None, 404, "no such file"),
        ("post", "/api/marks", {"id": 1, "label": "odd"}, 422, "invalid request"),
        ("post", "/api/marks", {"id": 1}, 422, "invalid request"),
        ("post", "/api/marks", {"path": "/etc/passwd", "label": "normal"}, 422, "invalid request"),
        ("post", "/api/threshold", {"value": "high"}, 422, "invalid request"),
        ("post", "/api/update", {}, 409, "no images are marked normal"),
        ("get", "/nothing", None, 404, "Not Found"),
    ],
)
def test_bad_requests_get_a_4xx_json_body(
    knn_run: Path, test_set, tmp_path: Path, method: str, path: str, body, status: int, error: str
) -> None:
    c = client(session(knn_run, test_set[0], tmp_path))
    r = c.request(method.upper(), path, json=body) if body is not None else getattr(c, method)(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and error in r.json()["error"]
    assert "Traceback" not in r.text


def test_guards_host_token_json_and_size(knn_run: Path, test_set, tmp_path: Path) -> None:
    review = session(knn_run, test_set[0], tmp_path)
    assert client(review, "http://localhost:8765").get("/api/info").status_code == 200
    assert client(review, "http://[::1]:8765").get("/api/info").status_code == 200
    rebound = client(review, "http://attacker.example:8765").get("/images/1/thumb")
    assert rebound.status_code == 421 and rebound.json()["error"] == "wrong host"
    c = client(review)
    form = c.post("/api/marks", content=b"id=1&label=normal", headers={"content-type": "text/plain"})
    assert form.status_code == 415 and not review.marks.labels  # no cross-site form gets through
    big = c.post(
        "/api/marks", content=b"{" + b" " * MAX_BODY + b"}", headers={"content-type": "application/json"}
    )
    assert big.status_code == 413
    posted = client(review, "http://attacker.example:8765").post(
        "/api/marks", json={"id": 1, "label": "normal"}
    )
    assert posted.status_code == 421 and not review.marks.labels
    cross = c.get("/images/1/map", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
    assert cross.status_code == 403 and cross.json()["error"] == "cross-site request"
    link = c.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert link.status_code == 200  # following a link to the page is allowed; its requests are same-origin
    t = client(review, "http://10.1.2.3:8765", token="s3cret")
    for path in ("/", "/api/info", "/images/0/thumb", "/static/review.js"):
        r = t.get(path)
        assert r.status_code == 401 and r.json()["error"] == "token needed", path
    assert t.get("/api/info", headers={"X-Oddeye-Token": "wrong"}).status_code == 401
    assert t.get("/api/info", headers={"X-Oddeye-Token": "s3cret"}).status_code == 200
    blind = t.post("/api/marks", json={"id": 1, "label": "normal"})
    assert blind.status_code == 401 and not review.marks.labels
    page = t.get("/?token=s3cret")
    assert page.status_code == 200 and "oddeye review" in page.text
    assert t.get("/images/0/thumb").status_code == 200  # the cookie the page set carries the token
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_the_page_fetches_nothing_from_elsewhere(knn_run: Path, test_set, tmp_path: Path) -> None:
    c = client(session(knn_run, test_set[0], tmp_path))
    html = c.get("/").text
    script = c.get("/static/review.js").text
    style = c.get("/static/review.css").text
    for text in (html, script, style):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


# -- adding the images marked normal -------------------------------------------------------------
def wait_job(c: TestClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := c.get("/api/job").json())["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_adding_the_images_marked_normal_clears_their_flags(knn_run: Path, test_set, tmp_path: Path) -> None:
    """The flagged images (off-centre blobs, alike) marked normal join the model, and with them
    in the banks none is flagged any more; the run itself is unchanged."""
    images, _ = test_set
    run = tmp_path / "run"
    shutil.copytree(knn_run, run)
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    review = session(run, images, tmp_path)
    c = client(review)
    flagged = [it["id"] for it in c.get("/api/page", params={"filter": "flagged"}).json()["items"]]
    assert len(flagged) >= 8
    for i in flagged:
        c.post("/api/marks", json={"id": i, "label": "normal"})
    c.post("/api/marks", json={"id": 0, "label": "anomalous"})  # not added
    assert c.get("/api/info").json()["to_add"] == len(flagged)
    assert c.post("/api/update", json={}).status_code == 202
    job = wait_job(c)
    assert job["state"] == "done", job
    r = job["result"]
    assert (r["added"], r["added_flagged_before"], r["added_flagged_after"]) == (
        len(flagged),
        len(flagged),
        0,
    )
    assert r["run"] == str(tmp_path / "run-updated")
    assert f"of the images added, {len(flagged)} before and 0 after" in job["message"]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # the run itself is unchanged
    info = c.get("/api/info").json()
    assert info["run"] == r["run"] and info["to_add"] == 0 and info["added"] == len(flagged)
    after = oddeye.load(r["run"], progress=False)
    np.testing.assert_allclose(review.current.scores, after.score(images))
    assert after.predict(np.load(images)[flagged]).sum() == 0
    items = c.get("/api/page", params={"filter": "normal"}).json()["items"]
    assert {it["id"] for it in items} == set(flagged) and all(it["added"] for it in items)
    assert c.post("/api/update", json={}).status_code == 409  # nothing new to add
    c.post("/api/marks", json={"id": 1, "label": "normal"})
    c.post("/api/update", json={})
    assert wait_job(c)["result"]["run"] == str(tmp_path / "run-updated-2")  # the next one: its own folder


def test_a_detector_that_trains_is_refused_in_one_line(test_set, tmp_path: Path) -> None:
    run = tmp_path / "cnn"
    oddeye.train(blobs(40, SHAPE, seed=1), "cnn", run, **FAST)
    c = client(session(run, test_set[0], tmp_path))
    c.post("/api/marks", json={"id": 2, "label": "normal"})
    r = c.post("/api/update", json={})
    assert r.status_code == 409 and "train" in r.json()["error"] and "\n" not in r.json()["error"]
    d = c.get("/api/images/2").json()
    assert d["map"] and d["recon"]  # a reconstructing detector: its reconstruction is shown
    assert Image.open(io.BytesIO(c.get("/images/2/recon").content)).size == SHAPE[:2]


# -- folders and MVTec AD categories -------------------------------------------------------------
def test_an_mvtec_category_shows_paths_labels_and_true_regions(tmp_path: Path) -> None:
    category = make_mvtec(tmp_path, size=16)
    run = tmp_path / "run"
    oddeye.train(category, "pixel-knn", run, progress=False, val_fraction=0.25)
    review = session(run, category, tmp_path)
    c = client(review)
    info = c.get("/api/info").json()
    assert info["folder"] and info["labels"] and info["masks"] and info["n"] == 9
    items = c.get("/api/page", params={"sort": "id"}).json()["items"]
    assert [it["path"] for it in items][:2] == ["good/000.png", "good/001.png"]
    scratch = next(it for it in items if it["path"] == "scratch/000.png")
    assert scratch["label"] == 1 and scratch["defect"] == "scratch"
    assert c.get(f"/api/images/{scratch['id']}").json()["mask"]
    mask = np.asarray(Image.open(io.BytesIO(c.get(f"/images/{scratch['id']}/mask").content)))
    truth = np.asarray(Image.open(category / "ground_truth" / "scratch" / "000_mask.png")) > 0
    np.testing.assert_array_equal(mask[..., 3] > 0, truth)
    full = c.get(f"/images/{scratch['id']}/full")
    assert full.content == (category / "test" / "scratch" / "000.png").read_bytes()  # the file itself
    c.post("/api/marks", json={"id": scratch["id"], "label": "anomalous"})
    assert (tmp_path / "marks.csv").read_text() == f"Id,path,label\n{scratch['id']},scratch/000.png,1\n"
    with pytest.raises(OddeyeError, match="expected an MVTec AD category alone"):
        session(run, category, tmp_path / "x", labels=tmp_path / "labels.npy")


# -- the command line ----------------------------------------------------------------------------
def test_the_cli_refuses_a_port_in_use_and_bad_marks_before_serving(
    cli, knn_run: Path, test_set, tmp_path: Path
) -> None:
    import socket

    images, _ = test_set
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("review", str(knn_run), str(images), "--port", str(port), "--quiet")
    assert r.code == 2 and "expected an address to listen on, found in use" in r.err
    assert len(r.err.splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("Id,label\n400,1\n")
    r = cli("review", str(knn_run), str(images), "--marks", str(bad), "--port", str(free_port()))
    assert r.code == 2 and r.err.startswith(f"oddeye: error: {bad}: expected an image id in 0..39")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "ODDEYE_PROGRESS": "off"}
    cmd = [sys.executable, "-m", "oddeye", "review", *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _ready(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"not ready: {log.read_text()}")


def _post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_no_mark_is_lost_across_kill_9(knn_run: Path, test_set, tmp_path: Path) -> None:
    images, _ = test_set
    marks, port = tmp_path / "marks.csv", free_port()
    args = [str(knn_run), str(images), "--marks", str(marks), "--cache", str(tmp_path / "cache")]
    log = tmp_path / "server.log"
    proc = _start([*args, "--port", str(port)], log)
    try:
        _ready(port, proc, log)
        assert "open http://127.0.0.1:" in log.read_text()
        answered = {}
        for i, label in [(3, "normal"), (17, "anomalous"), (25, "normal"), (3, "anomalous"), (8, "normal")]:
            _post(port, "/api/marks", {"id": i, "label": label})
            answered[i] = 0 if label == "normal" else 1
        proc.send_signal(signal.SIGKILL)  # no shutdown, no flush: what was answered must be on disk
        proc.wait(30)
    finally:
        proc.kill()
    assert read_marks(marks, 40) == answered
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".marks")] == []
    port = free_port()
    again = _start([*args, "--port", str(port)], log)
    try:
        _ready(port, again, log)
        assert f"resumed {len(answered)} marks from {marks}" in log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/marks", timeout=30) as r:
            assert json.loads(r.read())["marks"] == {str(k): v for k, v in sorted(answered.items())}
    finally:
        again.terminate()
        again.wait(30)
