"""The worker's pure state: partition-local customers, day closing, labels, the shared table."""

from __future__ import annotations

import orjson

from schemas.features import DAY_MS, FEEDBACK_DELAY_DAYS, TERMINAL_HORIZON_DAYS
from schemas.validate import Label, Reject, Tx
from workers.state import LabelPartition, TxPartition
from workers.terminals import LAB, LABWM, TX, TXLOW, TXWM, TerminalTable, dumps, partial_key, watermark_key

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
    assert p.history("c1") == [(D0 + 9 * HOUR + 1, "tx2"), (D0 + 10 * HOUR, "tx1")]


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


def lab(tx_id: str, ts: int, fraud: int, reported_at: int, terminal: str = "t1") -> Label:
    return Label(tx_id, ts, "c1", terminal, fraud, reported_at)


def test_labels_close_by_report_slot_with_the_latest_word_per_transaction() -> None:
    q = LabelPartition(1, lateness_ms=0)
    d = D0 // DAY_MS
    q.admit(lab("x", D0 + 5, 1, D0 + 2 * DAY_MS))
    q.admit(lab("y", D0 + 6, 1, D0 + 2 * DAY_MS + HOUR))
    q.admit(lab("y", D0 + 6, 0, D0 + 2 * DAY_MS + 2 * HOUR))  # a correction in the same slot
    q.admit(lab("x", D0 + 5, 1, D0 + 2 * DAY_MS))              # a duplicate
    q.admit(lab("w", D0 - 3 * DAY_MS, 1, D0 + 2 * DAY_MS))     # reported out of transaction-time order
    assert q.close_slots() == []  # the watermark is inside the slot's report span: it stays open
    # Idle: the stream's clock passes the cut-off of day d + 3 (an hour before its midnight).
    assert q.close_slots(idle_clock_ms=(d + 3) * DAY_MS - HOUR) == [
        (d + 3, {"t1": {d: 1, d - 3: 1}})]
    assert q.closed_through == d + 3
    # x is retracted weeks later: a negative change in a later slot, never a dead letter.
    q.admit(lab("x", D0 + 5, 0, D0 + 20 * DAY_MS))
    assert q.close_slots(idle_clock_ms=(d + 21) * DAY_MS) == [(d + 21, {"t1": {d: -1}})]


def test_a_label_later_than_its_closed_slot_counts_from_the_next_one() -> None:
    q = LabelPartition(0, lateness_ms=0)
    d = D0 // DAY_MS
    q.close_slots(idle_clock_ms=(d + 5) * DAY_MS)
    q.admit(lab("z", D0, 1, D0 + 2 * DAY_MS))  # its slot (d + 3) is closed already
    assert q.restamped == 1
    assert q.close_slots(idle_clock_ms=(d + 7) * DAY_MS) == [(d + 6, {"t1": {d: 1}})]


def test_label_state_is_bounded_by_the_terminal_horizon() -> None:
    q = LabelPartition(0, lateness_ms=0)
    d = D0 // DAY_MS
    for i in range(200):
        q.admit(lab(f"x{i}", D0 + i * DAY_MS, 1, D0 + i * DAY_MS + 2 * DAY_MS))
        q.close_slots(idle_clock_ms=D0 + (i + 3) * DAY_MS)
    sizes = q.sizes()
    assert sizes["label_frauds"] <= TERMINAL_HORIZON_DAYS + 4 and sizes["label_open_slots"] <= 2
    assert min(q.frauds) >= q.closed_through - TERMINAL_HORIZON_DAYS - 1 > d
    old = lab("old", D0, 1, D0 + 150 * DAY_MS)  # a label of a day no window reaches any more
    q.admit(old)
    assert q.beyond_horizon == 1


