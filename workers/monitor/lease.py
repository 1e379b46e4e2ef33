"""Which instance is active: the member of ``--group-id`` that the group assigns the lease topic's one partition.

Exact metrics need every partition of both sources in one place, so one instance computes and the
others stand by in the same group. The broker's group coordinator is the arbiter: when the holder
dies its session times out (``--session-timeout-s``) and the partition moves to a standby; when it
stops cleanly it leaves the group and the move is immediate. The sticky assignor keeps the lease
where it is when a standby joins. Two instances may briefly both believe they hold it (a holder
cut off from the coordinator until its session ends): both then publish the same records, since
every window is a function of event time alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from workers.monitor.config import MonitorSettings

log = logging.getLogger("fraudstream.monitor")
Hook = Callable[[], Awaitable[None]]


class Lease(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, s: MonitorSettings, acquired: Hook, lost: Hook) -> None:
        self.s, self.acquired, self.lost = s, acquired, lost
        self.partition = TopicPartition(s.topics.lease, 0)
        self.held = False
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        session_ms = int(self.s.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.s.bootstrap, **self.s.auth.aiokafka(), group_id=self.s.group_id,
            client_id=f"{self.s.monitor_id}-lease", enable_auto_commit=False, auto_offset_reset="latest",
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(session_ms // 4, 500),
            partition_assignment_strategy=(StickyPartitionAssignor,))
        self.consumer.subscribe([self.s.topics.lease], listener=self)
        await self.consumer.start()
        self.task = asyncio.create_task(self._poll(), name="lease")

    async def _poll(self) -> None:
        """The topic carries nothing: polling keeps the member within max.poll.interval and runs rebalances."""
        assert self.consumer is not None
        while True:
            await self.consumer.getmany(timeout_ms=1000)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.held:
            self.held = False
            await self.lost()
        if self.consumer is not None:
            await self.consumer.stop()  # leaves the group: a standby takes over now, not a session later

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Eager rebalancing revokes everything first; whether the lease moves is known at the assignment."""

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        holds = self.partition in set(assigned)
        if holds and not self.held:
            log.info("lease acquired (%s, group %s): this instance is active", self.partition, self.s.group_id)
            self.held = True
            await self.acquired()
        elif self.held and not holds:
            log.info("lease lost: this instance stands by")
            self.held = False
            await self.lost()
        elif not holds:
            log.info("standing by: another member of group %s holds the lease", self.s.group_id)
