"""Live time: event time = the wall clock, as production sees it (``python -m ops.loadgen --live``).

The compressed replay (``ops.loadgen.replay``) sends a history's own event times as fast as the
schedule allows, so a simulated day passes every second or so. Live mode instead:

1. **history, shifted to end now.** Transactions ``start:split`` of the history (the first
   ``--history-days`` days) are shifted by one constant so that the last one's ``ts`` is *now*
   (the wall clock plus ``--clock-offset-ms``), and sent at once, unpaced, in event-time order, as
   warm-up: their ``ts`` lie in the past, as a real history's would. Their labels go with them when
   their shifted ``reported_at`` is already past, at that place in event time; the others are
   **held back** and sent when the clock reaches their ``reported_at``.
2. **live phase.** The transactions that follow in the history (``split:``) are sent at the
   schedule's pace (``--rate`` / ``--steps``, else unpaced), each re-stamped with ``ts`` = the clock
   at send. A label of a live transaction keeps its original report delay: ``reported_at`` = the new
   ``ts`` + (its ``reported_at`` - its ``ts`` in the history); it is sent when the clock reaches
   that, if the run still goes on then.

The clock is ``time.time()`` plus ``clock_offset_ms``; every record's Kafka timestamp is the plain
wall clock at send (the producer's). Labels held back, or of live transactions, that are not due
when the live phase ends are not sent (``labels_not_due`` in the summary). Labels are sent at the
history's own rate of reports (a population of 1 000 customers reports ~1 800 labels a day, ~1 a
minute), not one per transaction sent as the compressed replay does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ops.loadgen.replay import LABEL, TX, Event, label_value, transaction_value
from ops.loadgen.schedule import Schedule
from ops.loadgen.send import Meter, ProducerOptions, Progress, Sink, Summary, make_sink, send
from trainer.simulate import History, Labels

DAY_MS = 86_400_000
HISTORY_DAYS = 37  # the state horizon: customers need 30 days, terminals 7 (feedback delay) + 30
Hold = Callable[[dict[str, Any]], None]  # called with the history's summary once it is acknowledged


def first_index_of_day(h: History, day: int) -> int:
    """Index of the first transaction on or after UTC day ``day`` counted from the history's first day."""
    if len(h) == 0:
        return 0
    return int(np.searchsorted(h.ts, int(h.ts[0]) - int(h.ts[0]) % DAY_MS + day * DAY_MS))


def now_ms(offset_ms: int = 0) -> int:
    """The live clock: wall-clock epoch milliseconds plus ``offset_ms``."""
    return time.time_ns() // 1_000_000 + offset_ms


def label_rows(h: History, labels: Labels) -> npt.NDArray[np.int64]:
    """For each label, the index of its transaction in ``h`` (-1 when ``h`` has no such tx_id)."""
    if len(h) == 0 or len(labels) == 0:
        return np.full(len(labels), -1, dtype=np.int64)
    order = np.argsort(h.tx_id, kind="stable")
    ids = h.tx_id[order]
    pos = np.minimum(np.searchsorted(ids, labels.tx_id), len(ids) - 1)
    return np.where(ids[pos] == labels.tx_id, order[pos], -1).astype(np.int64)


@dataclass(frozen=True)
class LabelRow:
    """A label of a live transaction: its report delay and its own fields."""

    delay_ms: int
    is_fraud: int


@dataclass
class LivePlan:
    """What ``send_live`` sends: the shifted history, the labels held back, the live transactions."""

    h: History
    now_ms: int                    # the clock when the plan was made: the history's last ts
    shift_ms: int                  # added to the history's ts and reported_at
    start: int
    split: int                     # first live transaction (index in ``h``)
    stop: int                      # one past the last live transaction
    history: list[Event]           # history transactions + labels reported by ``now_ms``, in event time
    held: list[tuple[int, Event]]  # (shifted reported_at, label) reported after ``now_ms``, in report order
    live_labels: dict[int, list[LabelRow]] = field(default_factory=dict)  # live tx index -> its labels

    @property
    def history_transactions(self) -> int:
        return self.split - self.start

    @property
    def live_transactions(self) -> int:
        return self.stop - self.split


def plan(h: History, labels: Labels | None, now: int, start: int = 0, split: int | None = None,
         stop: int | None = None) -> LivePlan:
    """Shift transactions ``start:split`` (the history) to end at ``now``; ``split:stop`` go live."""
    n = len(h)
    split = n if split is None else max(start, min(split, n))
    stop = n if stop is None else max(split, min(stop, n))
    shift = now - int(h.ts[split - 1]) if split > start else 0
    hist: list[Event] = [
        Event(int(h.ts[i]) + shift, TX, str(h.customer_id[i]).encode(),
              transaction_value(str(h.tx_id[i]), int(h.ts[i]) + shift, str(h.customer_id[i]),
                                str(h.terminal_id[i]), int(h.amount_cents[i])))
        for i in range(start, split)]
    held: list[tuple[int, Event]] = []
    live: dict[int, list[LabelRow]] = {}
    if labels is not None and len(labels):
        rows = label_rows(h, labels)
        reported = np.asarray(labels.reported_at, dtype=np.int64)
        lab_ts = np.asarray(labels.ts, dtype=np.int64)
        for j in np.flatnonzero((rows >= start) & (rows < split)):
            r = int(reported[j]) + shift
            e = Event(r, LABEL, str(labels.terminal_id[j]).encode(),
                      label_value(str(labels.tx_id[j]), str(labels.customer_id[j]), str(labels.terminal_id[j]),
                                  int(lab_ts[j]) + shift, int(labels.is_fraud[j]), r))
            if r <= now:
                hist.append(e)
            else:
                held.append((r, e))
        for j in np.flatnonzero((rows >= split) & (rows < stop)):
            live.setdefault(int(rows[j]), []).append(
                LabelRow(max(int(reported[j]) - int(lab_ts[j]), 0), int(labels.is_fraud[j])))
    hist.sort(key=lambda e: (e.time_ms, e.kind))
    held.sort(key=lambda x: x[0])  # stable: ties keep the labels' own (reported_at, tx_id) order
    return LivePlan(h, now, shift, start, split, stop, hist, held, live)


