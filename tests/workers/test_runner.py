"""The data path between Faust and the broker, with in-memory doubles for the scorer and publisher.

Covers what needs no Kafka: records wait for final terminal buckets and are released per
partition in offset order, a batch that keeps failing to score is retried and then
dead-lettered, and a transaction whose buckets never become final is dead-lettered after the
bound.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from schemas.bundle import Bundle
from schemas.errors import ScoringError
from schemas.features import DAY_MS, FEEDBACK_DELAY_DAYS
from workers.batch import Record
from workers.config import Topics, parse
from workers.runner import Runner
from workers.state import TxPartition
from workers.terminals import TerminalTable

D0 = 17_700 * DAY_MS


class FakeScorer:
    provider = "CPUExecutionProvider"
    graph = "tree"

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.calls = failures, 0

    def score(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ScoringError("boom")
        return np.full(len(x), 0.75, dtype=np.float32)


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, Any]] = []       # outputs
        self.closures: list[tuple[str, bytes | None, bytes, Any]] = []   # terminal-days records

    async def send_all(self, records: Any) -> list[int]:
        batch = list(records)
        for r in batch:
            (self.closures if r[0] == Topics().terminal_days else self.sent).append(r)
        return [1] * len(batch)

    def interrupt(self) -> None:
        pass


def make_runner(tmp_path: Path, scorer: FakeScorer, **flags: str) -> tuple[Runner, TerminalTable, FakePublisher]:
    argv = ["--retries", "2", "--retry-backoff-ms", "1", "--data-dir", str(tmp_path)]
    for k, v in flags.items():
        argv += [f"--{k.replace('_', '-')}", v]
    s = parse(argv)
    table = TerminalTable(tx_partitions=2, label_partitions=1)
    pub = FakePublisher()
    bundle = Bundle(tmp_path, {"model_version": "m1", "threshold": {"value": 0.5}})
    runner = Runner(s, bundle, scorer, table, pub)
    for p in (0, 1):
        runner.states[p] = TxPartition(p, s.lateness_ms)
        runner.states[p].next_offset = 0
    return runner, table, pub


def rec(p: int, offset: int, ts: int, tx_id: str, value: bytes | None = None) -> Record:
    body = value if value is not None else orjson.dumps(
        {"tx_id": tx_id, "ts": ts, "customer_id": "c1", "terminal_id": "t1", "amount": 12.5})
    return Record(p, offset, ts + 1000, b"c1", body, ts + 1000)


def finalize(table: TerminalTable, day: int) -> None:
    """Make the table ready through transaction day ``day``: the days its windows read closed by every
    transactions partition, and its label report slot closed."""
    table.tx_wm.update({0: day - FEEDBACK_DELAY_DAYS - 1, 1: day - FEEDBACK_DELAY_DAYS - 1})
    table.label_wm.update({0: day})


def test_records_wait_for_final_buckets_then_flush_in_offset_order(tmp_path: Path) -> None:
    runner, table, pub = make_runner(tmp_path, FakeScorer())
    ts = D0 + 3600_000
    batch = [rec(0, 0, ts, "a"), rec(0, 1, ts + 1, "b", b"{broken"), rec(0, 2, ts + 2, "c")]

    async def go() -> tuple[list[Record], list[Record]]:
        await runner.admit(batch)
        before = await runner.flush()
        finalize(table, D0 // DAY_MS)
        return before, await runner.flush()

    before, after = asyncio.run(go())
    assert before == []  # "a" is not final yet, and "b" waits behind it (offset order)
    assert [r.offset for r in after] == [0, 1, 2]
    topics = [t for t, *_ in pub.sent]
    assert topics.count(runner.s.topics.scores) == 2 and topics.count(runner.s.topics.flags) == 2
    assert topics.count(runner.s.topics.dlq) == 1


def test_a_batch_that_keeps_failing_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    scorer = FakeScorer(failures=10)
    runner, table, pub = make_runner(tmp_path, scorer)
    finalize(table, 10**6)

    async def go() -> list[Record]:
        await runner.admit([rec(1, 0, D0, "a"), rec(1, 1, D0 + 5, "b")])
        return await runner.flush()

    done = asyncio.run(go())
    assert [r.offset for r in done] == [0, 1]
    assert scorer.calls == 3  # the first try and 2 retries
    reasons = [dict(h)["dlq.reason"] for t, _, _, h in pub.sent if t == runner.s.topics.dlq]
    assert reasons == [b"scoring_failed", b"scoring_failed"]


def test_a_transaction_whose_buckets_never_finalise_is_dead_lettered_after_the_bound(tmp_path: Path) -> None:
    runner, _, pub = make_runner(tmp_path, FakeScorer(), terminal_wait_s="0")

    async def go() -> list[Record]:
        await runner.admit([rec(0, 0, D0, "a")])
        return await runner.flush()

    assert [r.offset for r in asyncio.run(go())] == [0]
    (_, _, value, headers), = pub.sent
    assert dict(headers)["dlq.reason"] == b"terminal_state_not_final" and b'"tx_id":"a"' in value


def test_a_partition_waiting_does_not_hold_back_another(tmp_path: Path) -> None:
    runner, table, _ = make_runner(tmp_path, FakeScorer())
    early, late = D0, D0 + 5 * DAY_MS
    finalize(table, early // DAY_MS)

    async def go() -> list[Record]:
        await runner.admit([rec(0, 0, late, "late"), rec(1, 0, early, "early")])
        return await runner.flush()

    assert [(r.partition, r.offset) for r in asyncio.run(go())] == [(1, 0)]
    assert runner.pending_count() == 1


def test_backpressure_pauses_only_the_partitions_whose_queues_are_long(tmp_path: Path) -> None:
    runner, _, _ = make_runner(tmp_path, FakeScorer())
    far = D0 + 20 * DAY_MS  # needs buckets nobody closed: stays queued

    async def go() -> None:
        await runner.admit([rec(0, i, far + i, f"a{i}") for i in range(30)] + [rec(1, 0, far, "b0")])

    asyncio.run(go())
    pause, resume = runner.flow(set(), limit=10)
    assert pause == {0} and resume == set()
    runner.pending[0].clear()
    assert runner.flow({0}, limit=10) == (set(), {0})


def test_day_closures_of_all_partitions_go_in_two_sends_counts_before_watermarks(tmp_path: Path) -> None:
    runner, _, pub = make_runner(tmp_path, FakeScorer())
    calls: list[list[bytes | None]] = []
    send_all = pub.send_all

    async def recording(records: Any) -> list[int]:
        batch = list(records)
        calls.append([r[1] for r in batch if r[0] == Topics().terminal_days])
        return await send_all(batch)

    pub.send_all = recording  # type: ignore[method-assign]
    day0, late = D0, D0 + 3 * DAY_MS

    async def go() -> None:
        await runner.admit([rec(0, 0, day0, "a"), rec(1, 0, day0, "b")])
        calls.clear()  # the first batch published both partitions' first watermarks
        await runner.admit([rec(0, 1, late, "c"), rec(1, 1, late, "d")])

    asyncio.run(go())
    closing = [c for c in calls if c]
    assert len(closing) == 2, closing  # one send of both partitions' counts, then one of their watermarks
    assert all(k is not None and k.startswith(b"tx/") for k in closing[0])
    assert sorted(k.split(b"/")[1] for k in closing[0] if k) == [b"0", b"1"]
    assert sorted(closing[1]) == [b"txwm/0", b"txwm/1"]


def test_a_quiet_caught_up_partition_is_closed_up_to_the_others_so_their_transactions_are_scored(
        tmp_path: Path) -> None:
    runner, table, pub = make_runner(tmp_path, FakeScorer())
    del runner.states[1]  # partition 1 has had no record at all since it was assigned
    ts = D0 + 20 * DAY_MS
    needed = ts // DAY_MS
    table.label_wm.update({0: needed})

    async def go() -> tuple[list[Record], int, list[Record]]:
        await runner.admit([rec(0, 0, ts, "a"), rec(0, 1, ts + 2 * DAY_MS, "b")])  # partition 0 closes days
        before = await runner.flush()  # partition 1 never closed anything: nothing is final
        moved = await runner.close_idle({1})
        return before, moved, await runner.flush()

    before, moved, after = asyncio.run(go())
    assert before == [] and moved == 1
    assert table.tx_wm[1] == table.tx_wm[0] == ts // DAY_MS and table.ready_through() == needed
    assert [r.offset for r in after] == [0]  # "a" is scored; "b" needs a later day
    assert [orjson.loads(v)["tx_id"] for t, _, v, _ in pub.sent if t == Topics().scores] == ["a"]
    # A transaction that turns up later on the idle partition, for a day it closed, is late.
    late = TxPartition(1, runner.s.lateness_ms)
    late.close_days(idle_through=ts // DAY_MS)
    from schemas.validate import Tx

    got = late.admit(Tx("x", ts, "c9", "t9", 100), 0)
    assert not isinstance(got, bool) and got.reason == "late"
    assert late.admit(Tx("y", ts + DAY_MS, "c9", "t9", 100), 1) is True
