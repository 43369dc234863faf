"""``oddeye serve``: load the model once, check it, then hand it to uvicorn."""

from __future__ import annotations

import argparse
import os

from oddeye.errors import OddeyeError
from oddeye.serving.listen import check_port

MB = 2**20


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from oddeye.serving.app import Limits, create_app
        from oddeye.serving.backends import open_backend
    except ImportError as e:
        raise OddeyeError(
            f"oddeye serve needs the serve extra ({e.name} is missing): pip install 'oddeye[serve]'"
        ) from None
    if args.workers < 1 or args.max_images < 1 or args.max_upload_mb <= 0:
        raise OddeyeError("--workers, --max-images and --max-upload-mb: expected positive numbers")
    backend = open_backend(args.model, args.name)  # fails here, once, before any worker starts
    check_port(args.host, args.port)  # a port in use: one line, not uvicorn's error
    limits = Limits(int(args.max_upload_mb * MB), args.max_images)
    h, w, c = backend.shape
    print(
        f"serving {backend.name!r}: {backend.detector} on {backend.platform}, images {h}x{w}x{c} "
        f"{backend.dtype}, at http://{args.host}:{args.port} (OpenAPI docs at /docs; "
        f"{args.workers} worker{'s' if args.workers > 1 else ''})",
        flush=True,
    )
    if args.workers == 1:
        uvicorn.run(create_app(backend, limits), host=args.host, port=args.port, log_level=args.log_level)
        return 0
    os.environ.update(
        ODDEYE_SERVE_MODEL=str(args.model),
        ODDEYE_SERVE_NAME=backend.name,
        ODDEYE_SERVE_MAX_BYTES=str(limits.max_upload_bytes),
        ODDEYE_SERVE_MAX_IMAGES=str(limits.max_images),
    )
    uvicorn.run(
        "oddeye.serving.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN|MODEL.onnx", help="a run folder or a file made by oddeye export")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    p.add_argument(
        "--name", help="the model's name in /v2/models/NAME (default: the file's or folder's name)"
    )
    p.add_argument("--max-upload-mb", type=float, default=16, help="largest request body, MB (default 16)")
    p.add_argument("--max-images", type=int, default=256, help="most images per request (default 256)")
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (info: one line per request)",
    )  # fmt: skip
