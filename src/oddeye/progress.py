"""Progress wherever oddeye runs: bars on a terminal, plain lines elsewhere, nothing when quiet.

A pipe, a log file, ``nohup``, a CI log or a notebook (``!oddeye train ...`` and the Python API
alike) gets plain lines, each flushed as soon as it is written: one per epoch, one when a phase of
work ends, and one every ``LINE_INTERVAL`` seconds while a long phase runs. A terminal gets tqdm
bars. Everything goes to stderr, so stdout keeps only results. ``ODDEYE_PROGRESS=bars|lines|off``
overrides the choice (a terminal that wants lines, say).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TypeVar

from tqdm.std import tqdm

Mode = Literal["bars", "lines", "off"]
MODES: tuple[Mode, ...] = ("bars", "lines", "off")
LINE_INTERVAL = 60.0  # seconds between the lines of one long phase
T = TypeVar("T")


def mode(enabled: bool = True) -> Mode:
    """How progress shows: ``off`` when not ``enabled`` (``--quiet``), else bars on a terminal and
    lines anywhere else, unless ``ODDEYE_PROGRESS`` says otherwise."""
    if not enabled:
        return "off"
    forced = os.environ.get("ODDEYE_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced  # type: ignore[return-value]
    try:
        return "bars" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return "lines"


def clock(seconds: float) -> str:
    """'4.2 s' under a minute, else 2:03 or 1:02:03 (rounded to the second)."""
    if seconds < 59.95:
        return f"{max(seconds, 0.0):.1f} s"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def line(text: str) -> None:
    """One progress line on stderr, time-stamped and flushed at once."""
    print(f"[oddeye {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def say(text: str, enabled: bool = True) -> None:
    """``text`` as a progress line where progress shows as lines (bars already show it)."""
    if mode(enabled) == "lines":
        line(text)


class Task:
    """One phase of long work (scoring a set, reading a folder, an epoch's batches).

    On a terminal a tqdm bar; as lines, a line when the phase ends (count, time, rate) and one every
    ``interval`` seconds while it runs (with the time left); quiet, nothing. Used like tqdm:
    ``update(n)``, ``set_postfix(...)``, ``close()`` or a ``with`` block.
    """

    def __init__(
        self,
        desc: str,
        total: int | None,
        unit: str = "images",
        enabled: bool = True,
        leave: bool = True,
        interval: float = LINE_INTERVAL,
        final_line: bool = True,
        initial: int = 0,
    ) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.mode = mode(enabled)
        self.done, self.postfix, self.interval, self.final_line = initial, "", interval, final_line
        self.initial = initial
        self.start = self.last = time.perf_counter()
        self.closed = False
        self.bar = (
            tqdm(total=total, desc=desc, unit=unit.rstrip("s") or unit, leave=leave, initial=initial)
            if self.mode == "bars"
            else None
        )

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(failed=exc[0] is not None)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "lines" and time.perf_counter() - self.last >= self.interval:
            self.last = time.perf_counter()
            line(self._running_text())

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(values)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float | None:
        """Seconds left at the rate so far (None before any progress or without a total)."""
        done_here = self.done - self.initial
        if not self.total or done_here <= 0:
            return None
        return self.elapsed() * (self.total - self.done) / done_here

    def _running_text(self) -> str:
        of = f"/{self.total:,}" if self.total else ""
        text = f"{self.desc}: {self.done:,}{of} {self.unit}, {clock(self.elapsed())} elapsed"
        left = self.left()
        if left is not None:
            text += f", ~{clock(left)} left"
        return text + (f" ({self.postfix})" if self.postfix else "")

    def close(self, failed: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and self.final_line and not failed:
            elapsed = self.elapsed()
            done_here = self.done - self.initial
            rated = elapsed > 0 and done_here and self.unit == "images"
            rate = f" ({done_here / elapsed:,.0f} {self.unit}/s)" if rated else ""
            extra = f"; {self.postfix}" if self.postfix else ""
            line(f"{self.desc}: {self.done:,} {self.unit} in {clock(elapsed)}{rate}{extra}")


def track(items: Iterable[T], desc: str, total: int, unit: str, enabled: bool = True) -> Iterator[T]:
    """``items`` with a :class:`Task` counting one per item."""
    with Task(desc, total, unit, enabled) as task:
        for item in items:
            yield item
            task.update()


class EpochProgress:
    """One model's epochs: a bar on a terminal (as before); as lines, one per epoch with the losses,
    the speed, the time so far and the time left at the epoch cap (early stopping may end sooner)."""

    def __init__(self, name: str, first: int, cap: int, enabled: bool = True) -> None:
        self.name, self.cap = name, cap
        self.task = Task(f"training {name}", cap, "epochs", enabled, initial=first - 1, final_line=False)

    def epoch(self, epoch: int, train_loss: float, val_loss: float, images_per_s: float, best: int) -> None:
        task = self.task
        task.update()
        task.set_postfix(train=f"{train_loss:.4g}", heldout=f"{val_loss:.4g}", best=best)
        if task.mode != "lines":
            return
        left = task.left()
        line(
            f"{self.name} epoch {epoch}/{self.cap}: train {train_loss:.5g}, held-out {val_loss:.5g}, "
            f"{images_per_s:,.0f} images/s, {clock(task.elapsed())} elapsed, "
            f"~{clock(left or 0.0)} left at most"
        )

    def close(self, summary: str | None = None) -> None:
        self.task.close()
        if summary and self.task.mode == "lines":
            line(f"{self.name}: {summary}")
