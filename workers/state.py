"""Partition-local online state: customers of one transactions partition, and label partials.

``TxPartition`` keeps, for one partition of the transactions topic: each customer's history
(columns: ``workers.customers.CustomerStore``), the tx ids seen (offset, ts) for
idempotency, the event-time watermark, and the per-(day, terminal) counts of distinct
transactions for days not yet closed. A day closes when the watermark (newest ``ts`` minus the
allowed lateness) has passed it; its counts are then published to the terminal-days topic and
never change again.

``LabelPartition`` does the same for one partition of the labels topic, in *report* time: the
labels of each open report slot (``schemas.features.report_slot``), and for each labelled
transaction whether it counts as a fraud as of the last closed slot. A slot closes when the
partition's report-time watermark (newest ``reported_at`` less the allowed lateness, or the
stream's clock for a quiet partition) passes its cut-off; its changes of fraud counts per
(terminal, day) are then published and never change again.

Bounds (every per-key structure, and when it is dropped):
- customers: a customer whose newest transaction is older than 30 days plus the lateness behind
  the partition's newest event is forgotten with the last day of its transactions;
- seen tx ids: whole event days at a time, once the day is older than that horizon;
- open day counts: popped when their day closes;
- label slots: popped when they close; labelled frauds: dropped once their transaction day is
  older than the terminal horizon (37 days) before the last closed slot, when no window reaches it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from schemas.features import (
    CUSTOMER_HORIZON_MS,
    DAY_MS,
    TERMINAL_HORIZON_DAYS,
    report_slot,
    slots_closed_through,
)
from schemas.validate import Label, Reject, Tx
from workers.customers import CustomerStore, Windows

Partial = tuple[int, dict[str, int]]  # (day, {terminal_id: count})
LabelPartial = tuple[int, dict[str, dict[int, int]]]  # (report slot, {terminal_id: {day: change of frauds}})


def closing_through(max_ts: int, lateness_ms: int, closed_through: int | None, idle_through: int | None) -> int | None:
    """The last day to close now: the one before the watermark's (newest event time less the lateness),
    or ``idle_through`` for a quiet partition when that is later; None when no new day closes."""
    through = (max_ts - lateness_ms) // DAY_MS - 1 if max_ts >= 0 else None
    if idle_through is not None and (through is None or idle_through > through):
        through = idle_through
    if through is None or (closed_through is not None and through <= closed_through):
        return None
    return through


class TxPartition:
    def __init__(self, partition: int, lateness_ms: int) -> None:
        self.partition = partition
        self.lateness_ms = lateness_ms
        self.customers = CustomerStore()
        self._new: list[Tx] = []  # admitted, not yet in the customer store (added a batch at a time)
        self.seen: dict[str, tuple[int, int]] = {}
        self.seen_days: dict[int, list[tuple[str, str]]] = {}  # event day -> (tx id, customer) first seen that day
        self.max_ts = -1
        self.open_days: dict[int, Counter[str]] = {}  # day -> transactions per terminal
        self.closed_through: int | None = None
        self.next_offset: int | None = None

    def admit(self, tx: Tx, offset: int) -> Reject | bool:
        """Apply a valid transaction. True: new; False: a redelivery of the same offset; or a Reject."""
        seen = self.seen.get(tx.tx_id)
        if seen is not None:
            if seen[0] == offset:
                return False
            return Reject("duplicate_tx_id", f"tx_id {tx.tx_id!r} was first seen at offset {seen[0]}")
        if self.max_ts >= 0 and tx.ts < self.max_ts - self.lateness_ms:
            return Reject("late", f"ts {tx.ts} is {(self.max_ts - tx.ts) / 1000:.0f}s behind this partition's "
                                  f"newest event; allowed lateness {self.lateness_ms / 1000:.0f}s")
        if self.closed_through is not None and tx.ts // DAY_MS <= self.closed_through:
            # Only after an idle close (else the check above caught it): the day's counts are final.
            return Reject("late", f"ts {tx.ts} falls on day {tx.ts // DAY_MS}, which this partition closed "
                                  f"(through day {self.closed_through}) while it was idle")
        self._new.append(tx)
        self.seen[tx.tx_id] = (offset, tx.ts)
        day = tx.ts // DAY_MS
        ids = self.seen_days.get(day)
        if ids is None:
            ids = self.seen_days[day] = []
        ids.append((tx.tx_id, tx.customer_id))
        counts = self.open_days.get(day)
        if counts is None:
            counts = self.open_days[day] = Counter()
        counts[tx.terminal_id] += 1
        if tx.ts > self.max_ts:
            self.max_ts = tx.ts
        return True

    def admit_many(self, txs: list[Tx], offsets: list[int]) -> bool:
        """Apply valid transactions in one go when none is a redelivery, a duplicate, late or of a closed
        day — what ``admit`` would then do record by record; False (and no change) otherwise."""
        ids = [t.tx_id for t in txs]
        if not self.seen.keys().isdisjoint(ids) or len(set(ids)) != len(ids):
            return False
        ts = np.fromiter((t.ts for t in txs), np.int64, len(txs))
        newest = np.maximum.accumulate(ts)
        before = np.concatenate(([self.max_ts], np.maximum(newest[:-1], self.max_ts)))
        if ((before >= 0) & (ts < before - self.lateness_ms)).any():
            return False
        days = ts // DAY_MS
        if self.closed_through is not None and int(days.min()) <= self.closed_through:
            return False
        self.seen.update(zip(ids, zip(offsets, ts.tolist(), strict=True), strict=True))
        self._new.extend(txs)
        for d in np.unique(days).tolist():
            rows = range(len(txs)) if days[0] == days[-1] == d else np.flatnonzero(days == d).tolist()
            self.seen_days.setdefault(d, []).extend((ids[i], txs[i].customer_id) for i in rows)
            counts = self.open_days.get(d)
            if counts is None:
                counts = self.open_days[d] = Counter()
            counts.update(txs[i].terminal_id for i in rows)
        self.max_ts = max(self.max_ts, int(newest[-1]))
        return True

    def sync(self) -> None:
        """Add the transactions admitted since the last call to the customer store, in one go."""
        new, self._new = self._new, []
        if new:
            store = self.customers
            store.add(store.slot_of([t.customer_id for t in new]), np.fromiter((t.ts for t in new), np.int64, len(new)),
                      np.fromiter((t.cents for t in new), np.int64, len(new)), [t.tx_id for t in new],
                      [t.terminal_id for t in new])

    def history(self, customer: str) -> list[tuple[int, str]]:
        """A customer's transactions in state, (ts, tx_id) in canonical order."""
        self.sync()
        return self.customers.history(customer)

    def windows(self, txs: list[Tx]) -> tuple[Windows, np.ndarray]:
        """The customer windows of admitted transactions (``CustomerStore.windows``), and their slots."""
        self.sync()
        store = self.customers
        slots = store.slot_of([t.customer_id for t in txs])
        wins = store.windows(slots, np.fromiter((t.ts for t in txs), np.int64, len(txs)), [t.tx_id for t in txs],
                             [t.terminal_id for t in txs])
        return wins, slots

    def evict_scored(self, slots: np.ndarray, ts: np.ndarray) -> None:
        """After these transactions are scored: their customers' later transactions arrive no earlier than
        ``ts - lateness``, so their 30-day windows never reach before that cut. (Eviction at admission would
        be too early: a transaction may wait for terminal finality while later ones of its customer are
        admitted.)"""
        self.customers.evict(slots, ts - CUSTOMER_HORIZON_MS - self.lateness_ms)

    def close_days(self, idle_through: int | None = None) -> list[Partial]:
        """Close the days the watermark has passed — or, for a caught-up partition that has gone
        quiet, the days through ``idle_through`` — and return their counts (to publish), oldest first."""
        through = closing_through(self.max_ts, self.lateness_ms, self.closed_through, idle_through)
        if through is None:
            return []
        self.closed_through = through
        done = sorted(d for d in self.open_days if d <= through)
        return [(d, dict(self.open_days.pop(d))) for d in done]

    def forget_old(self, pending_min_ts: int | None = None) -> None:
        """Forget tx ids whole days at a time once the entire day is older than the horizon (cost
        proportional to what is evicted), and with them customers whose history has emptied: no
        transaction still to be scored reads before ``cut`` — neither one to come (at most the
        lateness behind the newest) nor one admitted and still waiting (``pending_min_ts``, the
        oldest queued), which may be days behind the newest while it waits for terminal finality."""
        cut = self._oldest_to_score(pending_min_ts) - CUSTOMER_HORIZON_MS
        old = [d for d in self.seen_days if d < cut // DAY_MS]
        if not old:
            return
        self.sync()
        customers: set[str] = set()
        for d in old:
            for tx_id, customer in self.seen_days.pop(d):
                del self.seen[tx_id]
                customers.add(customer)
        slots = [s for c in customers if (s := self.customers.slots.get(c)) is not None]
        self.customers.evict(np.asarray(slots, dtype=np.int64), np.full(len(slots), cut, dtype=np.int64))

    def low_day(self, pending_min_ts: int | None) -> int | None:
        """The oldest event day a transaction not yet committed (``pending_min_ts``: the oldest queued) or
        still to come can have — what a restart from the last commit may re-score; None: unknown."""
        if self.max_ts < 0:
            return None if self.closed_through is None else self.closed_through + 1
        return self._oldest_to_score(pending_min_ts) // DAY_MS

    def _oldest_to_score(self, pending_min_ts: int | None) -> int:
        """The oldest event time a transaction still to be scored can have: one to come is at most the
        lateness behind the newest; one queued may be older (``pending_min_ts``)."""
        low = self.max_ts - self.lateness_ms
        return low if pending_min_ts is None else min(low, pending_min_ts)

    def sizes(self) -> dict[str, int]:
        self.sync()
        return {"customers": len(self.customers), "seen_tx_ids": len(self.seen),
                "customer_transactions": self.customers.entries(),
                "open_days": len(self.open_days)}


class LabelPartition:
    def __init__(self, partition: int, lateness_ms: int) -> None:
        self.partition = partition
        self.lateness_ms = lateness_ms
        self.slots: dict[int, dict[str, Label]] = {}       # open report slot -> tx_id -> its latest label there
        self.frauds: dict[int, dict[str, str]] = {}        # day -> {tx_id: terminal} counted as fraud now
        self.max_reported = -1
        self.closed_through: int | None = None              # the last closed report slot
        self.restamped = 0                                  # labels later than a closed cut-off (see admit)
        self.beyond_horizon = 0                             # labels of days no window reaches any more

    def admit(self, label: Label) -> None:
        """Apply a valid label. One reported before a cut-off this partition already closed (its producer
        was later than the allowed lateness) counts from the next open slot on: never dropped, but the
        offline features (which count it from its own slot) differ for the days in between; counted."""
        slot = report_slot(label.reported_at)
        if self.closed_through is not None and slot <= self.closed_through:
            slot = self.closed_through + 1
            self.restamped += 1
        if label.ts // DAY_MS < slot - TERMINAL_HORIZON_DAYS - 1:
            self.beyond_horizon += 1
            return
        bucket = self.slots.setdefault(slot, {})
        cur = bucket.get(label.tx_id)
        if cur is None or (label.reported_at, label.is_fraud) > (cur.reported_at, cur.is_fraud):
            bucket[label.tx_id] = label
        if label.reported_at > self.max_reported:
            self.max_reported = label.reported_at

    def close_slots(self, idle_clock_ms: int | None = None) -> list[LabelPartial]:
        """Close the report slots the watermark has passed — newest ``reported_at`` less the lateness, or
        for a caught-up partition that has gone quiet ``idle_clock_ms`` (the stream's clock less the
        lateness) — and return their changes of fraud counts, oldest first."""
        marks = [m for m in (self.max_reported - self.lateness_ms if self.max_reported >= 0 else None,
                             idle_clock_ms) if m is not None]
        if not marks:
            return []
        through = slots_closed_through(max(marks))
        if self.closed_through is not None and through <= self.closed_through:
            return []
        self.closed_through = through
        out = [(slot, self._changes(self.slots.pop(slot))) for slot in sorted(s for s in self.slots if s <= through)]
        floor = through - TERMINAL_HORIZON_DAYS - 1
        for d in [d for d in self.frauds if d < floor]:
            del self.frauds[d]
        return out

    def _changes(self, labels: dict[str, Label]) -> dict[str, dict[int, int]]:
        changes: dict[str, dict[int, int]] = {}
        for tx_id, lab in labels.items():
            day = lab.ts // DAY_MS
            frauds = self.frauds.get(day)
            was = 1 if frauds is not None and tx_id in frauds else 0
            if lab.is_fraud == was:
                continue
            if lab.is_fraud:
                self.frauds.setdefault(day, {})[tx_id] = lab.terminal_id
            elif frauds is not None:
                del frauds[tx_id]
            per_day = changes.setdefault(lab.terminal_id, {})
            per_day[day] = per_day.get(day, 0) + lab.is_fraud - was
        return changes

    def sizes(self) -> dict[str, int]:
        return {"label_open_slots": len(self.slots), "label_pending": sum(len(b) for b in self.slots.values()),
                "label_frauds": sum(len(f) for f in self.frauds.values())}
