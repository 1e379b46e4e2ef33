"""``Publisher.send_all`` against an in-memory producer: what it retries, what it splits, what becomes a
dead-letter stub, what stops the worker, and that ``interrupt()`` ends every wait (the broker-side
versions of these are in tests/integration/test_wedge.py and test_backpressure.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiokafka.errors as ae
import pytest

from workers.config import parse
from workers.errors import OutputRefused, PublishInterrupted
from workers.metrics import Metrics
from workers.ports import Out
from workers.publish import STUB_HEADER, Publisher

HANG = object()  # a delivery future that never completes (the producer retrying for ever)
Refuse = Callable[[str, list[tuple[Any, Any, Any]]], object]  # (topic, batch) -> None (ack), an error, or HANG


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity, self.records = capacity, list[tuple[Any, Any, Any]]()

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, headers))
        return object()

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, refuse: Refuse, capacity: int = 100) -> None:
        self.refuse, self.capacity = refuse, capacity
        self.sent: list[tuple[str, list[tuple[Any, Any, Any]]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[None]:
        self.sent.append((topic, list(batch.records)))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        verdict = self.refuse(topic, batch.records)
        if verdict is None:
            fut.set_result(None)
        elif isinstance(verdict, BaseException):
            fut.set_exception(verdict)
        return fut


def publisher(tmp_path: Path, refuse: Refuse, capacity: int = 100) -> tuple[Publisher, FakeProducer]:
    pub = Publisher(parse(["--retry-backoff-ms", "1", "--data-dir", str(tmp_path), "--topic-dlq", "dlq"]), Metrics())
    pub.producer = FakeProducer(refuse, capacity)  # type: ignore[assignment]
    return pub, pub.producer  # type: ignore[return-value]


def send(pub: Publisher, records: list[Out]) -> list[int]:
    """``send_all`` bounded in time: a regression that retries for ever fails instead of hanging."""
    return asyncio.run(asyncio.wait_for(pub.send_all(records), 5))


def dead_letter(value: bytes) -> Out:
    return "dlq", b"k", value, [("dlq.reason", b"too_large"), ("dlq.detail", b"d" * 900),
                                ("dlq.source.topic", b"tx"), ("dlq.source.partition", b"1"),
                                ("dlq.source.offset", b"7")]


def too_large_over(limit: int) -> Refuse:
    """A topic whose max.message.bytes is ``limit``: a batch holding a larger value is refused for good."""
    def refuse(topic: str, records: list[tuple[Any, Any, Any]]) -> object:
        return ae.MessageSizeTooLargeError() if any(len(v or b"") > limit for _, v, _ in records) else None
    return refuse


def test_retriable_errors_are_retried_until_acknowledged(tmp_path: Path) -> None:
    calls = iter([ae.NotLeaderForPartitionError(), ae.KafkaTimeoutError(), None])
    pub, prod = publisher(tmp_path, lambda topic, records: next(calls))
    acked = send(pub, [("scores", b"k", b"v", None)])
    assert len(prod.sent) == 3 and acked[0] > 0


def test_a_refused_batch_is_split_and_only_the_refused_dead_letter_becomes_a_stub(tmp_path: Path) -> None:
    pub, prod = publisher(tmp_path, too_large_over(1000))
    records = [dead_letter(b"a" * 10), dead_letter(b"b" * 5000), dead_letter(b"c" * 10)]
    acked = send(pub, records)
    assert all(acked) and pub.stubs == 1
    # Refused together, then each alone; the large one again, as a stub (in the next round).
    assert [len(r) for _, r in prod.sent] == [3, 1, 1, 1, 1]
    delivered = [r for _, batch in prod.sent[1:] for r in batch if not (r[1] or b"").startswith(b"b")]
    assert [r[1][:1] for r in delivered] == [b"a", b"c", b""]
    headers = dict(delivered[2][2])
    assert headers[STUB_HEADER] == b"MessageSizeTooLargeError" and headers["dlq.source.offset"] == b"7"


def test_a_refused_output_that_is_not_a_dead_letter_stops_naming_its_topic(tmp_path: Path) -> None:
    pub, prod = publisher(tmp_path, too_large_over(100))
    with pytest.raises(OutputRefused, match="topic 'scores'"):
        send(pub, [("scores", b"k", b"v", None), ("scores", b"k", b"x" * 500, None)])
    assert [len(r) for _, r in prod.sent] == [2, 1, 1]  # found by sending each alone, not retried as it was


def test_a_refused_stub_stops_the_worker_rather_than_loop(tmp_path: Path) -> None:
    pub, prod = publisher(tmp_path, lambda topic, records: ae.TopicAuthorizationFailedError())
    with pytest.raises(OutputRefused, match="topic 'dlq'"):
        send(pub, [dead_letter(b"v")])
    assert len(prod.sent) == 2 and pub.stubs == 1  # the original, then its stub
    assert pub.metrics is not None
    text = pub.metrics.exposition().decode()
    assert 'fraudstream_outputs_refused_total{topic="dlq"} 1.0' in text
    assert "fraudstream_dead_letter_stubs_total 1.0" in text


def test_a_non_retriable_metadata_error_stops_naming_the_topic(tmp_path: Path) -> None:
    pub, prod = publisher(tmp_path, lambda topic, records: None)

    async def refused(topic: str) -> set[int]:
        raise ae.TopicAuthorizationFailedError()

    prod.partitions_for = refused  # type: ignore[method-assign]
    with pytest.raises(OutputRefused, match="topic 'flags'"):
        send(pub, [("flags", b"k", b"v", None)])


@pytest.mark.parametrize("verdict", [HANG, ae.NotLeaderForPartitionError()], ids=["unacknowledged", "retrying"])
def test_interrupt_ends_the_wait_naming_the_unacknowledged_topics(tmp_path: Path, verdict: object) -> None:
    pub, _ = publisher(tmp_path, lambda topic, records: None if topic == "flags" else verdict)

    async def scenario() -> PublishInterrupted:
        asyncio.get_running_loop().call_later(0.3, pub.interrupt)
        with pytest.raises(PublishInterrupted) as caught:
            await asyncio.wait_for(pub.send_all([("flags", b"k", b"v", None), ("scores", b"k", b"v", None),
                                                 ("scores", b"j", b"w", None)]), 5)
        return caught.value

    err = asyncio.run(scenario())
    assert err.unacknowledged == 2 and err.topics == ["scores"]
    assert "2 output record(s) to 'scores' not acknowledged" in str(err)
