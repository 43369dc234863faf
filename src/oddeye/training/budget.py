"""A time budget for one training: shared by the parts that train, each pacing itself.

The budget covers the whole fit: every trained part (an ensemble's trainable members, or the
detector itself), the memory banks, the score scales and the held-out scoring. A share of it
(``RESERVE``) is kept for the work that is not training; the rest is split between the trained
parts by weight. Each part, when it starts, takes its weight's share of the time still left (so
time an early-stopped part did not use passes on), measures its own speed over its first
``PROBE`` steps, and sets its number of steps from that: the same budget trains longer on a fast
machine and less on a slow one, and ends on time on both. Early stopping and epoch caps can still
end a part sooner.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

RESERVE = 0.1  # of the budget, for banks, score scales and held-out scoring
PROBE = 10  # steps timed before a part sets its number of steps (the first is not counted)
MIN_SHARE = 1.0  # seconds: below this a part still takes its probe steps


@dataclass
class Part:
    """One trained part's share and what it made of it (recorded in the run)."""

    name: str
    weight: float = 1.0
    share_s: float | None = None
    images_per_s: float | None = None  # measured over its first steps
    step_cap: int | None = None  # set from that speed
    steps: int = 0
    seconds: float = 0.0


@dataclass
class Budget:
    """``seconds`` for a fit shared by ``parts`` (names in training order, with weights)."""

    seconds: float
    parts: list[Part]
    reserve: float = RESERVE
    started: float = field(default_factory=lambda: time.perf_counter())

    @classmethod
    def plan(cls, seconds: float, names: list[tuple[str, float]]) -> Budget:
        return cls(float(seconds), [Part(name, weight) for name, weight in names])

    def planned_share(self, part: Part) -> float:
        total = sum(p.weight for p in self.parts) or 1.0
        return self.seconds * (1 - self.reserve) * part.weight / total

    def describe(self) -> str:
        """The plan in one line: the budget and each part's planned share."""
        from oddeye.progress import clock

        if not self.parts:
            return f"budget {clock(self.seconds)}: nothing trains (memory banks and scales only)"
        shares = ", ".join(f"{p.name} {clock(self.planned_share(p))}" for p in self.parts)
        reserve = clock(self.seconds * self.reserve)
        return f"budget {clock(self.seconds)}: {shares}; {reserve} kept for banks, scales and scoring"

    def pacer(self, name: str, batch_size: int) -> Pacer:
        """Start part ``name``: its share is its weight's part of the training time still left."""
        index = next(i for i, p in enumerate(self.parts) if p.name == name)
        part, later = self.parts[index], self.parts[index:]
        left = self.seconds * (1 - self.reserve) - (time.perf_counter() - self.started)
        part.share_s = max(MIN_SHARE, left * part.weight / (sum(p.weight for p in later) or 1.0))
        return Pacer(part, batch_size)

    def to_dict(self) -> dict[str, object]:
        return {
            "budget_s": self.seconds,
            "reserve_s": round(self.seconds * self.reserve, 3),
            "parts": [asdict(p) for p in self.parts],
        }


class Pacer:
    """Paces one part: after ``PROBE`` steps it sets the part's step cap from the measured speed
    and the time left of its share; at each epoch's end it sets it again, counting the held-out
    evaluation's time too. ``done`` says when to stop."""

    def __init__(self, part: Part, batch_size: int) -> None:
        self.part, self.batch_size = part, batch_size
        self.start = time.perf_counter()
        self.timed_from: float | None = None  # after the first step (warm-up) finished
        self.timed_steps, self.timed_images = 0, 0
        self.overhead = 0.0  # seconds per epoch outside the training steps (held-out loss)

    def step(self, images: int) -> None:
        """One optimisation step of ``images`` images finished."""
        self.part.steps += 1
        now = time.perf_counter()
        if self.timed_from is None:
            self.timed_from = now
            return
        self.timed_steps += 1
        self.timed_images += images
        if self.timed_steps == PROBE - 1:  # steps 2..PROBE timed
            self.part.images_per_s = self.timed_images / max(now - self.timed_from, 1e-9)
            self._set_cap(now)

    def epoch_end(self, overhead_s: float) -> None:
        """An epoch ended; ``overhead_s``: its time outside the training steps."""
        self.overhead = max(self.overhead, overhead_s)
        if self.part.images_per_s is not None:
            self._set_cap(time.perf_counter())

    def _set_cap(self, now: float) -> None:
        left = (self.part.share_s or 0.0) - (now - self.start) - self.overhead
        per_step = self.batch_size / (self.part.images_per_s or 1.0)
        self.part.step_cap = self.part.steps + max(0, int(left / per_step))

    @property
    def done(self) -> bool:
        """The step cap is reached, or the share's time is up (whatever the speed did since)."""
        if self.part.step_cap is not None and self.part.steps >= self.part.step_cap:
            return True
        elapsed = time.perf_counter() - self.start
        return self.part.images_per_s is not None and elapsed >= (self.part.share_s or 0.0)

    def finish(self) -> None:
        self.part.seconds = round(time.perf_counter() - self.start, 3)

    def describe(self) -> str:
        """'measured 885 images/s over its first steps: 4,100 steps in its 6:00 share (took 5:58)'."""
        from oddeye.progress import clock

        p = self.part
        if p.images_per_s is None:
            return f"{p.steps} steps, too few to measure its speed (share {clock(p.share_s or 0)})"
        return (
            f"measured {p.images_per_s:,.0f} images/s over its first steps: {p.step_cap:,} steps in its "
            f"{clock(p.share_s or 0)} share; ran {p.steps:,} in {clock(p.seconds)}"
        )
