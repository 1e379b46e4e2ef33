"""The worker's Kafka plumbing beside the Faust agent (aiokafka, each with its own fetcher, so a
waiting scorer never starves them):

- ``Publisher``: one idempotent producer; ``send_all`` returns only when the broker acknowledged
  every record, retrying with backoff (backpressure, never loss).
- ``TableReader``: reads the compacted terminal-days topic from the start into a ``TerminalTable``.
- ``LabelAggregator``: a consumer group over the labels topic; closes label days and publishes them.
- ``rebuild_partition``: replays one transactions partition up to an offset into fresh state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from schemas.features import FEEDBACK_DELAY_DAYS
from schemas.validate import Reject
from workers.batch import Record, admit_one, dead_letter_headers, replay_of
from workers.config import Settings
from workers.state import LabelPartition, Partial, TxPartition
from workers.terminals import LAB, LABWM, TX, TXWM, TerminalTable, partial_key, watermark_key

log = logging.getLogger("fraudstream.worker")
Out = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]  # topic, key, value, headers


class Publisher:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.partitioner = DefaultPartitioner()

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.s.bootstrap, **self.s.auth.aiokafka(),
                                         acks="all", enable_idempotence=True,
                                         linger_ms=2, max_batch_size=256 * 1024, client_id=f"{self.s.worker_id}-out",
                                         request_timeout_ms=30000)
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send_all(self, records: Iterable[Out]) -> list[int]:
        """Send and wait for every acknowledgement; returns when each record was acknowledged (ms).

        Records are grouped per (topic, partition) — Kafka's murmur2 key partitioner, as ``send()``
        would choose — into ``BatchBuilder``s handed over with ``send_batch``: one future per batch
        instead of one ``send()``, partition lookup and future per record (~15 % of the worker's CPU
        in the profile, BENCHMARKS.md). Failed batches are retried, with backoff, until acknowledged.
        """
        pending = list(records)
        acked_at: list[int] = [0] * len(pending)
        todo = list(range(len(pending)))
        backoff = self.s.retry_backoff_ms / 1000
        while todo:
            waits = await self._send_batches(pending, todo)
            failed: list[int] = []
            for members, fut in waits:
                try:
                    await fut
                except KafkaError as exc:
                    failed += members
                    last: BaseException = exc
                    continue
                now = int(time.time() * 1000)
                for i in members:
                    acked_at[i] = now
            if failed:
                log.warning("%d outputs not acknowledged (%r); retrying in %.1fs", len(failed), last, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            todo = sorted(failed)
        return acked_at

    async def _send_batches(self, pending: list[Out], todo: list[int]) -> list[tuple[list[int], Any]]:
        """Hand ``pending[todo]`` to the producer in per-partition batches: (members, delivery future) each."""
        groups: dict[tuple[str, int], list[int]] = {}
        parts: dict[str, list[int]] = {}
        for i in todo:
            topic, key = pending[i][0], pending[i][1]
            if topic not in parts:
                parts[topic] = sorted(await self.producer.partitions_for(topic))
            groups.setdefault((topic, self.partitioner(key, parts[topic], parts[topic])), []).append(i)
        waits: list[tuple[list[int], Any]] = []
        for (topic, partition), idx in groups.items():
            batch, members = self.producer.create_batch(), list[int]()
            for i in idx:
                _, key, value, headers = pending[i]
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    waits.append((members, await self._hand_over(batch, topic, partition)))
                    batch, members = self.producer.create_batch(), []
                    # An empty batch takes a record of any size.
                    batch.append(key=key, value=value, timestamp=None, headers=headers or [])
                members.append(i)
            waits.append((members, await self._hand_over(batch, topic, partition)))
        return waits

    async def _hand_over(self, batch: Any, topic: str, partition: int) -> Any:
        batch.close()
        try:  # send_batch waits for room in the accumulator and raises when none frees up in time
            return await self.producer.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed


class TableReader:
    def __init__(self, s: Settings, table: TerminalTable) -> None:
        self.s, self.table = s, table
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.s.bootstrap, **self.s.auth.aiokafka(),
                                         enable_auto_commit=False,
                                         client_id=f"{self.s.worker_id}-terminal-days", group_id=None)
        await self.consumer.start()
        tp = TopicPartition(self.s.topics.terminal_days, 0)
        self.consumer.assign([tp])
        await self.consumer.seek_to_beginning(tp)
        end = (await self.consumer.end_offsets([tp]))[tp]
        self._task = asyncio.create_task(self._run(tp, end))

    async def _run(self, tp: TopicPartition, end: int) -> None:
        if end == 0:
            self.caught_up.set()
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for r in records:
                    self.table.apply(r.key, r.value)
                    if r.offset + 1 >= end:
                        self.caught_up.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()


class LabelAggregator:
    """Owns some partitions of the labels topic (its own consumer group) and publishes their days."""

    def __init__(self, s: Settings, table: TerminalTable, publisher: Publisher) -> None:
        self.s, self.table, self.publisher = s, table, publisher
        self.states: dict[int, LabelPartition] = {}
        self.last_seen: dict[int, float] = {}
        self.dead_lettered = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.s
        self.consumer = AIOKafkaConsumer(s.topics.labels, bootstrap_servers=s.bootstrap, **s.auth.aiokafka(),
                                         group_id=f"{s.group_id}-labels", enable_auto_commit=False,
                                         auto_offset_reset="earliest", client_id=f"{s.worker_id}-labels")
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep aggregating; a broken step is logged and retried
                log.exception("label aggregation step failed; retrying")
                await asyncio.sleep(1)

    async def _step(self) -> None:
        assigned = self.consumer.assignment()
        for tp in assigned:
            if tp.partition not in self.states:  # a new assignment: rebuild from the start (idempotent)
                self.states[tp.partition] = LabelPartition(tp.partition, 0)
                self.last_seen[tp.partition] = time.monotonic()
                await self.consumer.seek_to_beginning(tp)
        for p in [p for p in self.states if TopicPartition(self.s.topics.labels, p) not in assigned]:
            del self.states[p]
        batches = await self.consumer.getmany(timeout_ms=100, max_records=10000)
        dead: list[tuple[Any, Reject]] = []
        now = time.monotonic()
        for tp, records in batches.items():
            state = self.states.get(tp.partition)
            if state is None:
                continue
            self.last_seen[tp.partition] = now
            for r in records:
                try:
                    v = orjson.loads(r.value)
                    reject = state.admit(str(v["tx_id"]), str(v["terminal_id"]), int(v["ts"]), bool(v["is_fraud"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    reject = Reject("bad_label", f"{type(exc).__name__}: {exc}"[:300])
                if reject is not None:
                    dead.append((r, reject))
        if dead:
            self.dead_lettered += len(dead)
            await self.publisher.send_all(
                (self.s.topics.dlq, r.key, r.value or b"",
                 dead_letter_headers(r.partition, r.offset, rj, r.topic, self.s.worker_id))
                for r, rj in dead)
        tx_final = self.table.tx_final_through()
        for p, state in self.states.items():
            idle_through = None
            tp = TopicPartition(self.s.topics.labels, p)
            caught_up = self.consumer.highwater(tp) is not None and (await self.consumer.position(tp)) >= (
                self.consumer.highwater(tp) or 0)
            if tx_final is not None and caught_up and now - self.last_seen[p] >= self.s.idle_ms / 1000:
                # Nothing pending on this partition: labels of days that ended a feedback delay
                # before the transactions' watermark have all been published.
                idle_through = tx_final - FEEDBACK_DELAY_DAYS
            partials = state.close_days(idle_through)
            if partials or (state.closed_through is not None and self.table.label_wm.get(p) != state.closed_through):
                await publish_closures(self.publisher, self.table, self.s.topics.terminal_days, LAB, LABWM,
                                       [(p, partials, state.closed_through)])


async def rebuild_partition(s: Settings, partition: int, upto: int) -> tuple[TxPartition, int]:
    """Fresh state for ``partition`` from its earliest offset up to ``upto`` (exclusive)."""
    state = TxPartition(partition, s.lateness_ms)
    tp = TopicPartition(s.topics.transactions, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, **s.auth.aiokafka(), enable_auto_commit=False,
                                group_id=None,
                                client_id=f"{s.worker_id}-rebuild-{partition}")
    await consumer.start()
    replayed = 0
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while (await consumer.position(tp)) < upto:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=10000)
            for r in batches.get(tp, []):
                if r.offset >= upto:
                    break
                rec = Record(partition, r.offset, r.timestamp, r.key, r.value, 0, replay_of(partition, r.headers))
                admit_one(rec, state, s.max_future_ms)
                replayed += 1
    finally:
        await consumer.stop()
    state.next_offset = upto
    return state, replayed


async def publish_tx_closures(publisher: Publisher, s: Settings, table: TerminalTable,
                              closures: list[tuple[int, list[Partial], int | None]]) -> None:
    """The transactions partitions' closures that the table does not know yet (a redelivery closes
    days again that were published before)."""
    fresh: list[tuple[int, list[Partial], int | None]] = []
    for partition, partials, closed_through in closures:
        known = table.tx_wm.get(partition)
        fresh.append((partition, [(day, c) for day, c in partials if known is None or day > known],
                      closed_through if closed_through is not None and (known is None or closed_through > known)
                      else None))
    await publish_closures(publisher, table, s.topics.terminal_days, TX, TXWM, fresh)


async def publish_closures(publisher: Publisher, table: TerminalTable, topic: str, kind: str, wm_kind: str,
                           closures: list[tuple[int, list[Partial], int | None]]) -> None:
    """Closed day counts of every partition in one send, then (after their acks) the partitions'
    watermarks in one — two broker round trips however many partitions closed a day — then the same
    records applied to our own table."""
    counts: list[Out] = [(topic, partial_key(kind, partition, day), orjson.dumps(c), None)
                         for partition, partials, _ in closures for day, c in partials]
    marks: list[Out] = [(topic, watermark_key(wm_kind, partition), orjson.dumps(closed_through), None)
                        for partition, _, closed_through in closures if closed_through is not None]
    if counts:
        await publisher.send_all(counts)
    if marks:
        await publisher.send_all(marks)
    apply_acknowledged(table, counts + marks)


def apply_acknowledged(table: TerminalTable, records: list[Out]) -> None:
    """Our own acknowledged terminal-days records, applied without waiting to read them back (one
    broker hop less before a day turns final); ``TerminalTable.apply`` is idempotent, so the
    ``TableReader`` applying them again later changes nothing."""
    for _, key, value, _ in records:
        if key is not None:
            table.apply(key, value)


__all__ = ["KafkaError", "LabelAggregator", "Publisher", "TableReader", "publish_tx_closures", "rebuild_partition"]
