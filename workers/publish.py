"""The worker's one idempotent producer: ``Publisher.send_all`` returns only when the broker
acknowledged every record, retrying retriable errors with backoff (backpressure, never loss).

A non-retriable error (``workers.errors.retriable``: a record too large, authorization, ...) is
never retried as it is: its batch is split and its records sent one by one; a dead letter the
broker still refuses is replaced by a *stub* — the same key and dead-letter headers (source
topic/partition/offset, reason) plus ``dlq.stub``, an empty value — so that its partition moves on
(the original stays in the source topic for ``ops.dlq`` to re-drive); any other refused output
raises ``OutputRefused``, which stops the worker naming the topic. ``interrupt()`` (SIGTERM, a
fatal error elsewhere) ends a retry loop at its next backoff with ``PublishInterrupted``.
"""

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
from workers.errors import OutputRefused, PublishInterrupted, retriable
from workers.metrics import Metrics
from workers.ports import Out

log = logging.getLogger("fraudstream.worker")
STUB_HEADER = "dlq.stub"
STUB_DETAIL_BYTES = 200
SLOW_ACK_WARN_S = 5.0
# The producer's own size check (aiokafka applies it in send(), not to our send_batch) must never be
# tighter than a topic's max.message.bytes: a dead letter is its source record plus headers, over the
# 1 MiB default. The broker's socket.request.max.bytes default: its topic limits decide, not we.
MAX_REQUEST_BYTES = 100 * 1024 * 1024


def stub(record: Out, cause: BaseException) -> Out:
    """A bounded stand-in for a dead letter the broker refused: key and dead-letter headers kept (the
    detail cut short), the refusal named, the value empty."""
    topic, key, _, headers = record
    kept = [(k, v[:STUB_DETAIL_BYTES] if k == "dlq.detail" else v) for k, v in headers or [] if k != STUB_HEADER]
    return topic, (key or b"")[:256] or None, b"", [*kept, (STUB_HEADER, type(cause).__name__.encode())]


def interrupted(pending: list[Out], acked_at: list[int], last: BaseException | None = None) -> PublishInterrupted:
    """The error that ends a retry loop, naming the topics of the records not acknowledged."""
    left = [pending[i][0] for i, at in enumerate(acked_at) if not at]
    return PublishInterrupted(len(left), last, left)


