"""The worker's pure state: partition-local customers, day closing, labels, the shared table."""

from __future__ import annotations

import orjson

from schemas.features import DAY_MS
from schemas.validate import Reject, Tx
from workers.state import LabelPartition, TxPartition
from workers.terminals import LAB, LABWM, TX, TXWM, TerminalTable, partial_key, watermark_key

D0 = 17_700 * DAY_MS  # a day boundary
HOUR = 3_600_000


def tx(i: int, ts: int, customer: str = "c1", terminal: str = "t1", cents: int = 100) -> Tx:
    return Tx(f"tx{i}", ts, customer, terminal, cents)


def test_admission_is_idempotent_and_refuses_duplicates_and_late_events() -> None:
    p = TxPartition(0, lateness_ms=HOUR)
    assert p.admit(tx(1, D0 + 10 * HOUR), offset=0) is True
    assert p.admit(tx(1, D0 + 10 * HOUR), offset=0) is False  # redelivery of the same offset
    dup = p.admit(tx(1, D0 + 11 * HOUR), offset=5)
    assert isinstance(dup, Reject) and dup.reason == "duplicate_tx_id"
    assert p.admit(tx(2, D0 + 9 * HOUR + 1), offset=1) is True  # within the lateness
    late = p.admit(tx(3, D0 + 8 * HOUR), offset=2)
    assert isinstance(late, Reject) and late.reason == "late"
    assert p.customers["c1"].keys == [(D0 + 9 * HOUR + 1, "tx2"), (D0 + 10 * HOUR, "tx1")]


