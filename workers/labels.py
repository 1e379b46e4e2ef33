"""The label aggregator: owns some partitions of the labels topic (its own consumer group), keeps
their report slots (``workers.state.LabelPartition``) and publishes the closed ones to the
terminal-days topic.

Labels are validated like transactions (``schemas.validate.decode_label``, a fetch at a time by its
batch equivalent ``schemas.decode_batch.decode_labels``) and the record key must
be the label's terminal id — every label of one transaction then lands on one partition, which is
what lets a later label replace an earlier one. A bad label goes to the dead-letter topic with its
reason and is counted (stats topic and ``/metrics``); a valid label is never dead-lettered.

A caught-up labels partition with no record for ``--idle-ms`` closes its slots up to the stream's
clock (the transactions' event-time watermark this worker knows) less ``--label-lateness-ms``:
label producers are expected to publish within that lateness of ``reported_at``.

A retriable Kafka error is retried with backoff; anything else escapes the task, and the worker's
supervisor makes the worker unhealthy and exits (never a silent freeze).

The group never commits: a partition newly assigned is rebuilt from its first offset (its state is
in memory only). A partition this worker keeps through a rebalance keeps its state, and the
consumer, which has no committed offset to resume from, would restart it at offset 0 too: the
listener seeks it back to the offset after the last record its state holds, so that no label is
admitted twice (a second admission past a closed cut-off would be counted again in a later slot).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from schemas.decode_batch import decode_labels
from schemas.validate import Label, Reject
from workers.batch import dead_letter_headers
from workers.config import Settings
from workers.errors import step_forever
from workers.metrics import Metrics
from workers.ports import Out
from workers.publish import Publisher
from workers.services import publish_closures
from workers.state import LabelPartial, LabelPartition
from workers.stats import StatsWindow
from workers.terminals import LAB, LABWM, TerminalTable

log = logging.getLogger("fraudstream.worker")
Clock = Callable[[], int | None]  # the stream's event-time clock (ms), None while unknown


class LabelAggregator:
    def __init__(self, s: Settings, table: TerminalTable, publisher: Publisher, stats: StatsWindow,
                 metrics: Metrics, clock: Clock, table_ready: asyncio.Event | None = None) -> None:
        self.s, self.table, self.publisher = s, table, publisher
        self.stats, self.metrics, self.clock = stats, metrics, clock
        self.table_ready = table_ready  # the table's floor is known: old slots are not re-published
        self.states: dict[int, LabelPartition] = {}
        self.next_offset: dict[int, int] = {}  # per partition held: the offset after the last record admitted
        self.last_seen: dict[int, float] = {}
        self.dead_lettered = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.s
        self.consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, **s.auth.aiokafka(),
                                         group_id=f"{s.group_id}-labels", enable_auto_commit=False,
                                         auto_offset_reset="earliest", client_id=f"{s.worker_id}-labels")
        self.consumer.subscribe([s.topics.labels], listener=_KeepPositions(self))
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="label-aggregator")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()

    async def _run(self) -> None:
        if self.table_ready is not None:
            await self.table_ready.wait()
        await step_forever(self._step, "label aggregation", log)

    def sizes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for state in self.states.values():
            for k, v in state.sizes().items():
                out[k] = out.get(k, 0) + v
        return out

    async def _step(self) -> None:
        await self._follow_assignment()
        batches = await self.consumer.getmany(timeout_ms=100, max_records=10000)
        dead: list[tuple[Any, Reject]] = []
        now = time.monotonic()
        n = restamped = 0
        for tp, records in batches.items():
            state = self.states.get(tp.partition)
            if state is None or not records:
                continue
            self.last_seen[tp.partition] = now
            self.next_offset[tp.partition] = records[-1].offset + 1
            before = state.restamped
            decoded = decode_labels([r.value for r in records], [r.timestamp for r in records],
                                    self.s.max_future_ms).outcomes()
            for r, label in zip(records, decoded, strict=True):
                n += 1
                got = self._check_key(r, label)
                if isinstance(got, Reject):
                    dead.append((r, got))
                else:
                    state.admit(got)
            restamped += state.restamped - before
        if n:
            self.stats.record_labels(n, len(dead), restamped)
            self.metrics.record_labels(n, (rj.reason for _, rj in dead), restamped)
        if dead:
            self.dead_lettered += len(dead)
            await self.publisher.send_all(
                (self.s.topics.dlq, r.key, r.value or b"",
                 dead_letter_headers(r.partition, r.offset, rj, r.topic, self.s.worker_id))
                for r, rj in dead)
        await self._close(now)

    @staticmethod
    def _check_key(r: Any, got: Label | Reject) -> Label | Reject:
        """A valid label whose record key is not its terminal id is rejected (``key_mismatch``)."""
        if not isinstance(got, Reject) and r.key != got.terminal_id.encode():
            key = "no key" if r.key is None else f"record key {r.key[:80]!r}"
            return Reject("key_mismatch", f"{key}: a label's key must be its terminal_id {got.terminal_id!r} "
                                          f"(so that every label of a transaction lands on one partition)")
        return got

    async def _follow_assignment(self) -> None:
        assigned = self.consumer.assignment()
        for tp in assigned:
            if tp.partition not in self.states:  # a new assignment: rebuild from the start (idempotent)
                self.states[tp.partition] = LabelPartition(tp.partition, self.s.label_lateness_ms)
                self.last_seen[tp.partition] = time.monotonic()
                await self.consumer.seek_to_beginning(tp)
        for p in [p for p in self.states if TopicPartition(self.s.topics.labels, p) not in assigned]:
            del self.states[p]
            self.next_offset.pop(p, None)

    def kept_positions(self, assigned: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where the partitions kept through a rebalance resume: after the last record their state holds."""
        return {tp: self.next_offset[tp.partition] for tp in assigned
                if tp.partition in self.states and tp.partition in self.next_offset}

    async def _close(self, now: float) -> None:
        """Close the slots each partition's watermark (or, idle, the stream's clock) has passed; publish them,
        and tombstone our partitions' records that fell below the table's floor."""
        clock = self.clock()
        closures: list[tuple[int, list[LabelPartial], int | None]] = []
        for p, state in self.states.items():
            idle = None
            if clock is not None and now - self.last_seen[p] >= self.s.idle_ms / 1000 and await self._caught_up(p):
                idle = clock - self.s.label_lateness_ms
            floor = self.table.floor
            partials = [(slot, c) for slot, c in state.close_slots(idle) if c and (floor is None or slot >= floor)]
            if partials or (state.closed_through is not None and self.table.label_wm.get(p) != state.closed_through):
                closures.append((p, partials, state.closed_through))
        if closures:
            await publish_closures(self.publisher, self.table, self.s.topics.terminal_days, LAB, LABWM, closures)
        stale = self.table.take_stale(LAB, set(self.states))
        if stale:
            tombstones: list[Out] = [(self.s.topics.terminal_days, key, None, None) for key in stale]
            await self.publisher.send_all(tombstones)

    async def _caught_up(self, p: int) -> bool:
        """Whether the partition's position is at the broker's end offset — asked of the broker, not the
        highwater of the last fetch, which goes stale while fetches fail (a broker restart) and would let a
        quiet partition close slots whose labels are still to be fetched. Unreachable: not caught up."""
        tp = TopicPartition(self.s.topics.labels, p)
        try:  # a rebalance may revoke the partition at either await: then it is not ours to judge
            ends = await self.consumer.end_offsets([tp])
            return bool(await self.consumer.position(tp) >= ends[tp])
        except (KafkaError, IllegalStateError) as exc:
            log.info("labels partition %d: idle check skipped: %r", p, exc)
            return False


class _KeepPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: LabelAggregator) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        kept = self.owner.kept_positions(list(assigned))
        for tp, offset in kept.items():
            self.owner.consumer.seek(tp, offset)
        log.info("labels partitions assigned: %s (kept, resumed where their state ends: %s)",
                 sorted(tp.partition for tp in assigned), {tp.partition: o for tp, o in sorted(kept.items())})
