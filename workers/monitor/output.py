"""The monitor's producer: ``send_all`` returns once the broker acknowledged every record.

A retriable error is retried with backoff, for ever (a broker restart; the window records are
deterministic, so sending one twice is harmless). A dead letter the broker refuses for good becomes
a stub (``workers.publish.stub``: key and headers, empty value); any other record refused for good
raises ``OutputRefused``, which stops the monitor naming the topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from workers.errors import OutputRefused, retriable
from workers.monitor.config import MonitorSettings
from workers.ports import Out
from workers.publish import stub

log = logging.getLogger("fraudstream.monitor")
MAX_BACKOFF_S = 10.0


class Output:
    def __init__(self, s: MonitorSettings) -> None:
        self.s = s
        self.producer: AIOKafkaProducer | None = None
        self.stubs = 0

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.s.bootstrap, **self.s.auth.aiokafka(),
                                         acks="all", enable_idempotence=True, linger_ms=5,
                                         client_id=f"{self.s.monitor_id}-out")
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send_all(self, records: Iterable[Out]) -> None:
        todo = list(records)
        backoff = self.s.retry_backoff_ms / 1000
        while todo:
            retry: list[Out] = []
            last: BaseException | None = None
            for record, outcome in zip(todo, await self._send(todo), strict=True):
                if outcome is None:
                    continue
                last = outcome
                if retriable(outcome):
                    retry.append(record)
                elif record[0] == self.s.topics.dlq and record[2]:
                    log.error("dead letter refused by %s (%r): sent as a stub", record[0], outcome)
                    self.stubs += 1
                    retry.append(stub(record, outcome))
                else:
                    raise OutputRefused(record[0], outcome)
            if retry:
                log.warning("%d outputs not acknowledged (%r); retrying in %.1fs", len(retry), last, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            todo = retry

    async def _send(self, records: list[Out]) -> list[BaseException | None]:
        """Hand every record over, then await each: None when acknowledged, else its error."""
        assert self.producer is not None, "Output.start() first"
        futures: list[asyncio.Future[object] | BaseException] = []
        for topic, key, value, headers in records:
            try:
                futures.append(await self.producer.send(topic, value, key=key, headers=headers or []))
            except KafkaError as exc:
                futures.append(exc)
        out: list[BaseException | None] = []
        for f in futures:
            if isinstance(f, BaseException):
                out.append(f)
                continue
            try:
                await f
                out.append(None)
            except KafkaError as exc:
                out.append(exc)
        return out
