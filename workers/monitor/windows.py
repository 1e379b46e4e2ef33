"""The monitor's sans-I/O core: scores and labels in, closed windows of model metrics out.

One clock: ``C = min(scores watermark, labels watermark) - lateness`` (watermarks.py). Every hour
boundary ``H <= C`` closes, in order, and at each:

1. the labels reported in ``[H - 1h, H)`` are applied: a label joins the scored transaction of
   its tx_id (latest word, join.py) or, when no version scored it, is dropped and counted
   ``labels_unmatched`` — the scores before ``H`` are complete by then (``C >= H``);
2. arrival windows ``arrival_1h``, ``arrival_1d``, ``arrival_7d``: the transactions with a label
   reported in ``[H - w, H)``, each with its latest word reported before ``H``, per model version;
3. on a day boundary, for the UTC day ``D`` ending at ``H``: ``tx_day`` stage ``provisional``
   (scores only); for the day that ended 7 days before, stage ``feedback``; for the day that
   ended ``horizon`` before, stage ``final`` — each with the labels reported before ``H``.

Bounds: a day's scores are dropped at ``end(D) + horizon + 7 d`` (the final stage, then the
longest arrival window that may still hold its labels); a label waits for its hour (``pending``)
and is then joined or dropped; a label reported ``horizon`` or more after its transaction's day
ended can join nothing kept, and is counted ``labels_beyond_horizon``.

Late records (only a record further behind its partition's maximum than the lateness can be):
a score with ``ts`` before the last closed hour is counted ``scores_late`` and dropped (its day's
provisional stage may have been published); a label reported before it is counted ``labels_late``
and counts from the next hour to close (its word still ranks by its own ``reported_at``). Closed
windows are never re-opened. Everything else is decided by event time alone, so the same records
give the same windows in any arrival order and after any restart.

Completeness after a restart: the I/O edge rebuilds from a point in each partition and sets
``floor_scores`` / ``floor_labels``, event times from which each stream is known complete; a window
whose rows could reach below them is not published (``windows_suppressed``) rather than published
wrong.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.drift import Calibration
from schemas.messages import SCHEMA_VERSION
from workers.monitor.compute import Metric, flag_agreement, window_metrics
from workers.monitor.join import F64, I64, Bool, DayBucket, Objs, Rows

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
FEEDBACK_DAYS = 7  # the trainer's delay window: what a model retrained today can know of a day
ARRIVALS = (("arrival_1h", HOUR_MS), ("arrival_1d", DAY_MS), ("arrival_7d", 7 * DAY_MS))
LONGEST_ARRIVAL_MS = max(w for _, w in ARRIVALS)
NO_FLOOR = -(2**62)
T_BITS = 32  # a transaction's index in its day bucket, below its day in one int64 key
T_MASK = (1 << T_BITS) - 1
Calibrations = Callable[[str], Calibration | None]


@dataclass(frozen=True)
class ScoreBatch:
    tx_id: list[str]
    card: list[str]
    version: list[str]
    ts: I64
    score: F64
    flag: Bool


@dataclass(frozen=True)
class LabelBatch:
    tx_id: list[str]
    ts: I64
    reported_at: I64
    is_fraud: I64


@dataclass(frozen=True)
class Window:
    version: str
    kind: str
    stage: str
    start: int
    end: int
    labels_before: int | None
    metrics: dict[str, Metric]
    agreement: dict[str, dict[str, Metric]] | None = None  # tx_day: flags against each other version
    @property
    def key(self) -> str:
        return f"{self.version}|{self.kind}|{iso(self.start)}"

    def record(self) -> dict[str, Any]:
        """The ModelMetrics message (schemas/monitoring.py)."""
        return {"schema_version": SCHEMA_VERSION, "model_version": self.version, "kind": self.kind,
                "stage": self.stage, "window_start": self.start, "window_end": self.end,
                "labels_before": self.labels_before, **self.metrics, "agreement": self.agreement}


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Pending:
    """Labels reported in one hour, waiting for it to close."""
    tx_id: Objs
    day: I64
    word: I64


class MonitorCore:
    def __init__(self, horizon_days: int, lateness_ms: int, calibration: Calibrations = lambda _: None) -> None:
        if horizon_days <= FEEDBACK_DAYS:
            raise ValueError(f"the horizon ({horizon_days} days) must be longer than the {FEEDBACK_DAYS}-day feedback")
        self.horizon_ms, self.lateness_ms, self.calibration = horizon_days * DAY_MS, lateness_ms, calibration
        self.buckets: dict[int, DayBucket] = {}
        self.pending: dict[int, list[_Pending]] = {}    # hour start -> labels reported in it
        self.log: dict[int, I64] = {}  # hour start -> day << T_BITS | t of the labels applied in it
        self.done: int | None = None                      # the last hour boundary closed
        self.floor_scores = self.floor_labels = NO_FLOOR
        self.counts: Counter[str] = Counter()

    # -- input ---------------------------------------------------------------------------------

    def add_scores(self, b: ScoreBatch) -> None:
        n = len(b.ts)
        self.counts["scores"] += n
        keep = np.ones(n, np.bool_) if self.done is None else b.ts >= self.done
        self.counts["scores_late"] += int(n - keep.sum())
        idx = np.flatnonzero(keep)
        if not len(idx):
            return
        day = b.ts[idx] // DAY_MS
        codes = {v: i for i, v in enumerate(sorted(set(b.version)))}
        names = list(codes)
        group = day * len(codes) + np.array([codes[b.version[i]] for i in idx.tolist()], np.int64)
        tx, card = np.array(b.tx_id, object), np.array(b.card, object)
        for g in np.unique(group).tolist():
            rows = idx[group == g]
            d = g // len(codes)
            bucket = self.buckets.setdefault(d, DayBucket(d))
            self.counts["scores_duplicate"] += bucket.add_scores(names[g % len(codes)], tx[rows].tolist(),
                                                                 b.score[rows], b.flag[rows], card[rows])

    def add_labels(self, b: LabelBatch) -> None:
        n = len(b.ts)
        self.counts["labels"] += n
        reported = b.reported_at if self.done is None else np.maximum(b.reported_at, self.done)
        self.counts["labels_late"] += int((reported != b.reported_at).sum())
        day = b.ts // DAY_MS
        keep = reported < (day + 1) * DAY_MS + self.horizon_ms
        self.counts["labels_beyond_horizon"] += int(n - keep.sum())
        word = 2 * b.reported_at + b.is_fraud
        hour = reported - reported % HOUR_MS
        tx = np.array(b.tx_id, object)
        for h in np.unique(hour[keep]).tolist():
            sel = keep & (hour == h)
            self.pending.setdefault(h, []).append(_Pending(tx[sel], day[sel], word[sel]))

    # -- closing -------------------------------------------------------------------------------

    def advance(self, score_wm: int | None, label_wm: int | None, max_steps: int | None = None) -> list[Window]:
        """Close the hour boundaries the clock has passed (at most ``max_steps`` of them: the caller's event
        loop gets a turn between calls); the windows they close, in order."""
        last = self._last(score_wm, label_wm)
        if last is None:
            return []
        if self.done is None:
            first = min([*self.pending, *(d * DAY_MS for d in self.buckets)], default=None)
            if first is None:
                return []
            self.done = first - first % HOUR_MS
        out: list[Window] = []
        steps = 0
        while self.done < last and (max_steps is None or steps < max_steps):
            out += self._step(self.done + HOUR_MS)
            steps += 1
        return out

    def behind(self, score_wm: int | None, label_wm: int | None) -> bool:
        """Whether ``advance`` has hours left to close."""
        last = self._last(score_wm, label_wm)
        return last is not None and self.done is not None and self.done < last

    def _last(self, score_wm: int | None, label_wm: int | None) -> int | None:
        if score_wm is None or label_wm is None:
            return None
        clock = min(score_wm, label_wm) - self.lateness_ms
        return clock - clock % HOUR_MS

    def _step(self, h: int) -> list[Window]:
        self._apply(h)
        out = [w for kind, width in ARRIVALS for w in self._arrival(h, kind, width)]
        if h % DAY_MS == 0:
            ended = h // DAY_MS - 1
            out += self._tx_day(ended, "provisional", None)
            out += self._tx_day(ended - FEEDBACK_DAYS, "feedback", h)
            out += self._tx_day(ended - self.horizon_ms // DAY_MS, "final", h)
            for d in [d for d in self.buckets if (d + 1) * DAY_MS + self.horizon_ms + LONGEST_ARRIVAL_MS <= h]:
                del self.buckets[d]
        self.log.pop(h - LONGEST_ARRIVAL_MS, None)  # the next window starts an hour later
        self.done = h
        return out

    def _apply(self, h: int) -> None:
        """Join the labels reported in the hour ending at ``h`` to their scored transactions."""
        days: list[int] = []
        ts: list[int] = []
        for chunk in self.pending.pop(h - HOUR_MS, []):
            for tx, d, w in zip(chunk.tx_id.tolist(), chunk.day.tolist(), chunk.word.tolist(), strict=True):
                bucket = self.buckets.get(d)
                t = None if bucket is None else bucket.label(tx, w)
                if t is None:
                    self.counts["labels_unmatched"] += 1
                else:
                    days.append(d)
                    ts.append(t)
        self.counts["labels_joined"] += len(ts)
        if ts:
            self.log[h - HOUR_MS] = (np.array(days, np.int64) << T_BITS) | np.array(ts, np.int64)

    def _arrival(self, h: int, kind: str, width: int) -> list[Window]:
        parts = [self.log[s] for s in range(h - width, h, HOUR_MS) if s in self.log]
        if not parts:
            return []
        if h - width < self.floor_labels or h - width - self.horizon_ms - DAY_MS < self.floor_scores:
            self.counts["windows_suppressed"] += 1
            return []
        keys = np.unique(np.concatenate(parts))  # a transaction labelled twice counts once
        day = keys >> T_BITS
        per_version: dict[str, list[Rows]] = {}
        bounds = np.flatnonzero(np.diff(day)) + 1  # sorted keys: each day's transactions are one run
        for run in np.split(keys, bounds):
            bucket = self.buckets[int(run[0] >> T_BITS)]
            for version in bucket.versions:
                rows = bucket.rows(version, run & T_MASK)
                if rows is not None:
                    per_version.setdefault(version, []).append(rows)
        return [Window(v, kind, "closed", h - width, h, h,
                       window_metrics(Rows.concat(rs), self.calibration(v), scored=False, labelled=True))
                for v, rs in sorted(per_version.items())]

    def _tx_day(self, day: int, stage: str, labels_before: int | None) -> list[Window]:
        bucket = self.buckets.get(day)
        if bucket is None:
            return []
        floor = self.floor_scores if labels_before is None else max(self.floor_scores, self.floor_labels)
        if day * DAY_MS < floor:
            self.counts["windows_suppressed"] += 1
            return []
        out = []
        for version in sorted(bucket.versions):
            rows = bucket.rows(version)
            if rows is not None:
                metrics = window_metrics(rows, self.calibration(version), scored=True,
                                         labelled=labels_before is not None, card_day=day)
                out.append(Window(version, "tx_day", stage, day * DAY_MS, (day + 1) * DAY_MS, labels_before,
                                  metrics, flag_agreement(bucket, version)))
        return out

    # -- introspection -------------------------------------------------------------------------

    def sizes(self) -> dict[str, int]:
        rows = [b.sizes() for b in self.buckets.values()]
        return {"days": len(self.buckets), "score_rows": sum(r for r, _ in rows),
                "label_words": sum(w for _, w in rows),
                "pending_labels": sum(len(c.word) for cs in self.pending.values() for c in cs),
                "arrival_log": sum(len(keys) for keys in self.log.values())}
