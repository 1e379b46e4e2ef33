"""Rate schedules for the load generator: as fast as possible, a constant rate, or steps.

A schedule answers one question: at what second (from the start) is the ``n``-th transaction
due, or is the schedule over? Pure arithmetic, no clock, so it is tested without Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    rate: float      # transactions per second (> 0)
    seconds: float   # how long the step lasts (> 0)


def parse_steps(text: str) -> list[Step]:
    """``"1000:10,2000:5"`` -> rate 1000/s for 10 s, then 2000/s for 5 s."""
    steps = []
    for part in text.split(","):
        rate, sep, seconds = part.strip().partition(":")
        if not sep:
            raise ValueError(f"step {part!r} is not rate:seconds")
        step = Step(float(rate), float(seconds))
        if not (step.rate > 0 and step.seconds > 0):
            raise ValueError(f"step {part!r}: rate and seconds must be > 0")
        steps.append(step)
    if not steps:
        raise ValueError("no steps given")
    return steps


class Schedule:
    """When each transaction is due. ``rate=None`` and no steps: as fast as possible."""

    def __init__(self, rate: float | None = None, steps: list[Step] | None = None) -> None:
        if rate is not None and steps:
            raise ValueError("give a constant rate or steps, not both")
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.steps = steps or []
        # Cumulative (first transaction index, start second) of every step.
        self._bounds: list[tuple[float, float]] = []
        n = t = 0.0
        for s in self.steps:
            self._bounds.append((n, t))
            n += s.rate * s.seconds
            t += s.seconds
        self.total: float | None = n if self.steps else None
        self.duration: float | None = t if self.steps else None

    @property
    def unpaced(self) -> bool:
        return self.rate is None and not self.steps

    def due(self, n: int) -> float | None:
        """Seconds from the start at which transaction ``n`` (0-based) is due; None: the schedule is over."""
        if self.rate is not None:
            return n / self.rate
        if not self.steps:
            return 0.0
        for s, (n0, t0) in zip(reversed(self.steps), reversed(self._bounds), strict=True):
            if n >= n0:
                k = n - n0
                return t0 + k / s.rate if k < s.rate * s.seconds else None
        return None  # pragma: no cover - n >= 0 always matches the first step

    def step_of(self, seconds: float) -> int:
        """Index of the step running at ``seconds`` from the start (0 without steps)."""
        for i in range(len(self._bounds) - 1, -1, -1):
            if seconds >= self._bounds[i][1]:
                return i
        return 0
