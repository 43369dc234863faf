"""A load test for ``oddeye serve``, on loopback: N concurrent clients for a fixed time.

The server runs in its own process (started here, on a free port of 127.0.0.1), the clients in
threads of this one using only the standard library. Figures: requests/s, latency percentiles,
errors, and the server's resident memory before and after. A second phase mixes in a share of
malformed uploads (garbage bytes, wrong sizes, truncated PNGs): each must get a 4xx, every good
request must still succeed, and the server must still answer afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oddeye.bench.common import png, status_kib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (uvicorn's workers), from /proc."""
    return sum((status_kib("VmRSS", p) or 0) * 1024 for p in [pid, *_children(pid)])


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class ChildServer:
    """``oddeye ARGS`` in a child process, until closed; ready once ``GET ready`` answers 200
    (``timeout`` seconds at most). ``ready_s``: how long that took from the start."""

    def __init__(self, args: list[str], port: int, ready: str, timeout: float = 90.0) -> None:
        self.port = port
        self.log = tempfile.TemporaryFile(mode="w+")  # never a pipe nobody reads (it could fill)
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "oddeye", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self._wait_ready(ready, timeout, args[0])
        self.ready_s = time.perf_counter() - started

    def _wait_ready(self, path: str, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"oddeye {what} exited: {self.log.read().strip()}")
            try:
                status, body = request(self.port, "GET", path, timeout=5)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"oddeye {what} did not become ready")

    def close(self) -> None:
        self.log.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Server(ChildServer):
    """``oddeye serve MODEL`` in a child process on a free loopback port, until closed."""

    def __init__(self, model: str | Path, workers: int = 1, extra: tuple[str, ...] = ()) -> None:
        port = free_port()
        args = ["serve", str(model), "--port", str(port), "--workers", str(workers), *extra]
        self.name = ""
        super().__init__(args, port, "/v2/health/ready")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:``port``: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with each (name, content) as a ``files`` field."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, content in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts += [head.encode(), content, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def malformed(image: np.ndarray, rng: np.random.Generator) -> tuple[str, bytes]:
    """A bad upload of one of several kinds: garbage, a truncated PNG, an image of the wrong size."""
    kind = int(rng.integers(3))
    if kind == 0:
        return "garbage.png", rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    if kind == 1:
        data = png(image)
        return "truncated.png", data[: len(data) // 2]
    h, w = image.shape[:2]
    wrong = np.zeros((h + 3, w + 5, image.shape[2]), np.uint8)
    return "wrong-size.png", png(wrong)


@dataclass
class Phase:
    """What one phase of the load test measured."""

    clients: int
    seconds: float
    images_per_request: int
    requests: int = 0
    good: int = 0
    errors: int = 0  # good requests that failed, or bad ones that did not get a 4xx
    refused: int = 0  # malformed requests answered with a 4xx, as they should be
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "images_per_request": self.images_per_request,
            "requests": self.requests,
            "requests_per_s": round(self.requests / self.seconds, 1),
            "images_per_s": round(self.good * self.images_per_request / self.seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "errors": self.errors,
            "malformed_refused_4xx": self.refused,
        }


def run_phase(
    port: int,
    images: np.ndarray,
    clients: int,
    seconds: float,
    per_request: int = 4,
    bad_share: float = 0.0,
    seed: int = 0,
) -> Phase:
    """``clients`` threads posting ``per_request`` PNGs to /score for ``seconds``; a ``bad_share``
    of the requests is malformed instead."""
    phase = Phase(clients, seconds, per_request)
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    good_uploads = [png(images[i % len(images)]) for i in range(len(images))]

    def client(k: int) -> None:
        rng = np.random.default_rng(seed + k)
        while time.monotonic() < stop:
            bad = rng.random() < bad_share
            if bad:
                files = [malformed(images[0], rng)]
            else:
                picks = rng.integers(0, len(good_uploads), per_request)
                files = [(f"{i}.png", good_uploads[i]) for i in picks]
            body, headers = multipart(files)
            start = time.perf_counter()
            try:
                status, data = request(port, "POST", "/score", body, headers)
            except OSError:
                status, data = -1, b""
            ms = (time.perf_counter() - start) * 1000
            with lock:
                phase.requests += 1
                if bad:
                    if 400 <= status < 500 and b'"error"' in data:
                        phase.refused += 1
                    else:
                        phase.errors += 1
                elif status == 200 and len(json.loads(data)["results"]) == per_request:
                    phase.good += 1
                    phase.latencies_ms.append(ms)
                else:
                    phase.errors += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.seconds = time.monotonic() - started
    return phase


def load_test(
    model: str | Path,
    images: np.ndarray,
    clients: int = 8,
    seconds: float = 20.0,
    per_request: int = 4,
    bad_share: float = 0.25,
    workers: int = 1,
) -> dict[str, Any]:
    """Start the server, warm it up, run the clean phase then the malformed one; the figures."""
    with Server(model, workers=workers) as server:
        warm = run_phase(server.port, images, 1, min(2.0, seconds / 4), per_request)
        before = rss_bytes(server.proc.pid)
        clean = run_phase(server.port, images, clients, seconds, per_request)
        after_clean = rss_bytes(server.proc.pid)
        mixed = run_phase(server.port, images, clients, seconds, per_request, bad_share, seed=100)
        after = rss_bytes(server.proc.pid)
        still = request(server.port, "GET", "/v2/health/ready")[0]
    return {
        "model": str(model),
        "workers": workers,
        "warm_up": warm.summary(),
        "clean": clean.summary(),
        "malformed": {**mixed.summary(), "bad_share": bad_share},
        "rss_bytes": {"before": before, "after_clean": after_clean, "after": after},
        "ready_after": still == 200,
        "cpus": os.cpu_count(),
    }
