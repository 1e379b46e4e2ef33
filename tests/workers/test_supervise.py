"""Unit tests of the pieces that keep a worker from wedging or freezing: which produce errors are
retried, the dead-letter stub, and the supervisor of background components."""

from __future__ import annotations

import asyncio

import aiokafka.errors as ae
import pytest

from workers.errors import ComponentDied, OutputRefused, PublishInterrupted, retriable
from workers.health import Supervisor
from workers.publish import STUB_HEADER, stub


@pytest.mark.parametrize(("exc", "expected"), [
    (ae.NotLeaderForPartitionError(), True),
    (ae.RequestTimedOutError(), True),
    (ae.KafkaTimeoutError(), True),  # the producer's own timeout: aiokafka leaves its flag False
    (ae.KafkaConnectionError(), True),
    (ae.MessageSizeTooLargeError(), False),
    (ae.TopicAuthorizationFailedError(), False),
    (ae.InvalidTimestampError(), False),
    (ValueError("not kafka"), False),
])
def test_which_errors_are_retried(exc: BaseException, expected: bool) -> None:
    assert retriable(exc) is expected


def test_a_stub_keeps_where_the_record_came_from_and_nothing_large() -> None:
    headers = [("dlq.reason", b"too_large"), ("dlq.detail", b"d" * 1000), ("dlq.source.topic", b"tx"),
               ("dlq.source.partition", b"3"), ("dlq.source.offset", b"42"), ("dlq.worker", b"w1")]
    topic, key, value, got = stub(("dlq", b"k" * 10_000, b"v" * 2_000_000, headers), ae.MessageSizeTooLargeError())
    h = dict(got or [])
    assert topic == "dlq" and value == b"" and key is not None and len(key) == 256
    assert (h["dlq.reason"], h["dlq.source.topic"], h["dlq.source.partition"], h["dlq.source.offset"]) == (
        b"too_large", b"tx", b"3", b"42")
    assert len(h["dlq.detail"]) == 200 and h[STUB_HEADER] == b"MessageSizeTooLargeError"
    assert sum(len(k) + len(v) for k, v in got or []) < 1000


def test_errors_name_what_to_do() -> None:
    assert "topic 'scores'" in str(OutputRefused("scores", ae.MessageSizeTooLargeError(), 3))
    assert "3 output record(s) not acknowledged" in str(PublishInterrupted(3))
    assert str(ComponentDied("watchdog", None)) == "component watchdog died: it was cancelled"


def test_supervisor_reports_the_first_component_that_ends_but_not_at_shutdown() -> None:
    async def scenario() -> list[tuple[str, str]]:
        deaths: list[tuple[str, str]] = []
        sup = Supervisor(lambda name, exc: deaths.append((name, repr(exc))))

        async def boom() -> None:
            raise RuntimeError("reader lost")

        async def forever() -> None:
            await asyncio.Event().wait()

        sup.watch("reader", asyncio.ensure_future(boom()))
        sup.watch("labels", asyncio.ensure_future(forever()))
        sup.watch("returns", asyncio.ensure_future(asyncio.sleep(0)))
        await asyncio.sleep(0.01)
        assert sup.kill("labels") and not sup.kill("nobody")
        await asyncio.sleep(0.01)
        sup.stopping = True  # from here on components end with the worker
        sup.watch("late", asyncio.ensure_future(boom()))
        await asyncio.sleep(0.01)
        return deaths

    deaths = asyncio.run(scenario())
    assert sorted(deaths) == [("labels", "None"), ("reader", "RuntimeError('reader lost')"), ("returns", "None")]
    with pytest.raises(RuntimeError, match="not started"):
        Supervisor(lambda n, e: None).watch("x", None)
