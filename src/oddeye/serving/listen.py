"""Listening addresses for the HTTP commands (``oddeye serve``, ``oddeye review``): checked
before the work that precedes serving, so a port in use is one line, not uvicorn's error after
minutes of loading. Standard library only (a server of an exported model runs without torch)."""

from __future__ import annotations

import errno
import socket

from oddeye.errors import OddeyeError


def check_port(host: str, port: int) -> None:
    """A one-line error now if ``host:port`` cannot be listened on (in use, or not this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            found = "in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise OddeyeError(
                f"--host {host} --port {port}: expected an address to listen on, found {found}"
            ) from None
