"""The stall watchdog on a fake clock: no Kafka, no sleeping (but for the driver's short intervals)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from workers.watchdog import Sample, Watchdog, run_watchdog


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def watch(stall_after_s: float = 30.0) -> tuple[Watchdog, Clock]:
    clock = Clock()
    return Watchdog(stall_after_s, clock=clock), clock


def test_a_partition_with_lag_and_no_progress_stalls_after_the_bound_not_before(
        caplog: pytest.LogCaptureFixture) -> None:
    dog, clock = watch(30)
    for t in range(0, 30, 5):  # 0 .. 25 s: still within the bound
        clock.t = 1000 + t
        dog.observe({3: Sample(end=120, position=100)})
        assert not dog.stalled(), t
    clock.t = 1029.9
    dog.observe({3: Sample(120, 100)})
    assert not dog.stalled()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fraudstream.watchdog"):
        clock.t = 1030
        dog.observe({3: Sample(120, 100)})
    assert set(dog.stalled()) == {3}
    h = dog.stalled()[3]
    assert h.lag == 20 and h.stalled_for_s == pytest.approx(30)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "partition 3 stalled" in line and "lag 20" in line and "30.0s" in line


def test_the_warning_repeats_while_the_stall_lasts_not_at_every_sample(caplog: pytest.LogCaptureFixture) -> None:
    dog, clock = watch(10)
    with caplog.at_level(logging.WARNING, logger="fraudstream.watchdog"):
        for t in range(0, 200, 5):
            clock.t = 1000 + t
            dog.observe({0: Sample(5, 1)})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 3 <= len(warnings) <= 4  # at 10 s, then once a minute


def test_a_caught_up_partition_is_never_stalled_and_new_records_restart_the_clock() -> None:
    dog, clock = watch(30)
    for t in range(0, 300, 5):
        clock.t = 1000 + t
        dog.observe({0: Sample(50, 50), 1: Sample(0, 0)})
        assert not dog.stalled()
    last_caught_up = clock.t
    clock.t += 5
    dog.observe({0: Sample(70, 50)})  # records arrived; nothing processed since
    assert not dog.stalled()
    clock.t = last_caught_up + 29
    dog.observe({0: Sample(70, 50)})
    assert not dog.stalled()
    clock.t = last_caught_up + 30
    dog.observe({0: Sample(70, 50)})
    assert set(dog.stalled()) == {0}


def test_progress_keeps_a_busy_partition_healthy_and_clears_a_stall_at_once() -> None:
    dog, clock = watch(30)
    for i in range(20):  # lag grows, but the position moves every sample: a slow partition, not a stall
        clock.t = 1000 + 5 * i
        dog.observe({0: Sample(1000 + 100 * i, 10 * i)})
        assert not dog.stalled()
    clock.t += 40
    dog.observe({0: Sample(5000, 190)})
    assert set(dog.stalled()) == {0}
    clock.t += 1
    dog.observe({0: Sample(5000, 191)})  # one record processed
    assert not dog.stalled()
    assert dog.partitions[0].lag == 4809


def test_a_bounded_wait_for_terminal_finality_is_not_a_stall_and_the_clock_starts_when_it_ends() -> None:
    dog, clock = watch(30)
    for t in range(0, 100, 5):
        clock.t = 1000 + t
        dog.observe({0: Sample(10, 5, waiting=True)})
        assert not dog.stalled()
    end_of_wait = clock.t
    clock.t = end_of_wait + 29
    dog.observe({0: Sample(10, 5)})
    assert not dog.stalled()
    clock.t = end_of_wait + 30
    dog.observe({0: Sample(10, 5)})
    assert set(dog.stalled()) == {0}


def test_revoked_partitions_are_forgotten_and_a_reassigned_one_starts_afresh() -> None:
    dog, clock = watch(30)
    dog.observe({0: Sample(10, 5), 1: Sample(10, 5)})
    clock.t += 31
    dog.observe({0: Sample(10, 5), 1: Sample(10, 5)})
    assert set(dog.stalled()) == {0, 1}
    clock.t += 1
    dog.observe({1: Sample(10, 5)})  # partition 0 revoked
    assert set(dog.partitions) == {1} and set(dog.stalled()) == {1}
    assert dog.lags() == {1: 5}
    clock.t += 1
    dog.observe({0: Sample(10, 5), 1: Sample(10, 5)})  # 0 is back: a fresh clock, its old stall is history
    assert set(dog.stalled()) == {1}
    clock.t += 1
    dog.observe({})
    assert dog.partitions == {} and dog.stalled() == {}


def test_lag_is_never_negative() -> None:
    assert Sample(end=10, position=12).lag == 0


def test_the_driver_samples_offsets_positions_and_skips_a_failed_sample() -> None:
    dog, clock = watch(1)
    assigned = {0, 1, 2}
    processed: dict[int, int] = {0: 7}  # partition 1 and 2: nothing processed since the assignment
    asked: list[tuple[set[int], set[int]]] = []
    seen: list[dict[int, int]] = []
    calls = 0

    async def offsets(parts: set[int], unknown: set[int]) -> tuple[dict[int, int], dict[int, int]]:
        nonlocal calls
        calls += 1
        asked.append((set(parts), set(unknown)))
        clock.t += 1
        if calls == 2:
            raise ConnectionError("broker away")
        return {0: 10, 1: 4, 2: 9}, {p: {1: 4, 2: 3}[p] for p in unknown}

    def sampled(d: Watchdog) -> None:
        seen.append(d.lags())

    async def go() -> None:
        task = asyncio.create_task(run_watchdog(dog, 0.01, lambda: assigned, lambda: processed,
                                                lambda p: False, offsets, sampled))
        while calls < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert asked[0] == ({0, 1, 2}, {1, 2})
    assert seen[0] == {0: 3, 1: 0, 2: 6}  # 1: committed at its end; 2: committed 3 of 9
    assert dog.samples == len(seen) == calls - 1  # the failed sample was skipped, not observed
    assert set(dog.stalled()) == {0, 2}  # no progress for more than 1 s of the fake clock, with lag
