"""The edge around the core (``workers.core``): recovery, scoring with retries, publishing, stats.

``admit(records)`` recovers the state of partitions that do not continue where the batch starts
(a replay of the partition, outside the lock that guards flushing), then queues the batch in the
core and publishes the days it closed. ``flush_start()`` takes the core's decision, scores it in
one ONNX Runtime call (retrying a failed call with backoff, then dead-lettering the batch) and
hands every output to the publisher without waiting: the returned ``InFlight`` completes when the
broker acknowledged all of them. ``complete(f)`` waits for that, records the latencies and
returns the records now safe to commit (offset order per partition). The caller completes
in-flight batches in the order they started, so the next batch is admitted and scored while the
previous one's acknowledgements are on their way, and commits still follow acknowledgements in
offset order. A partition whose features wait for another partition never blocks the partitions
it waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.bundle import Bundle
from schemas.errors import ScoringError
from schemas.features import DAY_MS
from workers.batch import Record, score_messages
from workers.config import Settings
from workers.core import Core, CoreConfig, Decision, Outputs, Pending
from workers.drift import DriftMonitor, drift_off
from workers.explain import Explainer
from workers.metrics import Metrics
from workers.ports import Out, ScorerPort, SinkPort
from workers.services import publish_tx_closures, rebuild_partition
from workers.state import TxPartition
from workers.stats import StatsWindow
from workers.terminals import TerminalTable
from workers.transact import Transactions

log = logging.getLogger("fraudstream.worker")
F32 = npt.NDArray[np.float32]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class InFlight:
    """A decided batch whose outputs are with the producer."""

    decision: Decision
    outputs: Outputs
    task: asyncio.Future[list[int]]
    scored_at: int
    inference_s: float


class Runner:
    def __init__(self, s: Settings, bundle: Bundle, scorer: ScorerPort, table: TerminalTable, publisher: SinkPort,
                 metrics: Metrics | None = None, explainer: Explainer | None = None) -> None:
        self.s, self.bundle, self.scorer, self.table, self.publisher = s, bundle, scorer, table, publisher
        self.metrics = metrics if metrics is not None else Metrics()
        self.core = Core(CoreConfig.of(s, bundle.threshold, bundle.model_version), table, explainer)
        # Per partition, the offset after the last record whose outputs were acknowledged (the
        # watchdog's "processed"); from the first record seen after the assignment until then.
        self.processed: dict[int, int] = {}
        self.stats = StatsWindow()
        self.threshold = bundle.threshold
        self.model_version = bundle.model_version
        self.drift, self.drift_off_reason = self._drift_monitor()
        self.shadow: tuple[Bundle, ScorerPort] | None = None  # scores every batch too, to the shadow topic
        self.transactions: Transactions | None = None  # exactly-once: outputs go in their partition's transaction
        self.rebuilds: list[tuple[int, int, float]] = []  # (partition, records replayed, seconds)
        self.lock = asyncio.Lock()
        # Set when a flush may decide something new (a record was queued, a watermark of the terminal
        # table moved) or an in-flight batch was acknowledged. The flusher waits on it.
        self.wake = asyncio.Event()
        table.on_mark = self.wake.set

    async def swap(self, bundle: Bundle, scorer: ScorerPort, explainer: Explainer | None) -> str:
        """Serve another model from the next batch on (under the lock, so that no batch is scored by two, and
        every score names the version that made it); the version it replaced. The drift windows restart
        against the new bundle's reference: the old one's open windows are dropped."""
        async with self.lock:
            old = self.model_version
            self.bundle, self.scorer = bundle, scorer
            self.threshold, self.model_version = bundle.threshold, bundle.model_version
            self.core.cfg = replace(self.core.cfg, threshold=bundle.threshold, model_version=bundle.model_version)
            self.core.explainer = explainer
            self.drift, self.drift_off_reason = self._drift_monitor()
            return old

    async def set_shadow(self, shadow: tuple[Bundle, ScorerPort] | None) -> str | None:
        """Score every batch with ``shadow`` too from the next one on (None: no shadow); the version it replaced."""
        async with self.lock:
            old = None if self.shadow is None else self.shadow[0].model_version
            self.shadow = shadow
            return old

    def _shadow_records(self, d: Decision, scored_at: int) -> list[Out]:
        """The shadow's score messages of a batch (same rows, its own threshold; never to the flags topic).
        A shadow that fails to score loses its batch, counted, and never holds the champion's outputs back."""
        if self.shadow is None or not d.ready:
            return []
        bundle, scorer = self.shadow
        try:
            scores = scorer.score(d.rows)
        except Exception:
            log.exception("shadow %s failed to score a batch of %d: skipped", bundle.model_version, len(d.ready))
            self.metrics.shadow_failed.inc(len(d.ready))
            return []
        values = score_messages(d.ready, scores, bundle.threshold, bundle.model_version, self.s.worker_id, scored_at)
        topic = self.s.topics.shadow_scores
        return [(topic, a.tx.tx_id.encode(), v, None) for a, v in zip(d.ready, values, strict=True)]

    def _drift_monitor(self) -> tuple[DriftMonitor | None, str]:
        """The drift monitor, or None and why (logged once: a worker without one still scores)."""
        if not self.s.drift:
            reason = "off (--drift false)"
        elif (m := self.bundle.monitoring) is None:
            reason = "the bundle carries no monitoring block (re-train it to monitor drift)"
        else:
            self.metrics.set_expected_alert_rate(m.expected_alert_rate)
            return DriftMonitor(m, self.threshold, now_ms()), ""
        log.info("drift monitoring: %s", reason)
        return None, reason

    def drift_watermark(self) -> int | None:
        """The event time before which this worker will score no more rows: the oldest of its partitions'
        bounds. A partition with transactions queued (waiting for terminal finality) scores nothing older
        than the first of them less the lateness; one with none, nothing older than its clock (newest event
        time less the lateness: it admits nothing older) nor than the day after its last closed one (a quiet
        partition's days are closed through the others', ``Core.close_idle``)."""
        bounds = []
        for p, st in self.core.states.items():
            queued = self.core.pending_min_ts(p)
            if queued is not None:
                bounds.append(queued)
            elif st.closed_through is not None:
                bounds.append(max(st.max_ts - st.lateness_ms, (st.closed_through + 1) * DAY_MS))
            elif st.max_ts >= 0:
                bounds.append(st.max_ts - st.lateness_ms)
        return min(bounds) if bounds else None

    def _observe_drift(self, d: Decision, scores: F32) -> None:
        if self.drift is None or len(scores) == 0:
            return
        ts = np.fromiter((a.tx.ts for a in d.ready), dtype=np.int64, count=len(d.ready))
        self.drift.observe(d.rows, scores, ts, scores >= self.threshold)
        self.drift.advance(self.drift_watermark())

    @property
    def states(self) -> dict[int, TxPartition]:
        return self.core.states

    @property
    def pending(self) -> dict[int, Any]:
        return self.core.pending

    def pending_count(self) -> int:
        return self.core.pending_count()

    def waiting(self, partition: int) -> bool:
        return self.core.waiting(partition, time.monotonic())

    def flow(self, paused: set[int], limit: int) -> tuple[set[int], set[int]]:
        return self.core.flow(paused, limit)

    def next_wait_s(self) -> float | None:
        return self.core.next_wait_s(time.monotonic())

    def stream_clock(self) -> int | None:
        return self.core.stream_clock()

    def lows(self, uncommitted_min_ts: dict[int, int] | None = None) -> dict[int, int]:
        return self.core.lows(uncommitted_min_ts)

    def drop_partitions(self, partitions: set[int]) -> None:
        self.core.drop_partitions(partitions)
        for p in partitions:
            self.processed.pop(p, None)

    async def recover(self, records: list[Record]) -> None:
        """Replay the partitions whose state does not continue at this batch (a restart, a rebalance, a
        seek) — I/O, outside the lock, so flushes of the other partitions go on meanwhile."""
        for p, offset in self.core.recovery_needed(records).items():
            t0 = time.monotonic()
            state, n = await rebuild_partition(self.s, p, offset)
            async with self.lock:
                self.core.install(p, state)
                self.processed[p] = offset
            dt = time.monotonic() - t0
            self.rebuilds.append((p, n, dt))
            log.info("partition %d: state rebuilt from %d records up to offset %d in %.2fs", p, n, offset, dt)

    async def admit(self, records: list[Record]) -> None:
        await self.recover(records)
        async with self.lock:
            self.stats.record_in(len(records))
            self.metrics.record_consumed(len(records))
            for r in records:
                self.processed.setdefault(r.partition, r.offset)
            closures = self.core.admit(records, time.monotonic())
            await publish_tx_closures(self.publisher, self.s, self.table, closures)
            self.wake.set()

    async def infer(self, rows: F32) -> F32 | ScoringError:
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

    async def flush_start(self) -> InFlight | None:
        """Decide, score and hand the outputs to the producer; None when nothing can be decided now."""
        async with self.lock:
            d = self.core.decide(time.monotonic())
            if d is None:
                return None
            scored_at = now_ms()
            t0 = time.perf_counter()
            scores = await self.infer(d.rows) if d.ready else np.zeros(0, np.float32)
            inference_s = time.perf_counter() - t0
            if isinstance(scores, ScoringError):
                d.fail_scoring(str(scores))
                scores = np.zeros(0, np.float32)
            outputs = self.core.outputs(d, scores, scored_at)
            self._observe_drift(d, scores)
            shadow = self._shadow_records(d, scored_at)
            records = outputs.records + shadow if shadow else outputs.records
            if self.transactions is None:
                task = asyncio.ensure_future(self.publisher.send_all(records))
            else:  # shadow records are one per scored row, in row order
                sources = outputs.sources + [a.record.partition for a in d.ready][:len(shadow)]
                task = asyncio.ensure_future(self.transactions.send_all(records, sources))
            task.add_done_callback(lambda _: self.wake.set())
            return InFlight(d, outputs, task, scored_at, inference_s)

    async def complete(self, f: InFlight) -> list[Record]:
        """Wait for an in-flight batch's acknowledgements; its records are then safe to commit."""
        acked = await f.task
        self._record(f, acked)
        self.processed.update(f.decision.commits)
        return f.decision.records

    async def flush(self) -> list[Record]:
        """``flush_start`` and ``complete`` in one (no pipelining)."""
        f = await self.flush_start()
        return [] if f is None else await self.complete(f)

    def _record(self, f: InFlight, acked: list[int]) -> None:
        d, out = f.decision, f.outputs
        e2e_ms = None
        if d.ready:
            # End to end per scored record: input record timestamp -> broker ack of its output.
            done = max(acked[:out.scored]) if out.scored else now_ms()
            ts_in = np.fromiter((a.record.timestamp for a in d.ready), dtype=np.int64, count=len(d.ready))
            e2e_ms = np.maximum(done - ts_in, 0)
            self.stats.record_batch(len(d.ready), f.inference_s, queue_ms=np.maximum(f.scored_at - ts_in, 0),
                                    e2e_ms=e2e_ms, flagged=out.flagged, scored=len(d.ready))
        self.metrics.record_outputs(len(d.ready), out.flagged, e2e_ms, (reject.reason for _, reject in d.dead),
                                    out.unexplained)
        self.stats.record_dead_lettered(len(d.dead))
        self.stats.record_redelivered(sum(1 for a in d.ready if not a.new))

    async def close_idle(self, partitions: set[int]) -> int:
        """Close days on caught-up, quiet partitions (``Core.close_idle``); returns how many moved."""
        async with self.lock:
            closures = self.core.close_idle(partitions)
            if closures:
                log.info("idle partitions closed through: %s", {p: c for p, _, c in closures})
                await publish_tx_closures(self.publisher, self.s, self.table, closures)
            return len(closures)

    def state_sizes(self, extra: dict[str, int] | None = None) -> dict[str, int]:
        """Entries in every per-key structure of this worker (exported as metrics and in the stats topic)."""
        return {**self.core.state_sizes(), **(extra or {})}

    def stats_message(self, extra_sizes: dict[str, int] | None = None) -> dict[str, object]:
        sizes = self.state_sizes(extra_sizes)
        self.metrics.set_state(sizes)
        now = now_ms()
        if self.drift is not None:
            self.drift.advance(self.drift_watermark())  # the table's days move without batches too
        drift = self.drift.snapshot(now) if self.drift is not None else drift_off(self.drift_off_reason)
        self.metrics.set_drift(drift)
        return self.stats.snapshot(self.s.worker_id, self.scorer.provider, self.model_version, now, sizes, drift)


__all__ = ["InFlight", "Pending", "Runner"]
