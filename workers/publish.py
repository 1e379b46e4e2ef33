"""The worker's one idempotent producer: ``Publisher.send_all`` returns only when the broker
acknowledged every record, retrying with backoff (backpressure, never loss)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from workers.config import Settings

log = logging.getLogger("fraudstream.worker")
# topic, key, value (None: a tombstone on a compacted topic), headers
Out = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]


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
