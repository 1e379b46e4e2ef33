"""Exactly-once outputs (``--guarantee exactly-once``): each transactions partition this worker owns
has its own transactional producer, and the outputs decided from that partition's records (scores,
flags, dead letters, shadow scores) are sent in its open transaction; the commit puts the
partition's next offset into the same transaction (``send_offsets_to_transaction``) and commits
both at once. A consumer reading with ``isolation.level=read_committed`` sees each transaction's
outputs once: a batch whose transaction is aborted, or never committed (kill -9), is not seen, and
it is scored again from the last committed offset.

Why a producer per input partition: aiokafka commits transactional offsets without the consumer
group's generation (no KIP-447), so the broker cannot tell a worker that lost a partition from its
new owner. The transactional id names the partition (``<group>-<topic>-<partition>``): the new
owner's producer starts (``InitProducerId``) before the partition is read, which aborts whatever the
old owner left open and fences it: a frozen worker that wakes up after its partitions moved has its
commit refused (``ProducerFenced``) instead of duplicating outputs.

A send that fails is never sent again inside the transaction (a retry might write the records
twice): the partition is marked failed, its transaction aborted at the commit, and the caller
rewinds it to its last committed offset (``workers.consume``).

Not in the transactions: the terminal-days records (compacted state, keyed by partition and day,
whose values a replay recomputes identically, so a repeat changes nothing), the stats and the
label aggregator's dead letters (the labels group never commits; it rebuilds from the start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from workers.config import Settings
from workers.metrics import Metrics
from workers.ports import Out
from workers.publish import Publisher

log = logging.getLogger("fraudstream.worker")


@dataclass
class _Partition:
    publisher: Publisher
    open: bool = False                   # a transaction begun and not yet ended
    failed: BaseException | None = None  # a send of this transaction failed: abort it
    beginning: asyncio.Lock = field(default_factory=asyncio.Lock)  # two batches in flight begin it once


@dataclass(frozen=True)
class CommitResult:
    committed: dict[int, int]  # partition -> offset committed with its outputs
    rewind: set[int]           # aborted: read again from the group's committed offset (asked of the broker)


class Transactions:
    def __init__(self, s: Settings, metrics: Metrics | None = None) -> None:
        self.s, self.metrics = s, metrics
        self.owned: set[int] = set()         # partitions assigned to this worker
        self.parts: dict[int, _Partition] = {}  # their producers (one missing: started again at its next use)

    def transactional_id(self, partition: int) -> str:
        return f"{self.s.group_id}-{self.s.topics.transactions}-{partition}"

    async def open(self, partitions: Iterable[int]) -> set[int]:
        """Start a producer for each partition (concurrently): each start fences the partition's previous
        producer and completes (aborts) its open transaction, so committed offsets read after this are final.
        Returns the partitions that have a producer now (one that failed to start is logged)."""
        wanted = set(partitions)
        self.owned |= wanted
        new = sorted(p for p in wanted if p not in self.parts)
        for p, outcome in zip(new, await asyncio.gather(*(self._start(p) for p in new), return_exceptions=True),
                              strict=True):
            if isinstance(outcome, Exception):
                log.warning("partition %d: its transactional producer did not start (%r); retrying", p, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        return {p for p in wanted if p in self.parts}

    async def _start(self, partition: int) -> None:
        pub = Publisher(self.s, self.metrics, transactional_id=self.transactional_id(partition), once=True)
        t0 = time.monotonic()
        await pub.start()
        self.parts[partition] = _Partition(pub)
        log.info("partition %d: transactional producer %s ready in %.2fs", partition,
                 self.transactional_id(partition), time.monotonic() - t0)

    async def close(self, partitions: Iterable[int]) -> None:
        """Stop the producers of partitions that left (an open transaction is aborted by the next owner)."""
        for p in list(partitions):
            self.owned.discard(p)
            part = self.parts.pop(p, None)
            if part is not None:
                await _quietly(part.publisher.stop(), f"stopping the producer of partition {p}")

    def interrupt(self) -> None:
        for part in self.parts.values():
            part.publisher.interrupt()

    async def send_all(self, records: list[Out], sources: list[int]) -> list[int]:
        """Send each record in the transaction of its source partition; acknowledgement times (epoch ms).
        A partition whose send fails is marked failed (its records get the time of the failure): the
        commit aborts its transaction instead."""
        by_partition: dict[int, list[int]] = {}
        for i, p in enumerate(sources):
            by_partition.setdefault(p, []).append(i)
        acked = [0] * len(records)
        results = await asyncio.gather(*(self._send(p, [records[i] for i in idx]) for p, idx in by_partition.items()))
        for idx, times in zip(by_partition.values(), results, strict=True):
            for i, t in zip(idx, times, strict=True):
                acked[i] = t
        return acked

    async def _send(self, partition: int, records: list[Out]) -> list[int]:
        """Send in the partition's transaction. Not sent (stamped now, never committed): a partition revoked
        while the batch was decided, or one whose transaction already failed."""
        part = self.parts.get(partition)
        if partition in self.owned and (part is None or part.failed is None):
            try:
                part = await self._producer(partition)
                await self._begin(part)
                return await part.publisher.send_all(records)
            except Exception as exc:
                if part is not None:
                    part.failed = exc
                log.warning("partition %d: a send in its transaction failed (%r): the transaction will be aborted "
                            "and the partition read again from its last commit", partition, exc)
        return [int(time.time() * 1000)] * len(records)

    async def _producer(self, partition: int) -> _Partition:
        """The partition's producer, started again if a failure stopped it."""
        if partition not in self.parts:
            await self._start(partition)
        return self.parts[partition]

    @staticmethod
    async def _begin(part: _Partition) -> None:
        async with part.beginning:
            if not part.open:
                await part.publisher.producer.begin_transaction()
                part.open = True

    async def commit(self, offsets: dict[int, int]) -> CommitResult:
        """Commit each partition's transaction with its next offset. One that fails is aborted (its producer
        started again, which also aborts it broker-side) and the partition is to be read again from the
        group's committed offset: asked of the broker after the new producer started, never remembered here,
        because a producer fenced by another owner (or by the transaction timeout) may be behind it."""
        committed: dict[int, int] = {}
        rewind: set[int] = set()
        results = await asyncio.gather(*(self._commit(p, o) for p, o in offsets.items()), return_exceptions=True)
        for (p, offset), outcome in zip(offsets.items(), results, strict=True):
            if outcome is None:
                committed[p] = offset
            elif isinstance(outcome, Exception):
                fenced = isinstance(outcome, ProducerFenced)
                if self.metrics is not None:
                    self.metrics.txn_aborted.labels("fenced" if fenced else "failed").inc()
                what = "fenced (another worker's producer, or the transaction timed out)" if fenced else repr(outcome)
                log.warning("partition %d: transaction aborted: %s; reading it again from its last commit", p, what)
                rewind.add(p)
            else:
                raise outcome  # CancelledError and the like
        return CommitResult(committed, rewind)

    async def _commit(self, partition: int, offset: int) -> None:
        if partition not in self.owned:
            raise ProducerFenced()  # revoked meanwhile: the next owner aborts what is open
        try:
            part = await self._producer(partition)
            if part.failed is not None:
                raise part.failed
            await self._begin(part)
            await part.publisher.producer.send_offsets_to_transaction(
                {TopicPartition(self.s.topics.transactions, partition): offset}, self.s.group_id)
            await part.publisher.producer.commit_transaction()
            part.open = False
        except Exception:
            await self._reset(partition)
            raise

    async def _reset(self, partition: int) -> None:
        """After a failure: a fresh producer on the same transactional id, whose start aborts what is open."""
        part = self.parts.pop(partition, None)
        if part is not None:
            await _quietly(part.publisher.stop(), f"stopping the producer of partition {partition}")
        await _quietly(self._start(partition), f"starting the producer of partition {partition} again")


async def _quietly(aw: object, what: str) -> None:
    try:
        await aw  # type: ignore[misc]
    except Exception as exc:
        log.info("%s: %r", what, exc)


__all__ = ["CommitResult", "Transactions"]
