"""Timing: median seconds per call over repeats, each repeat long enough to be read by the clock."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Timing:
    batch: int
    calls: int                 # calls per repeat (median over repeats)
    seconds_per_call: float    # median over repeats
    spread: float              # (max - min) / median of the repeats' per-call times
    best: float = float("nan")  # the fastest repeat's seconds per call

    @property
    def rows_per_s(self) -> float:
        return self.batch / self.seconds_per_call if self.seconds_per_call > 0 else float("nan")


def calls_for(fn: Callable[[F32], object], x: F32, min_repeat_s: float, warmup: int = 2) -> int:
    """Warm ``fn`` up, then the number of calls that fills ``min_repeat_s`` (at least one)."""
    for _ in range(warmup):
        fn(x)
    t0 = time.perf_counter()
    fn(x)
    return max(1, int(min_repeat_s / max(time.perf_counter() - t0, 1e-7)))


def one_repeat(fn: Callable[[F32], object], x: F32, calls: int) -> float:
    """Seconds per call over ``calls`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - t0) / calls


def summarize(batch: int, calls: int, per_call: Sequence[float]) -> Timing:
    med = statistics.median(per_call)
    return Timing(batch, calls, med, (max(per_call) - min(per_call)) / med if med else 0.0, min(per_call))


def measure(fn: Callable[[F32], object], x: F32, repeats: int, min_repeat_s: float, warmup: int = 2) -> Timing:
    """``fn(x)`` per call: ``warmup`` untimed calls, then ``repeats`` repeats of as many calls as fill
    ``min_repeat_s``; the median of the repeats' per-call times."""
    calls = calls_for(fn, x, min_repeat_s, warmup)
    return summarize(len(x), calls, [one_repeat(fn, x, calls) for _ in range(repeats)])


def measure_interleaved(fns: Mapping[str, Callable[[F32], object]], x: F32, repeats: int,
                        min_repeat_s: float) -> dict[str, Timing]:
    """Like ``measure`` for several contenders on the same rows, their repeats interleaved
    (a, b, c, a, b, c, ...), so that a change in the machine's load hits them alike."""
    calls = {k: calls_for(fn, x, min_repeat_s) for k, fn in fns.items()}
    per_call: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            per_call[k].append(one_repeat(fn, x, calls[k]))
    return {k: summarize(len(x), calls[k], v) for k, v in per_call.items()}


def crossover(challenger: Mapping[int, float], baseline: Mapping[int, float], batches: Sequence[int]) -> int | None:
    """The smallest batch from which ``challenger`` rows/s beats ``baseline`` at every larger measured
    batch too; None when it never does (or either was not measured)."""
    common = [b for b in sorted(batches) if b in challenger and b in baseline]
    found: int | None = None
    for b in common:
        wins = challenger[b] > baseline[b]
        found = (found if found is not None else b) if wins else None
    return found
