"""Event-time watermarks of the two streams the monitor joins: scores by ``ts``, labels by ``reported_at``.

A stream's watermark is the minimum over its partitions of how far each has surely come: every
partition is read in offset order, so a record earlier than that less the lateness is the only kind
that can arrive after a window closed (counted late, see windows.py).

For labels, a partition has come as far as the largest event time seen in it. Scores are not in
event-time order within a partition: they are keyed by tx_id, so every scores partition interleaves
the output of every input partition, and in a backlog (a catch-up after an outage, a replay) the
workers' input partitions stand hours or days apart. What is in order is each input partition's
share (its ``source.partition``, one worker at a time, in offset order): a scores partition has come
as far as the slowest of the sources that write to it, each at the largest event time seen from it.
A source silent for ``SOURCE_IDLE_S`` while its partition goes on stops holding it back (a stuck
worker must not freeze the windows for good; the workers' own alerts report it).

A partition that is caught up (its position is the broker's end offset, which the I/O edge asks
for) and has brought no record for ``idle_s`` does not hold its stream back. When every partition
of a stream is idle, the stream stands at the other stream's watermark (or at its own largest time,
if that is later): a quiet label feed must not stop the windows while scores flow, nor a finished
score stream stop the labels of its last days. Both streams idle: both stand at the largest event
time seen. Watermarks never go back.

Pure: the caller passes the monotonic time ``now`` (seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SCORES, LABELS = "scores", "labels"
# Longer than a rebalance or a finality hold, in which one input partition's scores pause while the
# others' go on; shorter than anyone would wait for windows that a stuck worker holds.
SOURCE_IDLE_S = 300.0


@dataclass
class _Partition:
    last_seen: float
    max_ts: int | None = None
    caught_up: bool = False
    # source -> (largest ts, None until one is seen; last seen, or when it was first expected)
    sources: dict[int, tuple[int | None, float]] = field(default_factory=dict)

    def reached(self, now: float) -> int | None:
        """How far the partition has surely come: the slowest recent source (None while an expected one has
        not been seen), else its largest event time."""
        recent = [m for m, seen in self.sources.values() if now - seen < SOURCE_IDLE_S]
        if not recent:
            return self.max_ts
        return None if any(m is None for m in recent) else min(m for m in recent if m is not None)


def _max(*xs: int | None) -> int | None:
    known = [x for x in xs if x is not None]
    return max(known) if known else None


class Watermarks:
    def __init__(self, partitions: Mapping[str, Iterable[int]], idle_s: float, now: float) -> None:
        self.idle_s = idle_s
        self.parts = {s: {p: _Partition(now) for p in ps} for s, ps in partitions.items()}
        self.marks: dict[str, int | None] = {SCORES: None, LABELS: None}

    def observe(self, stream: str, partition: int, max_ts: int | None, now: float,
                by_source: Mapping[int, int] | None = None) -> None:
        """A fetch brought records to ``partition`` (``max_ts``: the largest event time of its valid ones;
        ``by_source``: the same per source, for scores)."""
        p = self.parts[stream][partition]
        p.last_seen, p.caught_up = now, False
        p.max_ts = _max(p.max_ts, max_ts)
        for source, ts in (by_source or {}).items():
            old = p.sources.get(source, (None, now))[0]
            p.sources[source] = (ts if old is None else max(old, ts), now)

    def expect_sources(self, stream: str, sources: Iterable[int], now: float) -> None:
        """Every partition of ``stream`` waits for each of ``sources`` (the input partitions) to be seen in it,
        or silent for ``SOURCE_IDLE_S`` from ``now``: in a backlog the slowest worker's first scores may come
        long after the fastest one's, and nothing of theirs must be late for having come last."""
        for p in self.parts[stream].values():
            for source in sources:
                p.sources.setdefault(source, (None, now))

    def silent(self, now: float) -> list[tuple[str, int]]:
        """Partitions without a record for ``idle_s``: whether each is caught up is for the edge to ask."""
        return [(s, n) for s, ps in self.parts.items() for n, p in ps.items() if now - p.last_seen >= self.idle_s]

    def set_caught_up(self, stream: str, partition: int, caught_up: bool) -> None:
        self.parts[stream][partition].caught_up = caught_up

    def _idle(self, p: _Partition, now: float) -> bool:
        return p.caught_up and now - p.last_seen >= self.idle_s

    def _active_min(self, stream: str, now: float) -> tuple[bool, int | None]:
        """(every partition idle, min over the others of their maxima; None while one has none)."""
        active = [p.reached(now) for p in self.parts[stream].values() if not self._idle(p, now)]
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