def test_days_close_behind_the_watermark_with_distinct_counts() -> None:
    p = TxPartition(3, lateness_ms=HOUR)
    p.admit(tx(1, D0 + 1, terminal="a"), 0)
    p.admit(tx(2, D0 + 2, terminal="a"), 1)
    p.admit(tx(3, D0 + 3, terminal="b"), 2)
    assert p.close_days() == []  # day D0 is still open (the watermark is inside it)
    p.admit(tx(4, D0 + DAY_MS + 2 * HOUR, terminal="a"), 3)  # watermark = next day + 1h
    assert p.close_days() == [(D0 // DAY_MS, {"a": 2, "b": 1})]
    assert p.closed_through == D0 // DAY_MS
    assert p.close_days() == []
    p.admit(tx(5, D0 + 3 * DAY_MS + 2 * HOUR, terminal="c"), 4)
    assert p.close_days() == [(D0 // DAY_MS + 1, {"a": 1})]  # an empty day closes without a record
    assert p.closed_through == D0 // DAY_MS + 2


def test_labels_count_frauds_and_corrections_and_close_when_idle() -> None:
    q = LabelPartition(1, lateness_ms=0)
    q.admit("x", "t1", D0 + 5, True)
    q.admit("y", "t1", D0 + 6, True)
    q.admit("y", "t1", D0 + 6, False)  # a corrected label
    q.admit("x", "t1", D0 + 5, True)   # a duplicate
    assert q.close_days() == []
    assert q.close_days(idle_through=D0 // DAY_MS) == [(D0 // DAY_MS, {"t1": 1})]
    late = q.admit("z", "t1", D0 + 7, True)
    assert isinstance(late, Reject) and late.reason == "late"


def test_table_is_final_only_when_every_partition_closed_and_replacements_are_idempotent() -> None:
    table = TerminalTable(tx_partitions=2, label_partitions=1)
    day = D0 // DAY_MS
    table.apply(partial_key(TX, 0, day), orjson.dumps({"t1": 3, "t2": 1}))
    table.apply(watermark_key(TXWM, 0), orjson.dumps(day))
    assert table.final_through() is None
    table.apply(partial_key(TX, 1, day), orjson.dumps({"t1": 2}))
    table.apply(watermark_key(TXWM, 1), orjson.dumps(day + 3))
    assert table.tx_final_through() == day and table.final_through() is None
    table.apply(partial_key(LAB, 0, day), orjson.dumps({"t1": 1}))
    table.apply(watermark_key(LABWM, 0), orjson.dumps(day + 1))
    assert table.final_through() == day
    assert table.windows("t1", day)[0] == (5, 1)  # the 1-day window: the day itself
    # Re-publishing the same key (a restart) replaces, never adds.
    table.apply(partial_key(TX, 1, day), orjson.dumps({"t1": 2}))
    assert table.windows("t1", day) == [(5, 1)] * 3
    # A watermark never moves back.
    table.apply(watermark_key(TXWM, 1), orjson.dumps(day - 10))
    assert table.tx_wm[1] == day + 3


def test_a_redriven_dead_letter_is_its_original_record_not_a_duplicate() -> None:
    from workers.batch import Record, admit_one, replay_of

    p = TxPartition(0, lateness_ms=HOUR)
    body = orjson.dumps({"tx_id": "a", "ts": D0, "customer_id": "c1", "terminal_id": "t1", "amount": 1.0})
    assert admit_one(Record(0, 5, D0, b"c1", body, 0), p, HOUR) == Tx("a", D0, "c1", "t1", 100)
    headers = [("dlq.replayed-from", b"dlq/0/3"), ("dlq.source.partition", b"0"), ("dlq.source.offset", b"5")]
    redriven = Record(0, 9, D0, b"c1", body, 0, replay_of(0, headers))
    assert redriven.replay_of == 5
    assert admit_one(redriven, p, HOUR) == Tx("a", D0, "c1", "t1", 100)
    assert p.customers["c1"].keys == [(D0, "a")]  # counted once
    plain_copy = admit_one(Record(0, 10, D0, b"c1", body, 0), p, HOUR)
    assert isinstance(plain_copy, Reject) and plain_copy.reason == "duplicate_tx_id"
    assert replay_of(1, headers) is None and replay_of(0, None) is None


def test_seen_ids_are_forgotten_a_whole_day_at_a_time_once_past_the_horizon() -> None:
    from schemas.features import CUSTOMER_HORIZON_MS

    state = TxPartition(0, lateness_ms=0)
    day0 = 17_000 * DAY_MS

    def tx(tx_id: str, ts: int) -> Tx:
        return Tx(tx_id, ts, "c1", "t1", 100)

    assert state.admit(tx("old", day0 + 5), 0) is True
    assert state.admit(tx("mid", day0 + DAY_MS + 5), 1) is True
    state.close_days()
    # Still within the horizon: a new offset with the same id is a duplicate.
    assert not isinstance(state.admit(tx("old", day0 + DAY_MS + 6), 2), bool)
    # The watermark moves past the horizon of day0 (not of day0 + 1): "old" is forgotten, "mid" is not.
    assert state.admit(tx("new", day0 + CUSTOMER_HORIZON_MS + DAY_MS + 10), 3) is True
    state.close_days()
    assert "old" not in state.seen and "mid" in state.seen
    assert sorted(state.seen_days) == [day0 // DAY_MS + 1, (day0 + CUSTOMER_HORIZON_MS + DAY_MS + 10) // DAY_MS]


def test_table_windows_in_one_pass_equal_each_window_summed_on_its_own() -> None:
    import random

    from schemas.features import TERMINAL_WINDOWS_DAYS, TerminalDays

    rng = random.Random(7)
    table = TerminalTable(tx_partitions=2, label_partitions=1)
    ref = TerminalDays()
    day0 = D0 // DAY_MS
    for p in (0, 1):
        for day in range(day0, day0 + 45):
            counts = {f"t{t}": rng.randint(1, 4) for t in range(6) if rng.random() < 0.6}
            table.apply(partial_key(TX, p, day), orjson.dumps(counts))
            for t, n in counts.items():
                for k in range(n):
                    ref.add_transaction(t, day * DAY_MS, f"{p}-{day}-{t}-{k}")
    for day in range(day0, day0 + 45):
        frauds = {f"t{t}": 1 for t in range(6) if rng.random() < 0.2}
        table.apply(partial_key(LAB, 0, day), orjson.dumps(frauds))
        for t in frauds:
            ref.add_label(t, day * DAY_MS, f"0-{day}-{t}-0", True)
    assert sorted(TERMINAL_WINDOWS_DAYS) == list(TERMINAL_WINDOWS_DAYS)
    for t in ("t0", "t3", "t5", "nowhere"):
        for hi in (day0, day0 + 10, day0 + 44, day0 + 50):
            assert table.windows(t, hi) == ref.windows(t, hi), (t, hi)