def test_table_is_ready_only_when_every_partition_closed_and_replacements_are_idempotent() -> None:
    table = TerminalTable(tx_partitions=2, label_partitions=1)
    day = D0 // DAY_MS
    d = day + FEEDBACK_DELAY_DAYS + 1  # a transaction day whose newest window day is `day`
    table.apply(partial_key(TX, 0, day), orjson.dumps({"t1": 3, "t2": 1}))
    table.apply(watermark_key(TXWM, 0), orjson.dumps(day))
    assert table.ready_through() is None
    table.apply(partial_key(TX, 1, day), orjson.dumps({"t1": 2}))
    table.apply(watermark_key(TXWM, 1), orjson.dumps(day + 3))
    assert table.tx_final_through() == day and table.ready_through() is None
    table.apply(partial_key(LAB, 0, day + 2), dumps({"t1": {day: 1}}))
    table.apply(watermark_key(LABWM, 0), orjson.dumps(d - 1))
    assert table.ready_through() == d - 1  # the slot of day d is not closed yet
    table.apply(watermark_key(LABWM, 0), orjson.dumps(d + 5))
    assert table.ready_through() == d
    assert table.windows("t1", d)[0] == (5, 1)  # the 1-day window: `day` itself
    # Re-publishing the same key (a restart) replaces, never adds.
    table.apply(partial_key(TX, 1, day), orjson.dumps({"t1": 2}))
    table.apply(partial_key(LAB, 0, day + 2), dumps({"t1": {day: 1}}))
    assert table.windows("t1", d) == [(5, 1)] * 3
    # A label's change counts only from its slot on.
    assert table.windows("t1", day + 1) == [(0, 0)] * 3
    # A watermark never moves back.
    table.apply(watermark_key(TXWM, 1), orjson.dumps(day - 10))
    assert table.tx_wm[1] == day + 3


def test_table_drops_days_below_the_floor_of_every_partition_and_names_the_keys_to_tombstone() -> None:
    table = TerminalTable(tx_partitions=2, label_partitions=1)
    d0 = D0 // DAY_MS
    for day in range(d0, d0 + 100):
        table.apply(partial_key(TX, 0, day), orjson.dumps({"t1": 1, f"gone{day}": 1}))
        table.apply(partial_key(LAB, 0, day + 3), dumps({"t1": {day: 1}}))
    table.apply(watermark_key(TXLOW, 0), orjson.dumps(d0 + 99))
    assert table.floor is None and table.sizes()["terminal_days"] == 200  # partition 1 has no low yet
    table.apply(watermark_key(TXLOW, 1), orjson.dumps(d0 + 90))
    floor = d0 + 90 - TERMINAL_HORIZON_DAYS - 1
    assert table.floor == floor
    assert table.sizes()["terminals"] == 1 + (d0 + 100 - floor)
    assert table.sizes()["terminal_days"] == 2 * (d0 + 100 - floor)
    stale = table.take_stale(TX, {0})
    assert len(stale) == floor - d0 and partial_key(TX, 0, d0) in stale
    assert table.take_stale(TX, {0}) == []
    assert len(table.take_stale(LAB, {0})) == floor - d0 - 3
    # Windows above the floor are untouched; a record below the floor (a late re-publish) is ignored.
    assert table.windows("t1", d0 + 90) == [(1, 1), (7, 7), (30, 30)]
    table.apply(partial_key(TX, 0, d0), orjson.dumps({"t1": 5}))
    assert table.sizes()["terminal_days"] == 2 * (d0 + 100 - floor)


