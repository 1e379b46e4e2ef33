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
    assert "3 output record(s) to 'flags', 'scores' not acknowledged" in str(
        PublishInterrupted(3, None, ["scores", "flags", "scores"]))
    assert str(ComponentDied("watchdog", None)) == "component watchdog died: it was cancelled"


def test_supervisor_reports_the_first_component_that_ends_once_and_not_at_shutdown() -> None:
    async def scenario() -> tuple[list[tuple[str, str]], Supervisor]:
        deaths: list[tuple[str, str]] = []
        sup = Supervisor(lambda name, exc: deaths.append((name, repr(exc))))

        async def boom() -> None:
            raise RuntimeError("reader lost")

        async def forever() -> None:
            await asyncio.Event().wait()

        sup.watch("reader", asyncio.ensure_future(boom()))
        labels = sup.spawn("labels", forever())
        await asyncio.sleep(0.01)
        assert sup.kill("labels") and not sup.kill("nobody")
        await asyncio.sleep(0.01)
        assert labels.cancelled()  # a second death: the worker already stops for the first
        return deaths, sup

    deaths, sup = asyncio.run(scenario())
    assert deaths == [("reader", "RuntimeError('reader lost')")]
    assert sup.first is not None and sup.first[0] == "reader"
    with pytest.raises(RuntimeError, match="not started"):
        Supervisor(lambda n, e: None).watch("x", None)


@pytest.mark.parametrize("how", ["cancelled", "returned"])
def test_a_cancelled_or_returning_component_is_a_death(how: str) -> None:
    async def scenario() -> list[tuple[str, BaseException | None]]:
        deaths: list[tuple[str, BaseException | None]] = []
        sup = Supervisor(lambda name, exc: deaths.append((name, exc)))
        task = sup.spawn("stats", asyncio.sleep(0 if how == "returned" else 60))
        await asyncio.sleep(0.01)
        if how == "cancelled":
            task.cancel()
            await asyncio.sleep(0.01)
        return deaths

    assert asyncio.run(scenario()) == [("stats", None)]


def test_stop_cancels_the_spawned_components_without_a_death() -> None:
    async def scenario() -> tuple[list[str], asyncio.Future[None], asyncio.Task[None]]:
        deaths: list[str] = []
        sup = Supervisor(lambda name, exc: deaths.append(name))
        adopted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sup.watch("consumer", adopted)  # owned by its component: it ends itself
        spawned = sup.spawn("flusher", asyncio.sleep(60))
        await asyncio.sleep(0.01)
        sup.stop()
        await asyncio.sleep(0.01)
        adopted.set_result(None)
        await asyncio.sleep(0.01)
        return deaths, adopted, spawned

    deaths, adopted, spawned = asyncio.run(scenario())
    assert deaths == [] and spawned.cancelled() and not adopted.cancelled()
