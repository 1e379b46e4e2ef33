"""Partition-local online state: customers of one transactions partition, and label partials.

``TxPartition`` keeps, for one partition of the transactions topic: each customer's history
(the shared ``schemas.features.CustomerHistory``), the tx ids seen (offset, ts) for
idempotency, the event-time watermark, and the per-(day, terminal) counts of distinct
transactions for days not yet closed. A day closes when the watermark (newest ``ts`` minus the
allowed lateness) has passed it; its counts are then published to the terminal-days topic and
never change again.

``LabelPartition`` does the same for one partition of the labels topic: fraud tx ids per
(day, terminal), published when the label watermark passes the day.
"""

from __future__ import annotations

from schemas.features import CUSTOMER_HORIZON_MS, DAY_MS, CustomerHistory
from schemas.validate import Reject, Tx

Partial = tuple[int, dict[str, int]]  # (day, {terminal_id: count})


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
        self.customers: dict[str, CustomerHistory] = {}
        self.seen: dict[str, tuple[int, int]] = {}
        self.seen_days: dict[int, list[str]] = {}  # event day -> tx ids first seen that day (for eviction)
        self.max_ts = -1
        self.open_days: dict[int, dict[str, int]] = {}
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
        history = self.customers.get(tx.customer_id)
        if history is None:
            history = self.customers[tx.customer_id] = CustomerHistory()
        history.add(tx.ts, tx.tx_id, tx.cents)
        self.seen[tx.tx_id] = (offset, tx.ts)
        day = tx.ts // DAY_MS
        ids = self.seen_days.get(day)
        if ids is None:
            ids = self.seen_days[day] = []
        ids.append(tx.tx_id)
        counts = self.open_days.setdefault(day, {})
        counts[tx.terminal_id] = counts.get(tx.terminal_id, 0) + 1
        if tx.ts > self.max_ts:
            self.max_ts = tx.ts
        return True

    def evict_for(self, tx: Tx) -> None:
        """After ``tx`` is scored: its customer's later transactions arrive no earlier than ``ts - lateness``,
        so their 30-day windows never reach before this cut. (Eviction at admission would be too early:
        a transaction may wait for terminal finality while later ones of its customer are admitted.)"""
        self.customers[tx.customer_id].evict_before(tx.ts - CUSTOMER_HORIZON_MS - self.lateness_ms)

    def close_days(self, idle_through: int | None = None) -> list[Partial]:
        """Close the days the watermark has passed — or, for a caught-up partition that has gone
        quiet, the days through ``idle_through`` — and return their counts (to publish), oldest first."""
        through = closing_through(self.max_ts, self.lateness_ms, self.closed_through, idle_through)
        if through is None:
            return []
        self.closed_through = through
        done = sorted(d for d in self.open_days if d <= through)
        # Forget tx ids whole days at a time, once the entire day is older than the horizon: cost
        # proportional to what is evicted (rebuilding the dict cost ~100 ms a day close at 75 k ids).
        horizon_day = (self.max_ts - CUSTOMER_HORIZON_MS - self.lateness_ms) // DAY_MS
        for d in [d for d in self.seen_days if d < horizon_day]:
            for tx_id in self.seen_days.pop(d):
                del self.seen[tx_id]
        return [(d, self.open_days.pop(d)) for d in done]


class LabelPartition:
    def __init__(self, partition: int, lateness_ms: int) -> None:
        self.partition = partition
        self.lateness_ms = lateness_ms
        self.frauds: dict[int, dict[str, set[str]]] = {}
        self.max_ts = -1
        self.closed_through: int | None = None

    def admit(self, tx_id: str, terminal_id: str, ts: int, is_fraud: bool) -> Reject | None:
        day = ts // DAY_MS
        if self.closed_through is not None and day <= self.closed_through:
            return Reject("late", f"label for ts {ts} arrived after its day was closed")
        bucket = self.frauds.setdefault(day, {}).setdefault(terminal_id, set())
        if is_fraud:
            bucket.add(tx_id)
        else:
            bucket.discard(tx_id)
        if ts > self.max_ts:
            self.max_ts = ts
        return None

    def close_days(self, idle_through: int | None = None) -> list[Partial]:
        """Close the days the label watermark (or, when idle, ``idle_through``) has passed."""
        through = closing_through(self.max_ts, self.lateness_ms, self.closed_through, idle_through)
        if through is None:
            return []
        self.closed_through = through
        done = sorted(d for d in self.frauds if d <= through)
        return [(d, {t: len(ids) for t, ids in self.frauds.pop(d).items() if ids}) for d in done]
