"""``step_forever``: the retry loop of the label aggregator and the model monitor."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import NotLeaderForPartitionError, TopicAuthorizationFailedError

from workers.errors import step_forever

LOG = logging.getLogger("test")


class Done(Exception):
    pass


def run(outcomes: list[BaseException | None], monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], int]:
    """Feed ``step_forever`` a step that raises (or not) in turn; the sleeps it asked for and the calls."""
    slept: list[float] = []
    calls = 0

    async def no_sleep(s: float) -> None:
        slept.append(s)

    async def step() -> None:
        nonlocal calls
        calls += 1
        exc = outcomes.pop(0) if outcomes else Done()
        if exc is not None:
            raise exc

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    with pytest.raises(Done):
        asyncio.run(step_forever(step, "test", LOG))
    return slept, calls


def test_retriable_errors_back_off_doubling_and_reset_after_a_success(monkeypatch: pytest.MonkeyPatch) -> None:
    retry = NotLeaderForPartitionError
    slept, calls = run([retry(), retry(), retry(), None, retry(), *[retry() for _ in range(6)]], monkeypatch)
    assert slept == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert calls == 12


def test_a_non_retriable_error_ends_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def no_sleep(s: float) -> None:
        slept.append(s)

    async def step() -> None:
        raise TopicAuthorizationFailedError()

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(step_forever(step, "test", LOG))
    assert slept == []
