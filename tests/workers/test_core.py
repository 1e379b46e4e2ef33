"""The sans-I/O core (workers/core.py) and the batch policy (workers/batching.py): no broker, no asyncio."""

from __future__ import annotations

import numpy as np
import orjson

from schemas.features import DAY_MS, OnlineState
from workers.batch import Record
from workers.batching import MIN_CAP, BatchPolicy
from workers.config import Topics
from workers.core import Core, CoreConfig
from workers.state import TxPartition
from workers.terminals import TerminalTable

D0 = 17_700 * DAY_MS + 10 * 3_600_000
TOPICS = Topics()


def make_core(partitions: int = 2, wait_s: float = 60.0) -> tuple[Core, TerminalTable]:
    table = TerminalTable(tx_partitions=partitions, label_partitions=1)
    core = Core(CoreConfig(lateness_ms=60_000, max_future_ms=3_600_000, terminal_wait_s=wait_s, threshold=0.5,
                           model_version="m1", worker_id="w1", topics=TOPICS), table)
    for p in range(partitions):
        core.install(p, TxPartition(p, 60_000))
        core.states[p].next_offset = 0
    return core, table


def tx(p: int, offset: int, ts: int, tx_id: str, customer: str = "c1", cents: int = 1250,
       value: bytes | None = None) -> Record:
    body = value if value is not None else orjson.dumps(
        {"tx_id": tx_id, "ts": ts, "customer_id": customer, "terminal_id": "t1", "amount": cents / 100})
    return Record(p, offset, ts + 1000, customer.encode(), body, ts + 1000)


def ready_through(table: TerminalTable, day: int) -> None:
    table.tx_wm.update({p: day - 8 for p in range(table.tx_partitions)})
    table.label_wm.update({q: day for q in range(table.label_partitions)})


