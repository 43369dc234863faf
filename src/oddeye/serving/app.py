"""The HTTP server: the Open Inference Protocol (KServe v2, as Triton speaks it) and ``/score``.

``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}`` (input, outputs,
threshold, versions), ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (JSON
tensors: ``images`` uint8 (B, H, W, C) in; ``score`` and ``anomaly_map`` out), and ``POST
/score``: image files (multipart field ``files``: PNG, JPEG, ... or one ``.npy``) in; for each
image its score, calibrated score, flag at the saved threshold (``?threshold=`` overrides it) and,
with ``?maps=true``, its anomaly map. OpenAPI docs at ``/docs``.

Bad requests get a 4xx JSON body ``{"error": ..., "expected": ..., "found": ...}``: never a 500,
never a traceback. Upload size and images per request are limits set at start.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oddeye._version import __version__
from oddeye.data.decode import decode, reason
from oddeye.errors import OddeyeError
from oddeye.serving.backends import Backend, open_backend
from oddeye.thresholds import Threshold, resolve_threshold, rule_forms

DATATYPES = {"uint8": "UINT8", "float32": "FP32"}
REQUEST_RULES = ("value", "fpr")  # top:Q and f1 need the whole scored set, or labels: not per request
MB = 2**20


@dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_upload_bytes: int = 16 * MB
    max_images: int = 256


class BadRequest(Exception):
    """A request the server refuses, with what it expected and what it found."""

    def __init__(self, status: int, error: str, expected: str = "", found: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.expected, self.found = status, error, expected, found

    def response(self) -> JSONResponse:
        body = {"error": self.error}
        if self.expected:
            body["expected"] = self.expected
        if self.found:
            body["found"] = self.found
        return JSONResponse(body, status_code=self.status)


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with a 413, before it is parsed
    (by its Content-Length, or while it streams in when there is none)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_large = BadRequest(
            413, "request too large", f"at most {self.limit / MB:g} MB", f"{int(length or 0) / MB:.1f} MB"
        )
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_large.response()(scope, receive, send)
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _Oversize
            return message

        try:
            await self.app(scope, limited, send)
        except _Oversize:
            await BadRequest(413, "request too large", f"at most {self.limit / MB:g} MB", "more").response()(
                scope, receive, send
            )


class _Oversize(Exception):
    pass


def create_app(backend: Backend, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving ``backend``."""
    limits = limits or Limits()
    app = FastAPI(
        title=f"oddeye: {backend.name}",
        version=__version__,
        description=(
            f"Anomaly scores from `{backend.detector}` ({backend.platform}); higher = more anomalous. "
            "Open Inference Protocol (KServe v2) under /v2, image files under /score."
        ),
    )
    json_errors(app)
    h, w, c = backend.shape

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/v2", summary="server metadata")
    def server() -> dict[str, Any]:
        return {"name": "oddeye", "version": __version__, "extensions": []}

    @app.get("/v2/health/live", summary="the server is running")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="the model is loaded and answering")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2/models/{name}", summary="model metadata: input, outputs, threshold, versions")
    def metadata(name: str) -> dict[str, Any]:
        _check_name(name, backend)
        return {
            "name": backend.name,
            "versions": ["1"],
            "platform": backend.platform,
            "inputs": [{"name": "images", "datatype": DATATYPES[backend.dtype], "shape": [-1, h, w, c]}],
            "outputs": [
                {"name": "score", "datatype": "FP32", "shape": [-1]},
                {"name": "anomaly_map", "datatype": "FP32", "shape": [-1, h, w]},
            ],
            "parameters": {
                "detector": backend.detector,
                "threshold": backend.threshold.to_dict() if backend.threshold is not None else None,
                "calibration_images": int(len(backend.heldout_scores)),
                "anomaly_map": backend.map_meaning,
                "score": "higher = more anomalous",
                "versions": backend.versions,
                "limits": {"max_upload_bytes": limits.max_upload_bytes, "max_images": limits.max_images},
            },
        }

    @app.get("/v2/models/{name}/ready", summary="the model is ready")
    def model_ready(name: str) -> dict[str, Any]:
        _check_name(name, backend)
        return {"name": backend.name, "ready": True}

    @app.post("/v2/models/{name}/infer", summary="Open Inference Protocol inference (JSON tensors)")
    async def infer(name: str, request: Request) -> dict[str, Any]:
        _check_name(name, backend)
        body = await _json(request)
        images, wanted = _oip_images(body, backend, limits)
        scores, maps = backend.infer(images, maps="anomaly_map" in wanted)
        outputs = []
        if "score" in wanted:
            outputs.append({"name": "score", "datatype": "FP32", "shape": [len(scores)],
                            "data": scores.astype(np.float32).tolist()})  # fmt: skip
        if "anomaly_map" in wanted:
            outputs.append({"name": "anomaly_map", "datatype": "FP32", "shape": list(maps.shape),
                            "data": maps.astype(np.float32).ravel().tolist()})  # fmt: skip
        answer = {"model_name": backend.name, "model_version": "1", "outputs": outputs}
        if "id" in body:
            answer["id"] = body["id"]
        if backend.threshold is not None:
            answer["parameters"] = {"threshold": backend.threshold.value}
        return answer

    @app.post("/score", summary="score image files: score, calibrated score, flag (and maps)")
    async def score(
        files: Annotated[list[UploadFile], File(description="PNG/JPEG/... images, or one .npy of images")],
        threshold: Annotated[
            str | None, Query(description="override: a value, or fpr:A (held-out scores)")
        ] = None,
        maps: Annotated[bool, Query(description="include each image's anomaly map")] = False,
    ) -> dict[str, Any]:
        names, images = [], []
        for upload in files:
            content = await upload.read()
            batch = _upload_images(upload.filename or "upload", content, backend)
            names += [(upload.filename or "upload", i if len(batch) > 1 else None) for i in range(len(batch))]
            images.append(batch)
            if len(names) > limits.max_images:
                raise BadRequest(
                    413,
                    "too many images",
                    f"at most {limits.max_images} per request",
                    f"{len(names)} or more",
                )
        stack = np.concatenate(images)
        scores, amaps = backend.infer(stack, maps=maps)
        chosen = _threshold(threshold, backend)
        calibrated = backend.calibrated(scores)
        flags = chosen.flag(scores) if chosen is not None else None
        results = []
        for k, ((file, index), s) in enumerate(zip(names, scores, strict=True)):
            row: dict[str, Any] = {"file": file, "score": float(s)}
            if index is not None:
                row["index"] = index
            row["calibrated"] = float(calibrated[k]) if calibrated is not None else None
            row["flag"] = int(flags[k]) if flags is not None else None
            if maps:
                row["map"] = amaps[k].astype(np.float32).tolist()
            results.append(row)
        return {"model": backend.name, "threshold": _threshold_json(chosen, backend), "results": results}

    return _limited(app, limits)