def send_live(bootstrap: str, tx_topic: str, label_topic: str, p: LivePlan, schedule: Schedule,
              opts: ProducerOptions | None = None, count: int | None = None, duration_s: float | None = None,
              clock_offset_ms: int = 0, hold: Hold | None = None, progress: Progress | None = None,
              history_progress: Progress | None = None, progress_every_s: float = 0.25) -> Summary:
    """The history at once (acknowledged), then ``hold`` (if any), then the live phase.

    The summary counts the live phase (``transactions``, ``labels``, ``seconds``, steps); ``live``
    holds the history's counts and the clock's facts. ``count``/``duration_s``/the schedule bound the
    live phase only."""
    opts = opts or ProducerOptions()
    hist = send(bootstrap, tx_topic, label_topic, p.history, Schedule(), opts, progress=history_progress) \
        if p.history else Summary(client=opts.client)
    h = p.h
    info: dict[str, Any] = {
        "clock_offset_ms": clock_offset_ms, "shift_ms": p.shift_ms, "history_end_ms": p.now_ms,
        "history_transactions": hist.transactions, "history_labels": hist.labels,
        "history_seconds": hist.seconds,
        "history_first_ts": int(h.ts[p.start]) + p.shift_ms if p.split > p.start else None,
        "history_last_ts": int(h.ts[p.split - 1]) + p.shift_ms if p.split > p.start else None,
        "labels_held": len(p.held), "live_available": p.live_transactions}
    if hold is not None:
        hold(info)
    out = asyncio.run(_live(make_sink(bootstrap, opts), opts.client, tx_topic, label_topic, p, schedule, count,
                            duration_s, clock_offset_ms, progress, progress_every_s))
    assert out.live is not None
    out.live = {**info, **out.live}
    return out


async def _live(sink: Sink, client: str, tx_topic: str, label_topic: str, p: LivePlan, schedule: Schedule,
                count: int | None, duration_s: float | None, offset_ms: int, progress: Progress | None,
                progress_every_s: float) -> Summary:
    h = p.h
    seq = itertools.count()
    # (reported_at, tie-break, from the history?, key, value): a min-heap of the labels not yet due.
    pending: list[tuple[int, int, bool, bytes, bytes]] = [(r, next(seq), True, e.key, e.value) for r, e in p.held]
    heapq.heapify(pending)
    held_sent = live_labels = 0
    first_ts = last_ts = None
    try:
        await sink.start([tx_topic, label_topic])
        m = Meter(schedule, client, progress, progress_every_s)
        while True:
            n = m.out.transactions
            now = m.elapsed()
            due = schedule.due(n) if n < p.live_transactions and (count is None or n < count) else None
            if due is not None and duration_s is not None and max(now, due) >= duration_s:
                due = None
            if due is None:
                break
            wall = now_ms(offset_ms)
            if pending and pending[0][0] <= wall:
                _, _, from_history, key, value = heapq.heappop(pending)
                await sink.send(label_topic, key, value)
                m.label(len(key) + len(value))
                if from_history:
                    held_sent += 1
                else:
                    live_labels += 1
                continue
            if due > now:
                wait = due - now
                if pending:
                    wait = min(wait, (pending[0][0] - wall) / 1000)
                await sink.idle()
                await asyncio.sleep(max(wait, 0.0))
                continue
            i = p.split + n
            ts = now_ms(offset_ms)
            cust, term, tx_id = str(h.customer_id[i]), str(h.terminal_id[i]), str(h.tx_id[i])
            key = cust.encode()
            value = transaction_value(tx_id, ts, cust, term, int(h.amount_cents[i]))
            await sink.send(tx_topic, key, value)
            first_ts = ts if first_ts is None else first_ts
            last_ts = ts
            m.transaction(due, now, len(key) + len(value))
            for lab in p.live_labels.get(i, ()):
                heapq.heappush(pending, (ts + lab.delay_ms, next(seq), False, term.encode(),
                                         label_value(tx_id, cust, term, ts, lab.is_fraud, ts + lab.delay_ms)))
            await m.tick()
        await m.finish(sink)
    finally:
        await sink.close()
    out = m.summary()
    not_due_history = sum(1 for x in pending if x[2])
    out.live = {"held_labels_sent": held_sent, "live_labels_sent": live_labels,
                "labels_not_due": len(pending), "held_labels_not_due": not_due_history,
                "live_first_ts": first_ts, "live_last_ts": last_ts}
    return out
