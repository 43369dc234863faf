"""``oddeye review``: score the set (or read the cached scores), then serve the page with uvicorn."""

from __future__ import annotations

import argparse
import secrets

from oddeye.errors import OddeyeError
from oddeye.serving.listen import check_port


def cmd_review(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from oddeye.review.app import create_app, is_loopback
    except ImportError as e:
        raise OddeyeError(
            f"oddeye review needs the serve extra ({e.name} is missing): pip install 'oddeye[serve]'"
        ) from None
    from oddeye.review.session import Review

    if not 0 <= args.port < 65536 or args.page_size < 1:
        raise OddeyeError("--port: expected 0..65535; --page-size: expected a positive number")
    check_port(args.host, args.port)  # before minutes of scoring, not after
    review = Review(
        args.run,
        args.images,
        labels=args.labels,
        masks=args.masks,
        marks=args.marks,
        cache=args.cache,
        size=args.size,
        device=args.device,
        progress=not args.quiet,
        page_size=args.page_size,
    )
    token = None if is_loopback(args.host) else secrets.token_urlsafe(24)
    host = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{host}:{args.port}/" + (f"?token={token}" if token else "")
    det = review.current.det
    if review.marks.resumed:
        print(f"resumed {review.marks.resumed} marks from {review.marks.path}")
    print(
        f"reviewing {review.n} images of {review.source} scored by {args.run} ({det.detector}); "
        f"marks go to {review.marks.path} as they are given"
    )
    if token:
        print(
            f"listening on {args.host}, not this machine only: every request needs the token in this address"
        )
    print(f"open {address}  (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(review, token), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from oddeye.config import DEVICE_HELP, QUIET_HELP, SIZE_HELP, parse_dims

    p.add_argument("run", metavar="RUN", help="the run folder whose scores are reviewed")
    p.add_argument("images", metavar="IMAGES", help=".npy/.npz/idx file, folder, or MVTec AD category")
    p.add_argument("--labels", metavar="LABELS", help="0/1 labels (1 = anomaly): precision, recall, FPR")
    p.add_argument("--masks", metavar="DIR|NPY", help="with --labels: true regions, shown over the images")
    p.add_argument(
        "--marks", default="marks.csv", metavar="CSV",
        help="where marks go, at once (Id,label; 0 = normal, 1 = anomalous); an existing file is resumed",
    )  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1", help="address (default 127.0.0.1; any other needs the token)"
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--cache", metavar="DIR", help="thumbnails, maps and scores (default ~/.cache/oddeye/review)"
    )
    p.add_argument("--page-size", type=int, default=60, metavar="N", help="images per page (default 60)")
    p.add_argument("--size", type=parse_dims, metavar="HxW", help=SIZE_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (info: one line per request)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