def test_a_decision_holds_the_reference_rows_dead_letters_and_commit_offsets() -> None:
    core, table = make_core()
    batch = [tx(0, 0, D0, "a", "c1", 1000), tx(0, 1, D0 + 5, "b", "c2", 2000),
             tx(0, 2, D0 + 9, "x", value=b"{broken"), tx(1, 0, D0 + 7, "c", "c1", 3000),
             tx(0, 3, D0 + 20, "d", "c1", 4000)]
    core.admit(batch, now=0.0)
    assert core.decide(now=0.0) is None  # nothing is final yet
    ready_through(table, D0 // DAY_MS)
    d = core.decide(now=0.0)
    assert d is not None
    assert [(r.partition, r.offset) for r in d.records] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert [(r.offset, rj.reason) for r, rj in d.dead] == [(2, "bad_json")]
    assert d.commits == {0: 4, 1: 1}
    assert d.min_ts == {0: D0, 1: D0 + 7}
    # The reference: one state per partition, fed in the same order, one transaction at a time.
    refs = {0: OnlineState(60_000), 1: OnlineState(60_000)}
    expected = [refs[a.record.partition].transaction(a.tx.tx_id, a.tx.ts, a.tx.customer_id, a.tx.terminal_id,
                                                     a.tx.cents) for a in d.ready]
    np.testing.assert_array_equal(d.rows, np.asarray(expected, dtype=np.float32))
    assert core.pending_count() == 0


def test_outputs_are_scores_flags_then_dead_letters() -> None:
    core, table = make_core()
    ready_through(table, D0 // DAY_MS)
    core.admit([tx(0, 0, D0, "a"), tx(0, 1, D0 + 1, "b"), tx(0, 2, D0 + 2, "x", value=b"")], now=0.0)
    d = core.decide(now=0.0)
    assert d is not None
    out = core.outputs(d, np.asarray([0.2, 0.9], dtype=np.float32), scored_at=123)
    assert [(t, k) for t, k, _, _ in out.records] == [
        (TOPICS.scores, b"a"), (TOPICS.scores, b"b"), (TOPICS.flags, b"b"), (TOPICS.dlq, b"c1")]
    assert (out.scored, out.flagged) == (3, 1)
    msg = orjson.loads(out.records[2][2] or b"")
    assert msg["tx_id"] == "b" and msg["flag"] is True and msg["score"] == float(np.float32(0.9))
    assert msg["timing"] == {"input_ts": D0 + 1001, "consumed_at": D0 + 1001, "scored_at": 123}
    assert dict(out.records[3][3] or [])["dlq.reason"] == b"empty"


def test_a_failed_scoring_dead_letters_the_transactions() -> None:
    core, table = make_core()
    ready_through(table, D0 // DAY_MS)
    core.admit([tx(0, 0, D0, "a")], now=0.0)
    d = core.decide(now=0.0)
    assert d is not None
    d.fail_scoring("boom")
    out = core.outputs(d, np.zeros(0, np.float32), scored_at=0)
    assert [t for t, *_ in out.records] == [TOPICS.dlq]
    assert dict(out.records[0][3] or [])["dlq.reason"] == b"scoring_failed"


def test_a_transaction_past_the_wait_bound_is_dead_lettered() -> None:
    core, _ = make_core(wait_s=5.0)
    core.admit([tx(1, 0, D0, "a")], now=100.0)
    assert core.decide(now=104.0) is None
    assert core.next_wait_s(now=104.0) == 1.0
    d = core.decide(now=105.5)
    assert d is not None and [rj.reason for _, rj in d.dead] == ["terminal_state_not_final"]


def test_lows_count_decided_records_whose_commit_is_still_to_come() -> None:
    core, table = make_core()
    ready_through(table, D0 // DAY_MS + 3)
    core.admit([tx(0, 0, D0, "a"), tx(0, 1, D0 + 3 * DAY_MS, "b")], now=0.0)
    d = core.decide(now=0.0)
    assert d is not None
    newest_day = (D0 + 3 * DAY_MS - 60_000) // DAY_MS
    assert core.lows() == {0: newest_day}
    assert core.lows({0: D0})[0] == D0 // DAY_MS


def test_recovery_is_needed_where_state_does_not_continue() -> None:
    core, _ = make_core()
    core.states[0].next_offset = 5
    assert core.recovery_needed([tx(0, 5, D0, "a"), tx(1, 3, D0, "b")]) == {1: 3}
    core.drop_partitions([0])
    assert core.recovery_needed([tx(0, 5, D0, "a")]) == {0: 5}


def test_fixed_policy_takes_the_flags_as_they_are() -> None:
    p = BatchPolicy(batch_size=1000, max_wait_ms=5.0)
    p.observe(1000, service_ms=500.0, in_worker_ms=900.0)
    assert (p.max_records(), p.fetch_wait_ms(), p.fill_wait_ms()) == (1000, 5.0, 0.0)


def test_adaptive_policy_fills_within_the_target_and_shrinks_when_over_it() -> None:
    p = BatchPolicy(batch_size=1000, max_wait_ms=5.0, target_ms=20.0)
    assert p.fill_wait_ms() == 10.0
    for _ in range(30):
        p.observe(200, service_ms=4.0, in_worker_ms=14.0)
    assert 5.5 < p.fill_wait_ms() < 6.5  # the processing time is taken out of the wait
    p.observe(1000, service_ms=30.0, in_worker_ms=35.0)
    assert p.max_records() == 500
    for _ in range(10):
        p.observe(p.max_records(), service_ms=30.0, in_worker_ms=35.0)
    assert p.max_records() == MIN_CAP and p.fill_wait_ms() == 0.0
    for _ in range(10):
        p.observe(p.max_records(), service_ms=1.0, in_worker_ms=2.0)
    assert p.max_records() == 1000


def test_fetches_wait_for_a_batch_when_busy_and_answer_at_once_when_quiet() -> None:
    fixed = BatchPolicy(batch_size=1000, max_wait_ms=5.0)
    assert fixed.fetch_options(busy=True) == {"fetch_max_wait_ms": 5, "fetch_min_bytes": 128_000}
    assert fixed.fetch_options(busy=False) == {"fetch_max_wait_ms": 500, "fetch_min_bytes": 1}
    adaptive = BatchPolicy(batch_size=100_000, max_wait_ms=5.0, target_ms=20.0)
    assert adaptive.fetch_options(busy=True) == {"fetch_max_wait_ms": 5, "fetch_min_bytes": 1 << 20}
