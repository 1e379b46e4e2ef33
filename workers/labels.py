"""The label aggregator: owns some partitions of the labels topic (its own consumer group) and
publishes their closed report slots to the terminal-days topic."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.features import FEEDBACK_DELAY_DAYS
from schemas.validate import Reject
from workers.batch import dead_letter_headers
from workers.config import Settings
from workers.publish import Publisher
from workers.services import publish_closures
from workers.state import LabelPartition
from workers.terminals import LAB, LABWM, TerminalTable

log = logging.getLogger("fraudstream.worker")


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
