"""The worker's data path between the Faust edge and the broker: admit, then flush.

``admit(records)`` never waits for terminal finality: it decodes, validates and applies the batch
to partition state (so every partition's watermark keeps advancing and its closed day counts are
published), and queues each record per partition, in offset order. ``flush()`` takes, per
partition, the longest prefix of that queue that can be decided now — dead letters, and
transactions whose terminal buckets are final (or have waited longer than the bound, which
dead-letters them) — scores them in one ONNX Runtime call, publishes every output and waits for
the broker's acknowledgements, and only then returns those records for the caller to ack, in
offset order. A partition whose features wait for another partition therefore never blocks the
partitions it waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.bundle import Bundle
from schemas.errors import ScoringError
from schemas.features import DAY_MS
from schemas.validate import Reject
from workers.batch import Admitted, Record, admit_batch, dead_letter_headers, feature_rows, needed_day, score_message
from workers.config import Settings
from workers.metrics import Metrics
from workers.publish import Out, Publisher
from workers.score import Scorer
from workers.services import publish_tx_closures, rebuild_partition
from workers.state import Partial, TxPartition
from workers.stats import StatsWindow
from workers.terminals import TerminalTable

log = logging.getLogger("fraudstream.worker")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Pending:
    record: Record
    admitted: Admitted | None
    reject: Reject | None
    since: float               # monotonic time it was queued


class Runner:
    def __init__(self, s: Settings, bundle: Bundle, scorer: Scorer, table: TerminalTable, publisher: Publisher,
                 metrics: Metrics | None = None) -> None:
        self.s, self.bundle, self.scorer, self.table, self.publisher = s, bundle, scorer, table, publisher
        self.metrics = metrics if metrics is not None else Metrics()
        # Per partition, the offset after the last record whose outputs were acknowledged (what the
        # direct consumer commits); from the first record seen after the assignment until then.
        self.processed: dict[int, int] = {}
        self.states: dict[int, TxPartition] = {}
        self.pending: dict[int, deque[Pending]] = {}
        self.stats = StatsWindow()
        self.threshold = bundle.threshold
        self.model_version = bundle.model_version
        self.rebuilds: list[tuple[int, int, float]] = []  # (partition, records replayed, seconds)
        self.lock = asyncio.Lock()
        # Set when a flush may decide something new: a record was queued, or a watermark of the
        # terminal table moved (finality may have advanced). The flusher waits on it, or on the
        # next --terminal-wait-s deadline, instead of polling.
        self.wake = asyncio.Event()
        table.on_mark = self.wake.set

    def pending_count(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def waiting(self, partition: int) -> bool:
        """Whether the partition's next record waits for terminal finality, still within --terminal-wait-s."""
        q = self.pending.get(partition)
        if not q:
            return False
        item = q[0]
        if item.admitted is None:
            return False
        final = self.table.ready_through()
        blocked = final is None or needed_day(item.admitted.tx) > final
        return blocked and time.monotonic() - item.since < self.s.terminal_wait_s

    def flow(self, paused: set[int], limit: int) -> tuple[set[int], set[int]]:
        """Backpressure per partition: (to pause, to resume). A partition whose queue passed ``limit``
        stops fetching until it is below half; the others keep fetching, because a queue usually
        waits for *another* partition's watermark, and a global stop would starve exactly that one."""
        sizes = {p: len(q) for p, q in self.pending.items()}
        pause = {p for p, n in sizes.items() if n > limit and p not in paused}
        resume = {p for p in paused if sizes.get(p, 0) <= limit // 2}
        return pause, resume

    async def ensure_state(self, records: list[Record]) -> None:
        """Partition state must continue exactly where the batch starts, else rebuild it."""
        first: dict[int, int] = {}
        for r in records:
            first.setdefault(r.partition, r.offset)
        for p, offset in first.items():
            state = self.states.get(p)
            if state is None or state.next_offset != offset:
                t0 = time.monotonic()
                self.states[p], n = await rebuild_partition(self.s, p, offset)
                self.pending.pop(p, None)  # anything queued from before is redelivered from `offset` on
                self.processed[p] = offset
                dt = time.monotonic() - t0
                self.rebuilds.append((p, n, dt))
                log.info("partition %d: state rebuilt from %d records up to offset %d in %.2fs", p, n, offset, dt)
            self.processed.setdefault(p, offset)

    def drop_partitions(self, partitions: set[int]) -> None:
        for p in partitions:
            self.states.pop(p, None)
            self.pending.pop(p, None)
            self.processed.pop(p, None)

    async def admit(self, records: list[Record]) -> None:
        async with self.lock:
            self.stats.record_in(len(records))
            self.metrics.record_consumed(len(records))
            await self.ensure_state(records)
            adm = admit_batch(records, self.states, self.s.max_future_ms)
            await publish_tx_closures(self.publisher, self.s, self.table, [
                (p, [partial for q, partial in adm.closures if q == p], self.states[p].closed_through)
                for p in sorted({r.partition for r in records})])
            t = time.monotonic()
            ok = {id(a.record): a for a in adm.admitted}
            bad = {id(r): rj for r, rj in adm.dead}
            for r in records:
                self.pending.setdefault(r.partition, deque()).append(
                    Pending(r, ok.get(id(r)), bad.get(id(r)), t))
            self.wake.set()

    def next_wait_s(self) -> float | None:
        """Seconds until the first queued transaction's --terminal-wait-s runs out (a flush then dead-letters
        it); None when nothing waits."""
        heads = [q[0].since for q in self.pending.values() if q]
        if not heads:
            return None
        return max(min(heads) + self.s.terminal_wait_s - time.monotonic(), 0.0)

    def _decidable(self) -> list[Pending]:
        """Per partition, the queue prefix that can be decided now (removed from the queues)."""
        final = self.table.ready_through()
        deadline = time.monotonic() - self.s.terminal_wait_s
        out: list[Pending] = []
        for q in self.pending.values():
            while q:
                item = q[0]
                if item.admitted is not None and not (final is not None and needed_day(item.admitted.tx) <= final):
                    if item.since > deadline:
                        break
                    item.reject = Reject("terminal_state_not_final",
                                         f"terminal buckets for day {needed_day(item.admitted.tx)} were not final "
                                         f"within {self.s.terminal_wait_s:.0f}s (ready through {final})")
                    item.admitted = None
                    log.warning("%s: transactions closed %s, labels closed %s", item.reject.detail, self.table.tx_wm,
                                self.table.label_wm)
                out.append(q.popleft())
        return out

    async def infer(self, admitted: list[Admitted]) -> npt.NDArray[np.float32] | ScoringError:
        rows = feature_rows(admitted, self.states, self.table)
        backoff = self.s.retry_backoff_ms / 1000
        for attempt in range(self.s.retries + 1):
            t0 = time.perf_counter()
            try:
                return self.scorer.score(rows)
            except ScoringError as exc:
                if attempt == self.s.retries or not exc.retriable:
                    return exc
                log.warning("scoring failed (%s), retry %d/%d in %.2fs", exc, attempt + 1, self.s.retries, backoff)
                await asyncio.sleep(backoff)
                backoff *= 2
            finally:
                self.metrics.record_inference(len(rows), time.perf_counter() - t0)
        raise AssertionError("unreachable")

    async def flush(self) -> list[Record]:
        """Decide, score and publish what can be; return the records now safe to ack (offset order per partition)."""
        async with self.lock:
            items = self._decidable()
            if not items:
                return []
            await self._publish(items)
            self._forget_old({i.record.partition for i in items})
            self.processed.update({i.record.partition: i.record.offset + 1 for i in items})  # last per partition
            return [i.record for i in items]

    async def close_idle(self, partitions: set[int]) -> int:
        """Close days on caught-up partitions that have gone quiet, through the oldest watermark of the
        *other* transactions partitions: a partition without traffic would otherwise hold back the
        finality every other partition's transactions wait for (and they would be dead-lettered after
        --terminal-wait-s). A transaction that later arrives for a day closed this way is dead-lettered
        as late. Returns how many partitions moved."""
        async with self.lock:
            closures: list[tuple[int, list[Partial], int | None]] = []
            for p in sorted(partitions):
                # The others that have a watermark: several quiet partitions must not wait for each other
                # (each is bounded by the partitions that do see traffic, directly or through another).
                others = [wm for q, wm in self.table.tx_wm.items() if q != p]
                if not others:
                    continue
                state = self.states.get(p)
                if state is None:  # nothing consumed since the assignment: the first batch rebuilds it anyway
                    state = self.states[p] = TxPartition(p, self.s.lateness_ms)
                before = state.closed_through
                partials = state.close_days(idle_through=min(others))
                if state.closed_through != before:
                    closures.append((p, partials, state.closed_through))
            if closures:
                log.info("idle partitions closed through: %s", {p: c for p, _, c in closures})
                await publish_tx_closures(self.publisher, self.s, self.table, closures)
            return len(closures)

    async def _publish(self, items: list[Pending]) -> None:
        s, t = self.s, self.s.topics
        ready = [i.admitted for i in items if i.admitted is not None]
        dead = [(i.record, i.reject) for i in items if i.reject is not None]
        scored_at = now_ms()
        t_inf = time.perf_counter()
        scores = await self.infer(ready) if ready else np.zeros(0, np.float32)
        inference_s = time.perf_counter() - t_inf
        if isinstance(scores, ScoringError):
            dead += [(a.record, Reject("scoring_failed", str(scores))) for a in ready]
            ready, scores = [], np.zeros(0, np.float32)
        outputs: list[Out] = []
        flagged = 0
        for a, score in zip(ready, scores.tolist(), strict=True):
            msg = score_message(a.tx, a.record, score, self.threshold, self.model_version, s.worker_id, scored_at)
            key = a.tx.tx_id.encode()
            if s.scores_enabled:
                outputs.append((t.scores, key, msg, None))
            if score >= self.threshold:
                flagged += 1
                outputs.append((t.flags, key, msg, None))
        n_scored_outputs = len(outputs)
        for rec, reject in dead:
            headers = dead_letter_headers(rec.partition, rec.offset, reject, t.transactions, s.worker_id)
            outputs.append((t.dlq, rec.key, rec.value or b"", headers))
        acked = await self.publisher.send_all(outputs)
        e2e_ms = None
        if ready:
            # End to end per scored record: input record timestamp -> broker ack of its output.
            done = max(acked[:n_scored_outputs]) if n_scored_outputs else now_ms()
            ts_in = np.fromiter((a.record.timestamp for a in ready), dtype=np.int64, count=len(ready))
            e2e_ms = np.maximum(done - ts_in, 0)
            self.stats.record_batch(len(ready), inference_s, queue_ms=np.maximum(scored_at - ts_in, 0),
                                    e2e_ms=e2e_ms, flagged=flagged, scored=len(ready))
        self.metrics.record_outputs(len(ready), flagged, e2e_ms, (reject.reason for _, reject in dead))
        self.stats.record_dead_lettered(len(dead))
        self.stats.record_redelivered(sum(1 for a in ready if not a.new))

    def stream_clock(self) -> int | None:
        """The stream's event-time clock as this worker knows it: its partitions' newest event time less the
        lateness, or the start of the day after the last one every partition closed (None: unknown)."""
        mine = [st.max_ts - st.lateness_ms for st in self.states.values() if st.max_ts >= 0]
        final = self.table.tx_final_through()
        known = mine + ([(final + 1) * DAY_MS] if final is not None else [])
        return max(known) if known else None

    def _pending_min_ts(self, p: int) -> int | None:
        """A lower bound of the event times queued on partition ``p``: a queued transaction's successors
        are at most the lateness older than the first."""
        first = next((i.admitted.tx.ts for i in self.pending.get(p, ()) if i.admitted is not None), None)
        return None if first is None else first - self.s.lateness_ms

    def _forget_old(self, partitions: set[int]) -> None:
        for p in partitions:
            state = self.states.get(p)
            if state is not None:
                state.forget_old(self._pending_min_ts(p))

    def lows(self) -> dict[int, int]:
        """Per partition, the oldest day a restart from its last commit may score (``TxPartition.low_day``);
        call it after a commit."""
        out: dict[int, int] = {}
        for p, state in self.states.items():
            low = state.low_day(self._pending_min_ts(p))
            if low is not None:
                out[p] = low
        return out

    def state_sizes(self, extra: dict[str, int] | None = None) -> dict[str, int]:
        """Entries in every per-key structure of this worker (exported as metrics and in the stats topic)."""
        sizes: dict[str, int] = {"pending": self.pending_count(), **self.table.sizes(), **(extra or {})}
        for state in self.states.values():
            for k, v in state.sizes().items():
                sizes[k] = sizes.get(k, 0) + v
        return sizes

    def stats_message(self, extra_sizes: dict[str, int] | None = None) -> dict[str, object]:
        sizes = self.state_sizes(extra_sizes)
        self.metrics.set_state(sizes)
        return self.stats.snapshot(self.s.worker_id, self.scorer.provider, self.model_version, now_ms(), sizes)
