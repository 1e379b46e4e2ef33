"""Drift monitoring in the worker: live rows counted into the bundle's reference bins, per window.

``DriftMonitor.observe`` is fed once per scored batch (``workers/runner.py``) with the feature matrix
(float32 [N, F], ``FEATURE_NAMES`` columns), the float32 scores, the event times (ms) and the flags.
Every monitored feature and the score are binned with the bundle's bins (``schemas/drift.py``: bin =
``searchsorted(edges, x, side="right")``, here all columns at once: ``Layout.slots``), the flag is a
two-bin pseudo-column, and the whole batch is counted with ONE ``np.bincount`` over ``event hour x
(column offset + bin)``: a [hours, width] matrix of counts (width = every column's bins side by side,
then the flag's two). Per batch the only Python loops are over the edges of the widest column (9) and
over the distinct event hours of the batch (one in live time, a dozen in a compressed replay).

Windows (``window`` in the message):

- ``interval``: the rows scored since the last latency-stats message (wall clock);
- ``hour`` / ``day``: the UTC hour / day of each row's event time. An hour or day is published once
  the watermark passes its end (``advance``). The watermark is the worker's (``Runner.drift_watermark``:
  the oldest of its partitions' bounds, i.e. the first transaction still queued less the lateness, else
  the partition's clock); here it never goes back.

Late rows: no partition scores a row older than its bound, so only a partition assigned later (a
rebalance, or one whose first fetch came after the others were scored) or a redelivery brings rows of
a closed window. A row counts in the window of its own event time while that is open; else it is
dropped and counted (``late_rows`` per kind; a row late for its hour still counts in its day while the
day is open). Closing is monotone: once hour h closed, every row of hour <= h is late.

Bounded state: at most ``MAX_OPEN_DAYS`` days (twice the feedback delay) and as many days of hours are
open; a row that would open one more first closes the oldest (``forced``: the watermark lags the rows
by more than the core lets partitions drift apart, e.g. a partition stuck at an old clock); a row
older than every open window then is late. Closed windows wait for the next stats message, at most
``MAX_PENDING`` of each kind; beyond that the oldest are dropped and counted (``dropped_windows``: a
compressed replay can close more hours per stats interval than a message should carry).

Each window carries its bin counts, so windows of one event-time hour or day merge across workers by
adding counts; its PSI (``Bins.psi``) is computed when the message is built, not per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.drift import PSI_FLOOR, Bins, Monitoring
from schemas.features import DAY_MS, FEATURE_NAMES, FEEDBACK_DELAY_DAYS, HOUR_MS

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Flags = npt.NDArray[np.bool_]

SCORE = "score"
HOUR, DAY, INTERVAL = "hour", "day", "interval"
SPANS = {HOUR: HOUR_MS, DAY: DAY_MS}
HOURS_A_DAY = DAY_MS // HOUR_MS
# A partition's rows are scored once the terminal windows they read are final, up to the feedback delay
# (+1) ahead of the slowest partition's closed days: in a backlog one worker's partitions score days
# apart (9-10 seen in a compressed replay), and each of those days must stay open until the slowest one
# passes it. Twice the delay leaves a margin; rows further apart are an anomaly (a stray clock). A window
# costs ~1 kB.
MAX_OPEN_DAYS = 2 * FEEDBACK_DELAY_DAYS
MAX_OPEN_HOURS = MAX_OPEN_DAYS * 24
MAX_PENDING = {HOUR: 48, DAY: 31}
# A batch whose event times span more hours than this is counted per distinct hour (np.unique)
# rather than over the dense hour range, so that one stray timestamp cannot allocate a huge matrix.
MAX_DENSE_HOURS = 256
NEVER = -(2**62)  # "nothing closed yet"


class Layout:
    """Where each monitored column's bins sit in a window's count vector, and the arithmetic on it."""

    def __init__(self, m: Monitoring, feature_names: tuple[str, ...] = FEATURE_NAMES) -> None:
        names = tuple(n for n in feature_names if n in m.features)
        self.names: tuple[str, ...] = (*names, SCORE)  # the monitored features in FEATURE_NAMES order, the score
        self.bins: tuple[Bins, ...] = (*(m.features[n] for n in names), m.score)
        self.cols = tuple(feature_names.index(n) for n in names)  # feature matrix column of each but the score
        sizes = np.array([b.n for b in self.bins], dtype=np.intp)
        self.offsets = tuple(int(o) for o in np.cumsum(sizes) - sizes)  # first slot of each name's bins
        self.flag_at = int(sizes.sum())  # slots flag_at (not flagged) and flag_at + 1 (flagged)
        self._cols = np.asarray(self.cols, dtype=np.intp)
        self._offsets = np.asarray(self.offsets, dtype=np.intp)[:, None]
        self._expected = np.maximum(np.concatenate([b.expected for b in self.bins]), PSI_FLOOR)
        # Every column's edges in a row of one matrix, NaN-padded (x < NaN is never true), as float32
        # rounded up: for a float32 x, x < e exactly when x < ceil32(e), so float32 compares are exact.
        edges = np.full((len(self.bins), max(len(b.edges) for b in self.bins)), np.nan, dtype=np.float32)
        for j, b in enumerate(self.bins):
            edges[j, :len(b.edges)] = ceil32(b.edges)
        self._edges = edges
        self._above_dtype = np.int8 if edges.shape[1] <= np.iinfo(np.int8).max else np.intp
        self._last = self._offsets + np.array([[len(b.edges)] for b in self.bins], dtype=np.intp)

    @property
    def width(self) -> int:
        return self.flag_at + 2

    def slots(self, x: F32, scores: F32, flags: Flags) -> npt.NDArray[np.intp]:
        """[columns + 2, N]: each row's slot in the count vector, per monitored column and for the flag.

        ``Bins.index`` (bin = the edges <= x, NaN last) of every column at once: bin = edges - the edges
        above x, counted by comparing the [columns, N] matrix of values with one column of the edge
        matrix at a time (a pass per edge of the widest column, 9 at N_BINS, in float32, counts in int8):
        about half the time of a searchsorted per column."""
        if x.dtype != np.float32 or scores.dtype != np.float32:
            raise TypeError(f"feature rows and scores must be float32 (the model's), got {x.dtype}, {scores.dtype}")
        values = np.empty((len(self.names), len(scores)), dtype=np.float32)
        values[:-1] = x[:, self._cols].T
        values[-1] = scores
        above = np.zeros(values.shape, dtype=self._above_dtype)
        for k in range(self._edges.shape[1]):
            above += values < self._edges[:, k:k + 1]
        out = np.empty((len(self.names) + 1, len(scores)), dtype=np.intp)
        np.subtract(self._last, above, out=out[:-1])
        out[-1] = self.flag_at + flags
        return out

    def psi(self, counts: I64) -> list[float]:
        """``Bins.psi`` of every monitored column at once (``schemas.drift.psi``'s arithmetic); rows > 0."""
        bins = counts[:self.flag_at]
        rows = counts[self.flag_at] + counts[self.flag_at + 1]
        a = np.maximum(bins / rows, PSI_FLOOR)
        e = self._expected
        return np.add.reduceat((a - e) * np.log(a / e), self._offsets[:, 0]).tolist()  # type: ignore[no-any-return]

    def split(self, counts: I64) -> dict[str, I64]:
        return {n: counts[o:o + b.n] for n, o, b in zip(self.names, self.offsets, self.bins, strict=True)}


@dataclass
class Window:
    kind: str
    start: int                      # ms: event time for hours and days, wall clock for intervals
    end: int
    counts: I64
    forced: bool = False            # closed before the watermark passed its end (bounded state)

    def rows(self, layout: Layout) -> int:
        return int(self.counts[layout.flag_at] + self.counts[layout.flag_at + 1])

    def to_json(self, layout: Layout) -> dict[str, Any]:
        rows, flags = self.rows(layout), int(self.counts[layout.flag_at + 1])
        per = layout.split(self.counts)
        psi: list[float | None] = [*layout.psi(self.counts)] if rows else [None] * len(layout.names)
        return {
            "window": self.kind, "start": self.start, "end": self.end, "rows": rows, "flags": flags,
            "alert_rate": flags / rows if rows else None,
            "psi": dict(zip(layout.names, psi, strict=True)),
            "counts": {n: c.tolist() for n, c in per.items()},
            "forced": self.forced,
        }


@dataclass
class _Kind:
    """The open windows of one kind (hour or day), and what was closed or lost since the last message."""

    kind: str
    cap: int
    open: dict[int, I64] = field(default_factory=dict)     # window index (ts // span) -> counts
    closed_through: int = NEVER
    closed: list[Window] = field(default_factory=list)
    late_rows: int = 0
    dropped: int = 0


class DriftMonitor:
    def __init__(self, m: Monitoring, threshold: float, now_ms: int,
                 feature_names: tuple[str, ...] = FEATURE_NAMES) -> None:
        self.layout = Layout(m, feature_names)
        self.threshold = threshold
        self.expected_alert_rate = m.expected_alert_rate
        self.interval = Window(INTERVAL, now_ms, now_ms, np.zeros(self.layout.width, np.int64))
        self.kinds = {HOUR: _Kind(HOUR, MAX_OPEN_HOURS), DAY: _Kind(DAY, MAX_OPEN_DAYS)}
        self.watermark: int | None = None

    # -- the hot path: once per scored batch --------------------------------------------------

    def observe(self, x: F32, scores: F32, ts: I64, flags: Flags) -> None:
        if len(scores) == 0:
            return
        width = self.layout.width
        slots = self.layout.slots(x, scores, flags)
        hours, where = _hour_slots(ts // HOUR_MS)
        flat = (slots + where * width).ravel()
        per_hour = np.bincount(flat, minlength=len(hours) * width).reshape(len(hours), width)
        self.interval.counts += per_hour.sum(axis=0)
        rows = per_hour[:, self.layout.flag_at] + per_hour[:, self.layout.flag_at + 1]
        for i in np.flatnonzero(rows).tolist():
            self._add(hours[i], per_hour[i], int(rows[i]))

    def _add(self, hour: int, counts: I64, rows: int) -> None:
        for kind, index in ((HOUR, hour), (DAY, hour // HOURS_A_DAY)):
            acc = self._open(self.kinds[kind], index)
            if acc is None:
                self.kinds[kind].late_rows += rows
            else:
                acc += counts

    def _open(self, k: _Kind, index: int) -> I64 | None:
        """The counts of window ``index``, opened if need be; None when it closed already (late)."""
        acc = k.open.get(index)
        if acc is not None or index <= k.closed_through:
            return acc
        if len(k.open) >= k.cap and index < min(k.open):  # it would be the oldest: the one to go
            return None
        while len(k.open) >= k.cap:  # bounded: the oldest goes first, even before the watermark passed it
            self._close(k, min(k.open), forced=True)
        acc = k.open[index] = np.zeros(self.layout.width, np.int64)
        return acc

    def _close(self, k: _Kind, index: int, forced: bool = False) -> None:
        span = SPANS[k.kind]
        k.closed.append(Window(k.kind, index * span, (index + 1) * span, k.open.pop(index), forced))
        k.closed_through = max(k.closed_through, index)
        if len(k.closed) > MAX_PENDING[k.kind]:
            del k.closed[0]
            k.dropped += 1

    def advance(self, watermark: int | None) -> None:
        """Close every hour and day that ends at or before the watermark (which never goes back here)."""
        if watermark is None or (self.watermark is not None and watermark <= self.watermark):
            return
        self.watermark = watermark
        for k in self.kinds.values():
            through = watermark // SPANS[k.kind] - 1
            if k.open and min(k.open) <= through:
                for index in sorted(i for i in k.open if i <= through):
                    self._close(k, index)
            k.closed_through = max(k.closed_through, through)

    # -- the stats message ----------------------------------------------------------------------

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """The ``drift`` object of a latency-stats message; the interval window restarts at ``now_ms``."""
        self.interval.end = now_ms
        layout = self.layout
        closed = sorted((w for k in self.kinds.values() for w in k.closed), key=lambda w: (w.end, w.kind))
        msg = {
            "enabled": True,
            "reason": None,
            "threshold": self.threshold,
            "expected_alert_rate": self.expected_alert_rate,
            "watermark": self.watermark,
            "interval": self.interval.to_json(layout),
            "closed": [w.to_json(layout) for w in closed],
            "open": {kind: len(k.open) for kind, k in self.kinds.items()},
            "late_rows": {kind: k.late_rows for kind, k in self.kinds.items()},
            "dropped_windows": sum(k.dropped for k in self.kinds.values()),
        }
        for k in self.kinds.values():
            k.closed, k.late_rows, k.dropped = [], 0, 0
        self.interval = Window(INTERVAL, now_ms, now_ms, np.zeros(layout.width, np.int64))
        return msg


def ceil32(edges: npt.NDArray[np.float64]) -> F32:
    """The smallest float32 at or above each edge (inf above float32's range)."""
    with np.errstate(over="ignore"):
        e32 = edges.astype(np.float32)
    return np.where(e32 < edges, np.nextafter(e32, np.float32(np.inf)), e32).astype(np.float32)


def _hour_slots(hour: I64) -> tuple[list[int], npt.NDArray[np.intp]]:
    """(the batch's hours, each row's index among them): the dense range from the first hour when short."""
    h0, h1 = int(hour.min()), int(hour.max())
    if h1 - h0 < MAX_DENSE_HOURS:
        return list(range(h0, h1 + 1)), (hour - h0).astype(np.intp)
    distinct, where = np.unique(hour, return_inverse=True)
    return distinct.tolist(), where.astype(np.intp)


def drift_off(reason: str) -> dict[str, Any]:
    """The ``drift`` object of a worker that does not monitor drift, saying why."""
    return {"enabled": False, "reason": reason}


def last_closed(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The last window of each kind that a ``drift`` object reports closed (what the gauges show)."""
    out: dict[str, dict[str, Any]] = {}
    for w in report.get("closed", ()):
        out[w["window"]] = w
    return out
