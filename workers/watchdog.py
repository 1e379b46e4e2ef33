"""The stall watchdog: is every assigned transactions partition making progress?

Consumers that silently stop fetching are the top complaint about Faust (faust-streaming #166,
#175, #629); an honest health check has to notice them without trusting the consumer that may be
stuck. So every ``--watchdog-interval-s`` the watchdog takes, per assigned partition:

- the **end offset**, asked of the broker by a client of its own (a consumer's cached
  ``highwater`` only moves when that consumer fetches: exactly what a stuck one does not do);
- the **processed position**: the offset after the last record whose outputs the broker has
  acknowledged (``Runner.processed``, what the direct consumer commits); for a partition that
  has not been processed since it was assigned, the group's committed offset (or, with none, the
  start of the partition under ``--auto-offset-reset earliest``, its end under ``latest``);
- whether the partition's next record is in a **bounded wait** for terminal finality (younger
  than ``--terminal-wait-s``): the runner holds it on purpose, and dead-letters it when the bound
  passes, so that is not a stall.

A partition is *stalled* when its lag (end - position) is > 0 and its position has not moved for
``--stall-after-s``; a caught-up partition (lag 0) or one in a bounded wait restarts the clock,
so it is never stalled, and any movement of the position clears a stall at once. Partitions no
longer assigned are forgotten.

Why 30 s by default, against ``--terminal-wait-s`` 60 s: the runner legitimately holds a
partition only for terminal finality, and that wait is exempt (up to its bound), so the stall
bound does not have to exceed it; past the bound the runner dead-letters (progress), so a
partition still not moving ``terminal-wait-s + stall-after-s`` after its head record arrived is
stuck for real. 30 s is six samples at the default interval — long enough not to flap on a
rebalance (session timeout 10 s) or a broker leader move, short enough that a silently stuck
consumer is reported within a minute.

``Watchdog`` is plain code on an injected clock; ``OffsetSampler`` reads the broker;
``run_watchdog`` ties them together on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

log = logging.getLogger("fraudstream.watchdog")


@dataclass(frozen=True, slots=True)
class Sample:
    end: int                # the partition's end offset (highwater)
    position: int           # the offset after the last record the worker processed
    waiting: bool = False   # its next record waits for terminal finality, within --terminal-wait-s

    @property
    def lag(self) -> int:
        return max(self.end - self.position, 0)


@dataclass(slots=True)
class PartitionHealth:
    partition: int
    end: int
    position: int
    lag: int
    since: float            # clock time of the last progress (moved, caught up, or in a bounded wait)
    stalled: bool = False
    stalled_for_s: float = 0.0   # seconds without progress, while stalled
    warned_at: float | None = None


class Watchdog:
    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic,
                 repeat_warning_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.repeat_warning_s = repeat_warning_s
        self.partitions: dict[int, PartitionHealth] = {}
        self.samples = 0

    def observe(self, samples: Mapping[int, Sample]) -> dict[int, PartitionHealth]:
        """One look at every assigned partition (a partition missing from ``samples`` is forgotten)."""
        now = self.clock()
        self.samples += 1
        for p in set(self.partitions) - set(samples):
            gone = self.partitions.pop(p)
            if gone.stalled:
                log.info("partition %d no longer assigned; its stall is forgotten", p)
        for p, smp in samples.items():
            prev = self.partitions.get(p)
            lag = smp.lag
            progressed = prev is None or smp.position != prev.position or lag == 0 or smp.waiting
            since = now if progressed or prev is None else prev.since
            h = PartitionHealth(p, smp.end, smp.position, lag, since)
            idle = now - since
            h.stalled = lag > 0 and idle >= self.stall_after_s
            if h.stalled:
                h.stalled_for_s = idle
                h.warned_at = prev.warned_at if prev is not None and prev.stalled else None
                if h.warned_at is None or now - h.warned_at >= self.repeat_warning_s:
                    log.warning("partition %d stalled: lag %d records (end %d, processed up to %d), no progress "
                                "for %.1fs (bound %.1fs)", p, lag, smp.end, smp.position, idle, self.stall_after_s)
                    h.warned_at = now
            elif prev is not None and prev.stalled:
                log.info("partition %d progressing again after %.1fs stalled (position %d -> %d, lag %d)",
                         p, prev.stalled_for_s, prev.position, smp.position, lag)
            self.partitions[p] = h
        return self.partitions

    def stalled(self) -> dict[int, PartitionHealth]:
        return {p: h for p, h in self.partitions.items() if h.stalled}

    def lags(self) -> dict[int, int]:
        return {p: h.lag for p, h in self.partitions.items()}


class OffsetSampler:
    """End offsets and committed offsets of the transactions topic, from clients of its own."""

    def __init__(self, bootstrap: str, auth: dict[str, Any], topic: str, group_id: str, client_id: str,
                 offset_reset: str, timeout_s: float) -> None:
        self.bootstrap, self.auth, self.topic, self.group_id = bootstrap, auth, topic, group_id
        self.client_id, self.offset_reset, self.timeout_s = client_id, offset_reset, timeout_s
        self.consumer: Any = None
        self.admin: Any = None

    async def start(self) -> None:
        """Connect both clients; on failure close what was opened and raise (the caller retries)."""
        try:
            self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                             enable_auto_commit=False, client_id=f"{self.client_id}-watchdog",
                                             **self.auth)
            await self.consumer.start()
            self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                             client_id=f"{self.client_id}-watchdog", **self.auth)
            await self.admin.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        consumer, admin, self.consumer, self.admin = self.consumer, self.admin, None, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def offsets(self, partitions: set[int],
                      unknown: set[int]) -> tuple[dict[int, int], dict[int, int]]:
        """(end offset per partition, start position per partition of ``unknown``)."""
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        ends = await asyncio.wait_for(self.consumer.end_offsets(tps), self.timeout_s)
        start: dict[int, int] = {}
        if unknown:
            want = [TopicPartition(self.topic, p) for p in sorted(unknown)]
            committed = await asyncio.wait_for(
                self.admin.list_consumer_group_offsets(self.group_id, partitions=want),
                self.timeout_s)
            missing = []
            for tp in want:
                meta = committed.get(tp)
                if meta is not None and meta.offset >= 0:
                    start[tp.partition] = meta.offset
                else:
                    missing.append(tp)
            if missing and self.offset_reset == "earliest":
                first = await asyncio.wait_for(self.consumer.beginning_offsets(missing), self.timeout_s)
                start |= {tp.partition: off for tp, off in first.items()}
            else:
                start |= {tp.partition: ends[tp] for tp in missing}
        return {tp.partition: off for tp, off in ends.items()}, start


async def run_watchdog(dog: Watchdog, interval_s: float, assigned: Callable[[], set[int]],
                       processed: Callable[[], Mapping[int, int]], waiting: Callable[[int], bool],
                       offsets: Callable[[set[int], set[int]], Awaitable[tuple[dict[int, int], dict[int, int]]]],
                       on_sample: Callable[[Watchdog], None]) -> None:
    """Sample forever. A sample that cannot be taken (broker unreachable) is skipped, and logged."""
    failures = 0
    while True:
        await asyncio.sleep(interval_s)
        parts = assigned()
        try:
            ends, starts = await offsets(parts, parts - set(processed())) if parts else ({}, {})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if failures == 1 or failures % 12 == 0:
                log.warning("watchdog could not read offsets (%d in a row): %r", failures, exc)
            continue
        failures = 0
        now_assigned = assigned()
        done = processed()  # read after the end offsets: a position can only be more recent than its end
        samples = {p: Sample(ends[p], done[p] if p in done else starts.get(p, ends[p]), waiting(p))
                   for p in parts & now_assigned if p in ends}
        dog.observe(samples)
        on_sample(dog)