def test_a_redriven_dead_letter_is_its_original_record_not_a_duplicate() -> None:
    from workers.batch import Record, admit_one, replay_of

    p = TxPartition(0, lateness_ms=HOUR)
    body = orjson.dumps({"tx_id": "a", "ts": D0, "customer_id": "c1", "terminal_id": "t1", "amount": 1.0})
    assert admit_one(Record(0, 5, D0, b"c1", body, 0), p, HOUR) == Tx("a", D0, "c1", "t1", 100)
    headers = [("dlq.replayed-from", b"dlq/0/3"), ("dlq.source.partition", b"0"), ("dlq.source.offset", b"5")]
    redriven = Record(0, 9, D0, b"c1", body, 0, replay_of(0, headers))
    assert redriven.replay_of == 5
    assert admit_one(redriven, p, HOUR) == Tx("a", D0, "c1", "t1", 100)
    assert p.history("c1") == [(D0, "a")]  # counted once
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
    state.forget_old()
    # Still within the horizon: a new offset with the same id is a duplicate.
    assert not isinstance(state.admit(tx("old", day0 + DAY_MS + 6), 2), bool)
    # The watermark moves past the horizon of day0 (not of day0 + 1): "old" is forgotten, "mid" is not.
    assert state.admit(tx("new", day0 + CUSTOMER_HORIZON_MS + DAY_MS + 10), 3) is True
    state.forget_old()
    assert "old" not in state.seen and "mid" in state.seen
    assert sorted(state.seen_days) == [day0 // DAY_MS + 1, (day0 + CUSTOMER_HORIZON_MS + DAY_MS + 10) // DAY_MS]


def test_customers_who_never_come_back_are_forgotten() -> None:
    state = TxPartition(0, lateness_ms=0)
    for i in range(100):  # a new customer a day, each seen once
        state.admit(Tx(f"tx{i}", D0 + i * DAY_MS, f"c{i}", "t1", 100), i)
        state.forget_old()
    assert len(state.customers) <= 32 and len(state.seen) <= 32
    assert "c0" not in state.customers and "c99" in state.customers
    assert state.low_day(None) == (D0 + 99 * DAY_MS) // DAY_MS
    assert state.low_day(D0 + 50 * DAY_MS) == D0 // DAY_MS + 50


def test_a_transaction_waiting_to_be_scored_keeps_its_customer_history() -> None:
    # A transaction admitted on day 0 waits (terminal finality) while the partition's watermark runs
    # 40 days ahead: its customer's window must still hold it when it is finally scored.
    state = TxPartition(0, lateness_ms=0)
    waiting = Tx("w", D0 + 5, "c1", "t1", 700)
    state.admit(Tx("before", D0 + 1, "c1", "t1", 300), 0)
    state.admit(waiting, 1)
    state.admit(Tx("far", D0 + 40 * DAY_MS, "c2", "t1", 100), 2)
    state.forget_old(pending_min_ts=waiting.ts)
    (counts, totals, _), _ = state.windows([waiting])
    assert (int(counts[-1][0]), int(totals[-1][0])) == (2, 1000)
    assert "w" in state.seen
    state.forget_old()  # once it is scored, the horizon of the newest applies
    assert "c1" not in state.customers and "w" not in state.seen


def test_table_windows_in_one_pass_equal_each_window_summed_on_its_own() -> None:
    import random

    from schemas.features import TERMINAL_WINDOWS_DAYS, TerminalDays, report_slot

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
    q = LabelPartition(0, lateness_ms=0)
    for day in range(day0, day0 + 45):
        for t in range(6):
            if rng.random() < 0.3:
                tx_id, reported = f"0-{day}-t{t}-0", day * DAY_MS + rng.randint(1, 20) * DAY_MS // 2
                fraud = rng.random() < 0.8
                q.admit(lab(tx_id, day * DAY_MS, int(fraud), reported, f"t{t}"))
                ref.add_label(f"t{t}", day * DAY_MS, tx_id, fraud, reported)
                assert report_slot(reported) > day
    for slot, changes in q.close_slots(idle_clock_ms=(day0 + 60) * DAY_MS):
        table.apply(partial_key(LAB, 0, slot), dumps(changes))
    assert sorted(TERMINAL_WINDOWS_DAYS) == list(TERMINAL_WINDOWS_DAYS)
    for t in ("t0", "t3", "t5", "nowhere"):
        for d in (day0 + 8, day0 + 18, day0 + 40, day0 + 52, day0 + 58):
            assert table.windows(t, d) == ref.windows(t, d), (t, d)


def test_the_table_calls_on_mark_only_when_a_watermark_moves() -> None:
    table = TerminalTable(tx_partitions=1, label_partitions=1)
    calls: list[int] = []
    table.on_mark = lambda: calls.append(1)
    table.apply(b"txwm/0", b"100")
    table.apply(b"txwm/0", b"100")  # the same mark again: nothing moved
    table.apply(b"txwm/0", b"99")   # an older one never moves a mark back
    table.apply(b"lblwm/0", b"100")
    table.apply(b"txlow/0", b"90")  # a low mark trims; it does not make anything final
    assert len(calls) == 2