def _limited(app: FastAPI, limits: Limits) -> FastAPI:
    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)
    return app


def json_errors(app: FastAPI) -> None:
    """Every error as a JSON body with a 4xx (a 500 only for a bug, without its traceback)."""

    @app.exception_handler(BadRequest)
    async def bad(_: Request, e: BadRequest) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return BadRequest(
            422, "invalid request", f"{where}: {first.get('msg', 'a valid request')}"
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return BadRequest(e.status_code, str(e.detail)).response()

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:  # a bug, never bad input
        return JSONResponse({"error": f"internal error ({type(e).__name__})"}, status_code=500)


def _check_name(name: str, backend: Backend) -> None:
    if name != backend.name:
        raise BadRequest(404, "no such model", f"the model this server serves, {backend.name!r}", repr(name))


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as e:
        raise BadRequest(400, "request body is not JSON", "an inference request (JSON)", reason(e)) from None
    if not isinstance(body, dict):
        raise BadRequest(
            400, "request body is not a JSON object", "an inference request", type(body).__name__
        )
    return body


def _oip_images(body: dict[str, Any], backend: Backend, limits: Limits) -> tuple[np.ndarray, set[str]]:
    """The images of an inference request, checked, and the outputs it asks for."""
    h, w, c = backend.shape
    datatype = DATATYPES[backend.dtype]
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(400, "bad inputs", 'one input, "images"', _kind(inputs))
    tensor = inputs[0]
    if tensor.get("name") != "images":
        raise BadRequest(400, "unknown input", '"images"', repr(tensor.get("name")))
    if tensor.get("datatype") != datatype:
        raise BadRequest(400, "wrong datatype", datatype, repr(tensor.get("datatype")))
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) for v in shape)):
        raise BadRequest(400, "bad shape", f"[B, {h}, {w}, {c}]", repr(shape))
    if shape[1:] != [h, w, c] or shape[0] < 1:
        raise BadRequest(422, "wrong image shape", f"[B, {h}, {w}, {c}]", repr(shape))
    if shape[0] > limits.max_images:
        raise BadRequest(413, "too many images", f"at most {limits.max_images} per request", str(shape[0]))
    try:
        data = np.asarray(tensor.get("data"), dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(400, "bad data", "numbers", "other values") from None
    if data.size != int(np.prod(shape)):
        raise BadRequest(
            400, "data does not match the shape", f"{int(np.prod(shape))} values", f"{data.size}"
        )
    if not np.isfinite(data).all() or (
        datatype == "UINT8" and ((data < 0) | (data > 255) | (data % 1 != 0)).any()
    ):
        raise BadRequest(
            400, "bad values", "whole numbers 0..255" if datatype == "UINT8" else "finite numbers", "others"
        )
    images = data.reshape(shape).astype(np.uint8 if datatype == "UINT8" else np.float32)
    wanted = {"score", "anomaly_map"}
    outputs = body.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise BadRequest(400, "bad outputs", 'a list like [{"name": "score"}]', _kind(outputs))
        names = {o.get("name") for o in outputs}
        unknown = names - wanted
        if unknown:
            raise BadRequest(
                400, "unknown output", "score and/or anomaly_map", repr(sorted(map(str, unknown)))
            )
        wanted = names
    return images, wanted


def _kind(value: Any) -> str:
    return f"{type(value).__name__} of {len(value)}" if isinstance(value, list) else type(value).__name__


def _upload_images(name: str, content: bytes, backend: Backend) -> np.ndarray:
    """(n, H, W, C) from one uploaded file: an image file, or a .npy of images."""
    h, w, c = backend.shape
    if not content:
        raise BadRequest(422, f"{name}: empty file", "an image file or a .npy", "0 bytes")
    if content[:6] == b"\x93NUMPY" or name.lower().endswith(".npy"):
        return _npy_images(name, content, backend)
    try:
        pixels = decode(io.BytesIO(content), "L" if c == 1 else "RGB")
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds on bad files
        raise BadRequest(
            415, f"{name}: not a readable image", "a PNG, JPEG, BMP, GIF, TIFF or WebP image", reason(e)
        ) from None
    if pixels.shape[:2] != (h, w):
        raise BadRequest(
            422, f"{name}: wrong image size", f"{h}x{w} (HxW)", f"{pixels.shape[0]}x{pixels.shape[1]}"
        )
    if backend.dtype != "uint8":
        raise BadRequest(
            422, f"{name}: this model takes float images", "a .npy of float32 images", "an image file"
        )
    return pixels.reshape(1, h, w, c)


def _npy_images(name: str, content: bytes, backend: Backend) -> np.ndarray:
    h, w, c = backend.shape
    if not content.startswith(b"\x93NUMPY"):  # np.load would take it for a pickle and say so
        raise BadRequest(422, f"{name}: not a readable .npy", "a NumPy .npy array", "not a .npy file")
    try:
        array = np.load(io.BytesIO(content), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadRequest(422, f"{name}: not a readable .npy", "a NumPy .npy array", reason(e)) from None
    if array.ndim == 3 and c == 1 and array.shape[1:] == (h, w):
        array = array[..., None]
    elif array.ndim == 3 or (array.ndim == 2 and c == 1):
        array = array.reshape(1, *array.shape) if array.ndim == 3 else array.reshape(1, h, w, 1)
    if array.ndim != 4 or array.shape[1:] != (h, w, c) or len(array) < 1:
        raise BadRequest(422, f"{name}: wrong array shape", f"(N, {h}, {w}, {c})", str(array.shape))
    want = np.uint8 if backend.dtype == "uint8" else np.float32
    if array.dtype != want:
        raise BadRequest(422, f"{name}: wrong dtype", np.dtype(want).name, str(array.dtype))
    if want is np.float32 and not np.isfinite(array).all():
        raise BadRequest(422, f"{name}: bad values", "finite numbers", "NaN or inf")
    return np.ascontiguousarray(array)


def _threshold(text: str | None, backend: Backend) -> Threshold | None:
    """The threshold flags are drawn at: the request's (a value, or fpr:A on the held-out scores;
    empty: the saved one), else the model's saved one (None when it has none); a 422 otherwise."""
    try:
        return resolve_threshold(
            backend.threshold if text is None else text,
            saved=backend.threshold,
            heldout=backend.heldout_scores,
            allowed=REQUEST_RULES,
            source=backend.source,
        )
    except OddeyeError as e:
        raise BadRequest(422, "bad threshold", rule_forms(REQUEST_RULES), str(e)) from None


def _threshold_json(chosen: Threshold | None, backend: Backend) -> dict[str, Any] | None:
    """The threshold as /score answers it: its record and whether it is the model's or the request's."""
    if chosen is None:
        return None
    return {**chosen.to_dict(), "source": "saved" if chosen is backend.threshold else "request"}


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` (``oddeye serve --workers N``): the model and limits from the
    environment that ``oddeye serve`` sets."""
    backend = open_backend(os.environ["ODDEYE_SERVE_MODEL"], os.environ.get("ODDEYE_SERVE_NAME") or None)
    limits = Limits(int(os.environ["ODDEYE_SERVE_MAX_BYTES"]), int(os.environ["ODDEYE_SERVE_MAX_IMAGES"]))
    return create_app(backend, limits)
