"""Event-time watermarks of the two streams the monitor joins: scores by ``ts``, labels by ``reported_at``.

A stream's watermark is the minimum over its partitions of the largest event time seen in each:
every partition is read in offset order, so a record earlier than its partition's maximum less the
lateness is the only kind that can arrive after a window closed (counted late, see windows.py).

A partition that is caught up (its position is the broker's end offset, which the I/O edge asks
for) and has brought no record for ``idle_s`` does not hold its stream back. When every partition
of a stream is idle, the stream stands at the other stream's watermark (or at its own largest time,
if that is later): a quiet label feed must not stop the windows while scores flow, nor a finished
score stream stop the labels of its last days. Both streams idle: both stand at the largest event
time seen. Watermarks never go back.

Pure: the caller passes the monotonic time ``now`` (seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SCORES, LABELS = "scores", "labels"


@dataclass
class _Partition:
    last_seen: float
    max_ts: int | None = None
    caught_up: bool = False


def _max(*xs: int | None) -> int | None:
    known = [x for x in xs if x is not None]
    return max(known) if known else None


class Watermarks:
    def __init__(self, partitions: dict[str, Iterable[int]], idle_s: float, now: float) -> None:
        self.idle_s = idle_s
        self.parts = {s: {p: _Partition(now) for p in ps} for s, ps in partitions.items()}
        self.marks: dict[str, int | None] = {SCORES: None, LABELS: None}

    def observe(self, stream: str, partition: int, max_ts: int | None, now: float) -> None:
        """A fetch brought records to ``partition`` (``max_ts``: the largest event time of its valid ones)."""
        p = self.parts[stream][partition]
        p.last_seen, p.caught_up = now, False
        p.max_ts = _max(p.max_ts, max_ts)

    def silent(self, now: float) -> list[tuple[str, int]]:
        """Partitions without a record for ``idle_s``: whether each is caught up is for the edge to ask."""
        return [(s, n) for s, ps in self.parts.items() for n, p in ps.items() if now - p.last_seen >= self.idle_s]

    def set_caught_up(self, stream: str, partition: int, caught_up: bool) -> None:
        self.parts[stream][partition].caught_up = caught_up

    def _idle(self, p: _Partition, now: float) -> bool:
        return p.caught_up and now - p.last_seen >= self.idle_s

    def _active_min(self, stream: str, now: float) -> tuple[bool, int | None]:
        """(every partition idle, min over the others of their maxima; None while one has none)."""
        active = [p.max_ts for p in self.parts[stream].values() if not self._idle(p, now)]
        if not active:
            return True, None
        return False, None if any(m is None for m in active) else min(m for m in active if m is not None)

    def current(self, now: float) -> tuple[int | None, int | None]:
        """(scores watermark, labels watermark), epoch ms; None until known."""
        s_idle, s = self._active_min(SCORES, now)
        l_idle, lab = self._active_min(LABELS, now)
        s_top = _max(*(p.max_ts for p in self.parts[SCORES].values()))
        l_top = _max(*(p.max_ts for p in self.parts[LABELS].values()))
        if s_idle and l_idle:
            s = lab = _max(s_top, l_top)
        elif s_idle:
            s = None if lab is None else _max(s_top, lab)
        elif l_idle:
            lab = None if s is None else _max(l_top, s)
        for stream, mark in ((SCORES, s), (LABELS, lab)):
            self.marks[stream] = _max(self.marks[stream], mark)
        return self.marks[SCORES], self.marks[LABELS]