class Publisher:
    def __init__(self, s: Settings, metrics: Metrics | None = None, transactional_id: str | None = None,
                 once: bool = False) -> None:
        """``transactional_id``: a transactional producer (``workers.transact``); ``once``: a failed send is
        raised, never sent again (inside a transaction a second send could write the records twice)."""
        self.s = s
        self.metrics = metrics
        self.transactional_id, self.once = transactional_id, once
        self.partitioner = DefaultPartitioner()
        self.stubs = 0  # dead letters replaced by a stub
        self._interrupted = asyncio.Event()

    def interrupt(self) -> None:
        """End every retry loop at its next wait (the records stay unacknowledged: nothing past them is committed)."""
        self._interrupted.set()

    async def start(self) -> None:
        txn = self.transactional_id
        self.producer = AIOKafkaProducer(bootstrap_servers=self.s.bootstrap, **self.s.auth.aiokafka(),
                                         acks="all", enable_idempotence=True, transactional_id=txn,
                                         linger_ms=2, max_batch_size=256 * 1024,
                                         client_id=f"{self.s.worker_id}-{'out' if txn is None else txn}",
                                         request_timeout_ms=30000, max_request_size=MAX_REQUEST_BYTES)
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
        alone: set[int] = set()  # refused for good in a batch: sent on their own, to find which
        backoff = self.s.retry_backoff_ms / 1000
        while todo:
            retry: list[int] = []
            again: list[int] = []  # split or stubbed: sent again at once
            last: BaseException | None = None
            try:
                waits = await self._send_batches(pending, todo, alone)
            except KafkaError as exc:  # no metadata for a topic (deleted, unreachable broker)
                if not retriable(exc):
                    raise self._refusal(pending[todo[0]][0], exc, len(todo)) from exc
                waits, retry, last = [], todo, exc
            for members, fut in waits:
                try:
                    await self._acknowledged(fut, pending, acked_at)
                except KafkaError as exc:
                    last = exc
                    if retriable(exc):
                        retry += members
                    else:
                        again += self._refused(pending, members, alone, exc)
                    continue
                now = int(time.time() * 1000)
                for i in members:
                    acked_at[i] = now
            if retry and self.once:
                raise last if last is not None else RuntimeError("a send failed")
            if retry:
                log.warning("%d outputs not acknowledged (%r); retrying in %.1fs", len(retry), last, backoff)
                await self._wait(backoff, pending, acked_at, last)
                backoff = min(backoff * 2, 10.0)
            todo = sorted(retry + again)
        return acked_at

    def _refused(self, pending: list[Out], members: list[int], alone: set[int], exc: BaseException) -> list[int]:
        """A non-retriable refusal of a batch: which members to send again (alone, or as stubs)."""
        if len(members) > 1:
            alone.update(members)
            return members
        i = members[0]
        topic, _, value, headers = pending[i]
        is_stub = any(k == STUB_HEADER for k, _ in headers or [])
        if topic != self.s.topics.dlq or is_stub:
            raise self._refusal(topic, exc)
        log.error("the dead-letter topic %s refused a dead letter of %d bytes (%r): writing a stub in its place "
                  "(the original stays in its source topic)", topic, len(value or b""), exc)
        pending[i] = stub(pending[i], exc)
        self.stubs += 1
        if self.metrics is not None:
            self.metrics.stubs.inc()
        return [i]

    def _refusal(self, topic: str, exc: BaseException, n: int = 1) -> OutputRefused:
        """The error that stops the worker for an output refused for good, counted by topic."""
        if self.metrics is not None:
            self.metrics.refused.labels(topic).inc(n)
        return OutputRefused(topic, exc, n)

    async def _acknowledged(self, fut: Any, pending: list[Out], acked_at: list[int]) -> None:
        """Await a delivery future. With idempotence the producer retries retriable errors itself, for
        ever: say so every ``SLOW_ACK_WARN_S``, and give up with ``PublishInterrupted`` on ``interrupt()``."""
        if fut.done():
            fut.result()
            return
        if self._interrupted.is_set():
            raise interrupted(pending, acked_at)
        stop = asyncio.ensure_future(self._interrupted.wait())
        waited = 0.0
        try:
            while True:
                done, _ = await asyncio.wait({fut, stop}, timeout=SLOW_ACK_WARN_S, return_when=asyncio.FIRST_COMPLETED)
                if fut in done:
                    fut.result()
                    return
                if stop in done:
                    raise interrupted(pending, acked_at)
                waited += SLOW_ACK_WARN_S
                log.warning("outputs not acknowledged for %.0fs: the producer keeps retrying (broker down, too few "
                            "in-sync replicas?)", waited)
        finally:
            stop.cancel()

    async def _wait(self, seconds: float, pending: list[Out], acked_at: list[int], last: BaseException | None) -> None:
        """Sleep before a retry; ``PublishInterrupted`` as soon as ``interrupt()`` is called."""
        if self._interrupted.is_set():
            raise interrupted(pending, acked_at, last)
        try:
            await asyncio.wait_for(self._interrupted.wait(), seconds)
        except TimeoutError:
            return
        raise interrupted(pending, acked_at, last)

    async def _send_batches(self, pending: list[Out], todo: list[int],
                            alone: set[int]) -> list[tuple[list[int], Any]]:
        """Hand ``pending[todo]`` to the producer in per-partition batches (a batch of its own for each
        member of ``alone``): (members, delivery future) each."""
        groups: dict[tuple[str, int, int], list[int]] = {}
        parts: dict[str, list[int]] = {}
        for i in todo:
            topic, key = pending[i][0], pending[i][1]
            if topic not in parts:
                parts[topic] = sorted(await self.producer.partitions_for(topic))
            partition = self.partitioner(key, parts[topic], parts[topic])
            groups.setdefault((topic, partition, i if i in alone else -1), []).append(i)
        waits: list[tuple[list[int], Any]] = []
        for (topic, partition, _), idx in groups.items():
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
