"""The review page's server: FastAPI over a :class:`~oddeye.review.session.Review`.

The page (``/``, with its script and style under ``/static``) is packaged with oddeye: nothing
comes from a CDN or the network. Requests name images by id only (``/images/ID/thumb``, ``full``,
``map``, ``recon``, ``mask``; ``/api/images/ID``), never by path. The JSON API:

- ``GET /api/info``, ``/api/scores`` (every score, labels and marks), ``/api/page?sort=&filter=&page=``;
- ``POST /api/marks`` ``{"id": 3, "label": "normal" | "anomalous" | null}`` (written to the marks
  file before the answer), ``POST /api/undo``, ``GET /api/marks``;
- ``POST /api/threshold`` ``{"value": 12.5}`` (saved into the run), ``POST /api/update`` (adds the
  images marked normal, in the background) and ``GET /api/job`` (its progress and outcome).

Security: on a loopback address only requests naming a loopback host are answered (no DNS
rebinding); on any other address every request needs the token (``?token=``, the cookie the page
gets with it, or an ``X-Oddeye-Token`` header). A POST must be JSON (no cross-site form can send
one) and at most ``MAX_BODY`` bytes. Bad requests get a 4xx JSON body, never a traceback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from oddeye._version import __version__
from oddeye.errors import OddeyeError
from oddeye.review.session import FILTERS, SORTS, Busy, Review
from oddeye.serving.app import BadRequest, BodyLimit, json_errors

MAX_BODY = 64 * 1024
COOKIE = "oddeye_review_token"
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
LOOPBACK_NAMES = ("localhost",)
CACHED = {"Cache-Control": "private, max-age=3600"}


class MarkBody(BaseModel):
    id: int
    label: Literal["normal", "anomalous"] | None


class ThresholdBody(BaseModel):
    value: float


LABELS = {"normal": 0, "anomalous": 1, None: None}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost."""
    name = host.strip("[]")
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: the host check on loopback, the token elsewhere, JSON-only POSTs."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.token = app, token
        self.cookie = cookie_name(token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await refusal.response()(scope, receive, send)
        await self.app(scope, receive, send)

    def _refusal(self, scope: dict[str, Any], headers: dict[str, str]) -> BadRequest | None:
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.token is None and not is_loopback(name):
            return BadRequest(421, "wrong host", "a loopback host (127.0.0.1 or localhost)", repr(host))
        fetch_site, fetch_mode = headers.get("sec-fetch-site", ""), headers.get("sec-fetch-mode", "")
        if fetch_site == "cross-site" and not (fetch_mode == "navigate" and scope["path"] == "/"):
            # another web site's page asking (an <img>, a fetch): only opening the page is allowed
            return BadRequest(403, "cross-site request", "requests from the review page itself", "cross-site")
        if self.token is not None and not self._has_token(scope, headers):
            return BadRequest(
                401, "token needed", "the token oddeye review printed (?token=...)", "none or another"
            )
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return BadRequest(415, "not JSON", "Content-Type: application/json", repr(kind))
        return None

    def _has_token(self, scope: dict[str, Any], headers: dict[str, str]) -> bool:
        assert self.token is not None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            pass
        given = [
            *query.get("token", []),
            headers.get("x-oddeye-token", ""),
            cookie[self.cookie].value if self.cookie in cookie else "",
        ]
        return any(g and secrets.compare_digest(g.encode(), self.token.encode()) for g in given)


def cookie_name(token: str | None) -> str:
    """The token's cookie, named after the token (two servers on one host keep their own)."""
    return f"{COOKIE}_{hashlib.sha256((token or '').encode()).hexdigest()[:12]}"


def create_app(review: Review, token: str | None = None) -> Any:
    """The review app (an ASGI application); ``token``: required on every request when given."""
    app = FastAPI(title="oddeye review", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    json_errors(app)

    @app.exception_handler(OddeyeError)
    async def oddeye_error(_: Request, e: OddeyeError) -> JSONResponse:
        status = 409 if isinstance(e, Busy) else 422
        return BadRequest(status, str(e)).response()

    page = resources.files("oddeye.review").joinpath("static/index.html").read_text()
    static = {
        name: resources.files("oddeye.review").joinpath(f"static/{name}").read_bytes() for name in STATIC
    }

    def image_id(i: int) -> int:
        if not 0 <= i < review.n:
            raise BadRequest(404, "no such image", f"an id in 0..{review.n - 1}", str(i))
        return i

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> HTMLResponse:
        response = HTMLResponse(page, headers={"Cache-Control": "no-store"})
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(cookie_name(token), token, httponly=True, samesite="strict")
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in STATIC:
            raise BadRequest(404, "no such file", ", ".join(STATIC), repr(name))
        return Response(static[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return review.info()

    @app.get("/api/scores")
    def scores() -> dict[str, Any]:
        return review.scores_json()

    @app.get("/api/page")
    def listing(
        sort: str = Query("score"),
        filter: str = Query("all"),  # noqa: A002 - the page's word for it
        page: int = Query(0, ge=0, le=10**9),
        threshold: float | None = Query(None),
        thumbs: bool = Query(False),
        view: int | None = Query(None, ge=0, le=2**62),
    ) -> dict[str, Any]:
        if sort not in SORTS:
            raise BadRequest(422, "unknown sort", ", ".join(SORTS), repr(sort))
        if filter not in FILTERS:
            raise BadRequest(422, "unknown filter", ", ".join(FILTERS), repr(filter))
        return review.page(sort, filter, page, threshold, thumbs, view)

    @app.get("/api/images/{i}")
    def detail(i: int) -> dict[str, Any]:
        return review.detail(image_id(i))

    @app.get("/api/marks")
    def marks() -> dict[str, Any]:
        return {
            "marks": {str(i): v for i, v in sorted(review.marks.labels.items())},
            "file": str(review.marks.path),
        }

    @app.post("/api/marks")
    def mark(body: MarkBody) -> dict[str, Any]:
        return review.mark(image_id(body.id), LABELS[body.label])

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        done = review.undo()
        if done is None:
            raise BadRequest(409, "nothing to undo", "a mark given since the server started", "none")
        return done

    @app.post("/api/threshold")
    def threshold(body: ThresholdBody) -> dict[str, Any]:
        chosen = review.save_threshold(body.value)
        return {
            "threshold": {**chosen.to_dict(), "describe": chosen.describe()},
            "run": str(review.current.run),
        }

    @app.post("/api/update", status_code=202)
    def start_update() -> dict[str, Any]:
        return review.start_update().public()

    @app.get("/api/job")
    def job() -> dict[str, Any]:
        return review.job.public()

    @app.get("/images/{i}/thumb")
    def thumb(i: int) -> FileResponse:
        return FileResponse(review.thumbnail(image_id(i)), media_type="image/jpeg", headers=CACHED)

    @app.get("/images/{i}/full")
    def full(i: int) -> FileResponse:
        path, kind = review.full(image_id(i))
        return FileResponse(path, media_type=kind, headers=CACHED)

    @app.get("/images/{i}/map")
    def heat(i: int) -> FileResponse:
        found, _ = review.map_files(image_id(i))
        if found is None:
            raise BadRequest(404, "no anomaly map", "a detector that gives maps", review.current.det.detector)
        return FileResponse(found, media_type="image/png", headers=CACHED)

    @app.get("/images/{i}/recon")
    def recon(i: int) -> FileResponse:
        _, found = review.map_files(image_id(i))
        if found is None:
            raise BadRequest(
                404, "no reconstruction", "a reconstructing detector", review.current.det.detector
            )
        return FileResponse(found, media_type="image/png", headers=CACHED)

    @app.get("/images/{i}/mask")
    def mask(i: int) -> FileResponse:
        found = review.mask_file(image_id(i))
        if found is None:
            raise BadRequest(404, "no true region", "an anomalous image of a set with masks", f"image {i}")
        return FileResponse(found, media_type="image/png", headers=CACHED)

    return Guard(BodyLimit(app, MAX_BODY), token)
