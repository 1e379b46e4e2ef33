"""The worker's Kafka plumbing beside the consumer (aiokafka, each with its own fetcher, so a
waiting scorer never starves them):

- ``TableReader``: reads the compacted terminal-days topic from the start into a ``TerminalTable``.
- ``rebuild_partition``: replays one transactions partition up to an offset into fresh state.
- ``publish_closures``: closed day counts and watermarks to the terminal-days topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from workers.batch import Record, admit_records, replay_of
from workers.config import Settings
from workers.ports import Out, SinkPort
from workers.state import Partial, TxPartition
from workers.terminals import TX, TXLOW, TXWM, TerminalTable, dumps, partial_key, watermark_key

log = logging.getLogger("fraudstream.worker")


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

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()


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
            replayed += admit_records([Record(partition, r.offset, r.timestamp, r.key, r.value, 0,
                                              replay_of(partition, r.headers))
                                       for r in batches.get(tp, []) if r.offset < upto], state, s.max_future_ms)
            # The days these records close were published by whoever admitted them before committing
            # past them; closing them here keeps the replay's memory to the horizon (and evicts alike).
            state.close_days()
            state.forget_old()
    finally:
        await consumer.stop()
    state.next_offset = upto
    return state, replayed


async def publish_tx_closures(publisher: SinkPort, s: Settings, table: TerminalTable,
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


async def publish_closures(publisher: SinkPort, table: TerminalTable, topic: str, kind: str, wm_kind: str,
                           closures: Sequence[tuple[int, Sequence[tuple[int, Any]], int | None]]) -> None:
    """Closed day counts of every partition in one send, then (after their acks) the partitions'
    watermarks in one — two broker round trips however many partitions closed a day — then the same
    records applied to our own table."""
    counts: list[Out] = [(topic, partial_key(kind, partition, day), dumps(c), None)
                         for partition, partials, _ in closures for day, c in partials]
    marks: list[Out] = [(topic, watermark_key(wm_kind, partition), orjson.dumps(closed_through), None)
                        for partition, _, closed_through in closures if closed_through is not None]
    if counts:
        await publisher.send_all(counts)
    if marks:
        await publisher.send_all(marks)
    apply_acknowledged(table, counts + marks)


async def publish_lows(publisher: SinkPort, s: Settings, table: TerminalTable, lows: dict[int, int]) -> None:
    """Our partitions' ``txlow`` marks that moved (after the commit they describe), then tombstones for
    our partitions' records that fell below the table's floor."""
    topic = s.topics.terminal_days
    marks: list[Out] = [(topic, watermark_key(TXLOW, p), orjson.dumps(low), None)
                        for p, low in lows.items() if table.tx_low.get(p, low - 1) < low]
    if marks:
        await publisher.send_all(marks)
        apply_acknowledged(table, marks)
    stale = table.take_stale(TX, set(lows))
    if stale:
        tombstones: list[Out] = [(topic, key, None, None) for key in stale]
        await publisher.send_all(tombstones)


def apply_acknowledged(table: TerminalTable, records: list[Out]) -> None:
    """Our own acknowledged terminal-days records, applied without waiting to read them back (one
    broker hop less before a day turns final); ``TerminalTable.apply`` is idempotent, so the
    ``TableReader`` applying them again later changes nothing."""
    for _, key, value, _ in records:
        if key is not None:
            table.apply(key, value)


__all__ = ["TableReader", "publish_closures", "publish_lows", "publish_tx_closures", "rebuild_partition"]
