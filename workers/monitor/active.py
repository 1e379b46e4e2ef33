"""The active instance: rebuild the state from the sources, then follow them, publishing each window as it closes.

On activation it reads ``scores`` and ``fraud-labels`` (every partition, no consumer group, no
commits) from the offsets of wall time ``now - rebuild span`` (``--horizon-days`` + the longest
arrival window + 2 days: a label may join a score a horizon older), or from the end of a partition
with nothing that recent. Every window is defined by event time, so republishing what a previous
instance published gives identical records: a restart counts nothing twice. Where a partition was
read from past its first offset (records skipped, or deleted by retention), the first event time
read, plus the lateness, is its floor: windows that could reach below a floor are not published
(``MonitorCore.floor_*``) — the previous instance's records for them stand.

Dead letters: a record the monitor cannot read goes to the dead-letter topic once. On activation
it reads that topic's headers (``dlq.source.*``) to learn which source records are already there,
and skips those on the way back up.

A retriable Kafka error is retried with backoff; anything else escapes and the monitor stops (its
supervisor, app.py), never a silent freeze.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from schemas.validate import Reject
from workers.batch import dead_letter_headers
from workers.errors import step_forever
from workers.monitor.bundles import Calibrations
from workers.monitor.config import MonitorSettings
from workers.monitor.decode import decode_label_records, decode_scores
from workers.monitor.metrics import MonitorMetrics
from workers.monitor.output import Output
from workers.monitor.watermarks import LABELS, SCORES, Watermarks
from workers.monitor.windows import DAY_MS, NO_FLOOR, MonitorCore, Window
from workers.ports import Out

log = logging.getLogger("fraudstream.monitor")
MAX_RECORDS = 20_000
FETCH_MS = 200
STEPS_A_TURN = 24


class Active:
    def __init__(self, s: MonitorSettings, partitions: dict[str, int], output: Output, metrics: MonitorMetrics,
                 calibrations: Calibrations) -> None:
        self.s, self.output, self.metrics = s, output, metrics
        # The shadow's scores (when its topic exists) are scores of another version: the same stream.
        shadow = [s.topics.shadow_scores] if partitions.get(s.topics.shadow_scores) else []
        self.stream = {s.topics.scores: SCORES, **dict.fromkeys(shadow, SCORES), s.topics.labels: LABELS}
        self.tps = [TopicPartition(t, p) for t in self.stream for p in range(partitions[t])]
        # One watermark slot per topic-partition of a stream: the scores and the shadow's partitions side by side.
        self.slot: dict[TopicPartition, int] = {}
        for tp in self.tps:
            self.slot[tp] = sum(1 for other in self.slot if self.stream[other.topic] == self.stream[tp.topic])
        self.slot_tp = {(self.stream[tp.topic], n): tp for tp, n in self.slot.items()}
        self.dlq_partitions = partitions[s.topics.dlq]
        self.core = MonitorCore(s.horizon_days, s.lateness_ms, calibrations)
        slots = {stream: [n for (st, n) in self.slot_tp if st == stream] for stream in (SCORES, LABELS)}
        self.marks = Watermarks(slots, s.idle_ms / 1000, time.monotonic())
        self.marks.expect_sources(SCORES, range(partitions.get(s.topics.transactions, 0)), time.monotonic())
        self.floors: dict[TopicPartition, int | None] = {}  # None: set by the partition's first valid record
        self.dead_before: set[tuple[str, int, int]] = set()
        self.rebuild_ends: dict[TopicPartition, int] = {}
        self.rebuilt = asyncio.Event()
        self.started = time.monotonic()
        self.last_idle_check = 0.0
        self.t0_ms = 0

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.s.bootstrap, **self.s.auth.aiokafka(), group_id=None,
                                    enable_auto_commit=False, client_id=f"{self.s.monitor_id}-sources",
                                    isolation_level="read_committed")  # workers under exactly-once: no aborted scores
        await consumer.start()
        try:
            self.metrics.activated(self.core)
            await self._seek(consumer)
            self.dead_before = await dead_lettered(self.s, self.dlq_partitions)
            await step_forever(lambda: self._step(consumer), "monitor", log)
        finally:
            self.metrics.deactivated()
            await consumer.stop()

    async def _seek(self, consumer: AIOKafkaConsumer) -> None:
        consumer.assign(self.tps)
        self.t0_ms = int(time.time() * 1000) - self.s.rebuild_span_ms
        found = await consumer.offsets_for_times(dict.fromkeys(self.tps, self.t0_ms))
        ends = await consumer.end_offsets(self.tps)
        for tp in self.tps:
            at = ends[tp] if found.get(tp) is None else found[tp].offset
            consumer.seek(tp, at)
            # From offset 0 nothing is missing; from past the end of what was there, guess from wall time.
            self.floors[tp] = NO_FLOOR if at == 0 else self.t0_ms + DAY_MS if at >= ends[tp] else None
        self.rebuild_ends = ends
        self._set_floors()
        log.info("active: rebuilding from %s (%d partitions, %d records to read)",
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.t0_ms / 1000)), len(self.tps),
                 sum(ends[tp] - (found[tp].offset if found.get(tp) else ends[tp]) for tp in self.tps))

    def _set_floors(self) -> None:
        for stream, attr in ((SCORES, "floor_scores"), (LABELS, "floor_labels")):
            known = [f for tp, f in self.floors.items() if self.stream[tp.topic] == stream and f is not None]
            setattr(self.core, attr, max(known, default=NO_FLOOR))

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=FETCH_MS, max_records=MAX_RECORDS)
        now = time.monotonic()
        dead: list[Out] = []
        for tp, records in batches.items():
            dead += self._ingest(tp, records, now)
        await self._check_idle(consumer, now)
        score_wm, label_wm = self.marks.current(now)
        self.metrics.marks = {"scores": score_wm, "labels": label_wm}
        await self.output.send_all(dead)
        while True:  # a day of windows at a time, so that heartbeats and probes are answered on a long catch-up
            windows = self.core.advance(score_wm, label_wm, max_steps=STEPS_A_TURN)
            await self.output.send_all([window_record(self.s.topics.metrics, w) for w in windows])
            self.metrics.windows(windows)
            if not self.core.behind(score_wm, label_wm):
                break
            await asyncio.sleep(0)
        if not self.rebuilt.is_set() and await self._caught_up(consumer):
            self.metrics.rebuild_s = time.monotonic() - self.started
            log.info("active: rebuilt in %.1fs: %s", self.metrics.rebuild_s, dict(self.core.counts))
            self.rebuilt.set()

    def _ingest(self, tp: TopicPartition, records: Sequence[Any], now: float) -> list[Out]:
        """Decode one partition's fetch into the core; its dead letters (those not already sent)."""
        stream = self.stream[tp.topic]
        if stream == SCORES:
            scores, by_source, rejects = decode_scores([r.value for r in records], [r.timestamp for r in records],
                                                       self.s.max_future_ms)
            self.core.add_scores(scores)
            times = scores.ts
        else:
            by_source = None
            labels, rejects = decode_label_records(records, self.s.max_future_ms)
            self.core.add_labels(labels)
            times = labels.reported_at
        self.marks.observe(stream, self.slot[tp], int(times.max()) if len(times) else None, now, by_source)
        if self.floors.get(tp, NO_FLOOR) is None and len(times):
            self.floors[tp] = int(times[0]) + self.s.lateness_ms + 1  # what was skipped came before, on time
            self._set_floors()
        return self._dead_letters(tp, records, rejects)

    def _dead_letters(self, tp: TopicPartition, records: Sequence[Any], rejects: list[tuple[int, Reject]]) -> list[Out]:
        fresh = [(records[i], rj) for i, rj in rejects
                 if (tp.topic, tp.partition, records[i].offset) not in self.dead_before]
        self.metrics.dead_letters(tp.topic, (rj.reason for _, rj in fresh))
        return [(self.s.topics.dlq, r.key, r.value or b"",
                 dead_letter_headers(r.partition, r.offset, rj, r.topic, self.s.monitor_id)) for r, rj in fresh]

    async def _check_idle(self, consumer: AIOKafkaConsumer, now: float) -> None:
        """Ask the broker whether the silent partitions are caught up (at most twice per --idle-ms): its end
        offsets, not the last fetch's highwater, which goes stale while fetches fail."""
        if now - self.last_idle_check < self.s.idle_ms / 2000:
            return
        self.last_idle_check = now
        silent = {self.slot_tp[stream, n]: stream for stream, n in self.marks.silent(now)}
        if not silent:
            return
        try:
            ends = await consumer.end_offsets(list(silent))
            positions = {tp: await consumer.position(tp) for tp in silent}
        except (KafkaError, IllegalStateError) as exc:  # unknown is not caught up: the partition keeps holding back
            log.info("idle check skipped: %r", exc)
            return
        for tp, stream in silent.items():
            caught_up = positions[tp] >= ends[tp]
            self.marks.set_caught_up(stream, self.slot[tp], caught_up)
            if caught_up and self.floors.get(tp, NO_FLOOR) is None:  # nothing valid after the skipped part
                self.floors[tp] = self.t0_ms + DAY_MS
                self._set_floors()

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        for tp, end in self.rebuild_ends.items():
            if await consumer.position(tp) < end:
                return False
        return True


def window_record(topic: str, w: Window) -> Out:
    return topic, w.key.encode(), orjson.dumps(w.record()), None


async def dead_lettered(s: MonitorSettings, partitions: int) -> set[tuple[str, int, int]]:
    """The source records (topic, partition, offset) the dead-letter topic holds, read from its headers."""
    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, **s.auth.aiokafka(), group_id=None,
                                enable_auto_commit=False, client_id=f"{s.monitor_id}-dlq",
                                isolation_level="read_committed")
    await consumer.start()
    out: set[tuple[str, int, int]] = set()
    try:
        tps = [TopicPartition(s.topics.dlq, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = [tp for tp in tps if ends[tp] > 0]
        while todo:
            for records in (await consumer.getmany(*todo, timeout_ms=1000)).values():
                for r in records:
                    h = dict(r.headers or [])
                    try:
                        out.add((h["dlq.source.topic"].decode(), int(h["dlq.source.partition"]),
                                 int(h["dlq.source.offset"])))
                    except (KeyError, ValueError, UnicodeDecodeError):
                        continue  # not a dead letter of ours
            todo = [tp for tp in todo if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    return out
