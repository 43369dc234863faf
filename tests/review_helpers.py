"""The review server on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from oddeye.serving.loadtest import free_port

__all__ = ["free_port", "running"]


@contextlib.contextmanager
def running(review: Any, token: str | None = None) -> Iterator[str]:
    """Serve ``review`` with uvicorn until the block ends; yields its address (``http://.../``)."""
    import uvicorn

    from oddeye.review.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(review, token), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the review server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)
