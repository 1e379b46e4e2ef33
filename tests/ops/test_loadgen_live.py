"""``python -m ops.loadgen --live``: event time = the wall clock.

The plan (pure): the history shifted to end now, its labels split into those already reported
(sent with it) and those held back. Against the real broker, a few seconds each: live transactions
carry ``ts`` = their send time (the record timestamp), the history ends near now, held-back labels
arrive at their ``reported_at``, a live transaction's label keeps its report delay, and
``--clock-offset-ms`` moves event time (here across a UTC midnight) but not record timestamps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import orjson
import pytest

from ops.loadgen.__main__ import main
from ops.loadgen.live import first_index_of_day, now_ms, plan, send_live
from ops.loadgen.replay import LABEL, TX
from ops.loadgen.schedule import Schedule
from ops.loadgen.source import simulated
from tests.ops.test_loadgen import read_all
from trainer.simulate import Labels, SimConfig

DAY_MS = 86_400_000
CFG = SimConfig(customers=40, terminals=80, days=45, seed=3)
TOL_MS = 1000  # a loaded 2-core machine: sends are late by milliseconds, asserted within a second


def test_the_plan_shifts_the_history_to_end_now_and_holds_back_labels_not_yet_reported() -> None:
    h, labels = simulated(CFG)
    split = first_index_of_day(h, 37)
    now = 1_900_000_000_123
    p = plan(h, labels, now, 0, split)
    assert p.shift_ms == now - int(h.ts[split - 1])
    txs = [orjson.loads(e.value) for e in p.history if e.kind == TX]
    assert [t["tx_id"] for t in txs] == [str(x) for x in h.tx_id[:split]]
    assert [t["ts"] for t in txs] == [int(x) + p.shift_ms for x in h.ts[:split]]
    assert max(t["ts"] for t in txs) == now
    assert [e.time_ms for e in p.history] == sorted(e.time_ms for e in p.history)
    sent = [orjson.loads(e.value) for e in p.history if e.kind == LABEL]
    held = [(r, orjson.loads(e.value)) for r, e in p.held]
    history_ids = {str(x) for x in h.tx_id[:split]}
    in_history = int(np.isin(labels.tx_id, h.tx_id[:split]).sum())
    assert len(sent) + len(held) == in_history and held and sent
    assert all(v["tx_id"] in history_ids and v["ts"] <= v["reported_at"] <= now for v in sent)
    assert all(r == v["reported_at"] > now for r, v in held)
    assert [r for r, _ in held] == sorted(r for r, _ in held)
    for e in p.history + [e for _, e in p.held]:
        if e.kind == LABEL:
            v = orjson.loads(e.value)
            assert e.key == v["terminal_id"].encode() and v["is_fraud"] in (0, 1)
            assert e.time_ms == v["reported_at"]
    # The live transactions' labels keep their report delays.
    delays: dict[str, list[int]] = {}
    for t, ts, r in zip(labels.tx_id, labels.ts, labels.reported_at, strict=True):
        delays.setdefault(str(t), []).append(int(r) - int(ts))
    assert sum(len(v) for v in p.live_labels.values()) == len(labels) - in_history
    for i, rows in p.live_labels.items():
        assert i >= split and sorted(r.delay_ms for r in rows) == sorted(delays[str(h.tx_id[i])])


@pytest.mark.integration
def test_live_transactions_carry_their_send_time_after_a_history_that_ends_now(
        kafka_bootstrap: str, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    tx, lab = new_topic(partitions=3), new_topic(partitions=2)
    t0 = time.time() * 1000
    rc = main(["--bootstrap", kafka_bootstrap, "--topic-transactions", tx, "--topic-labels", lab, "--customers",
               str(CFG.customers), "--terminals", str(CFG.terminals), "--days", str(CFG.days), "--seed", str(CFG.seed),
               "--live", "--history-days", "37", "--rate", "40", "--duration", "3", "--quiet", "--json"])
    t1 = time.time() * 1000
    assert rc == 0
    s = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    live = s["live"]
    h, _ = simulated(CFG)
    split = first_index_of_day(h, 37)
    assert live["history_transactions"] == split and live["clock_offset_ms"] == 0 and live["days"] == CFG.days
    # Due at 0, 1/40, ..., 2.975 s; a sender behind its schedule on a busy machine stops at the 3 s
    # of wall time all the same, a few short.
    n = s["transactions"]
    assert 100 <= n <= 120, n
    txs = read_all(kafka_bootstrap, tx)
    assert len(txs) == split + n
    by_id = {str(v["tx_id"]): (ts, int(str(v["ts"]))) for _, ts, _, v in txs}
    history = [by_id[str(t)] for t in h.tx_id[:split]]
    end = live["history_end_ms"]
    # The history ends now: its last transaction's ts is the clock when it was sent; all of it is in the past.
    assert t0 <= end <= t0 + 30_000 and max(e for _, e in history) == end == live["history_last_ts"]
    assert all(e <= rec for rec, e in history)
    # Live transactions: event time = the wall clock at send = the record timestamp, after the history.
    fresh = [by_id[str(t)] for t in h.tx_id[split:split + n]]
    assert all(abs(rec - e) <= TOL_MS for rec, e in fresh)
    assert all(end <= e <= t1 for _, e in fresh)
    assert [e for _, e in fresh] == sorted(e for _, e in fresh)
    assert (n - 1) / 40 - 0.05 <= (fresh[-1][1] - fresh[0][1]) / 1000 <= 119 / 40 + 1.0  # paced at 40/s
    # Labels: every one carries reported_at; the history's were reported by the end of the history.
    got = read_all(kafka_bootstrap, lab)
    assert len(got) == live["history_labels"] + s["labels"]
    assert live["history_labels"] > 0
    for _, rec, key, v in got:
        assert key == str(v["terminal_id"]).encode() and int(str(v["reported_at"])) >= int(str(v["ts"]))
        assert int(str(v["reported_at"])) <= rec + TOL_MS, "no label is sent before it is reported"
    assert live["labels_held"] == live["held_labels_sent"] + live["held_labels_not_due"]


def _labels_due_soon(h: object, split: int, rows: list[int], offsets_ms: list[int]) -> Labels:
    """The simulator's labels (7 days), except that ``rows`` are reported ``offsets_ms`` after the history's end."""
    from trainer.simulate import History

    assert isinstance(h, History)
    _, lab = simulated(CFG, 7)
    order = {str(t): j for j, t in enumerate(lab.tx_id)}
    reported = np.array(lab.reported_at, dtype=np.int64)
    for i, off in zip(rows, offsets_ms, strict=True):
        reported[order[str(h.tx_id[i])]] = int(h.ts[split - 1]) + off
    return Labels(tx_id=lab.tx_id, customer_id=lab.customer_id, terminal_id=lab.terminal_id, ts=lab.ts,
                  is_fraud=lab.is_fraud, reported_at=reported)


@pytest.mark.integration
def test_held_back_labels_arrive_at_their_reported_at_and_live_labels_keep_their_delay(
        kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    tx, lab = new_topic(partitions=2), new_topic(partitions=2)
    h, _ = simulated(CFG, 7)
    split = first_index_of_day(h, 37)
    early = [split - 40, split - 30, split - 20, split - 10]          # history transactions ...
    offsets = [700, 1400, 2100, 60_000]                               # ... reported this long after now
    labels = _labels_due_soon(h, split, early, offsets)
    # One live transaction (the 5th) is reported 1.2 s after it is sent.
    j = int(np.flatnonzero(labels.tx_id == h.tx_id[split + 4])[0])
    reported = np.array(labels.reported_at)
    reported[j] = int(h.ts[split + 4]) + 1200
    labels = Labels(tx_id=labels.tx_id, customer_id=labels.customer_id, terminal_id=labels.terminal_id,
                    ts=labels.ts, is_fraud=labels.is_fraud, reported_at=reported)
    p = plan(h, labels, now_ms(), 0, split, split + 200)
    s = send_live(kafka_bootstrap, tx, lab, p, Schedule(rate=20), duration_s=3.0)
    assert s.live is not None
    assert s.transactions == 60 and s.live["live_labels_sent"] == 1
    got = {str(v["tx_id"]): (rec, v) for _, rec, _, v in read_all(kafka_bootstrap, lab)}
    for i, off in zip(early, offsets, strict=True):
        tx_id = str(h.tx_id[i])
        due = p.now_ms + off
        if off > 3000:
            assert tx_id not in got, "a label not due when the run ended is not sent"
            continue
        rec, v = got[tx_id]
        assert v["reported_at"] == due and v["ts"] == int(h.ts[i]) + p.shift_ms
        assert due <= rec <= due + TOL_MS, f"held label sent {rec - due} ms after its reported_at"
    assert s.live["held_labels_not_due"] >= 1 and s.live["labels_not_due"] >= 1
    # The live transaction's label: ts = its new (wall-clock) ts, reported 1.2 s later, sent then.
    sent_tx = {str(v["tx_id"]): v for _, _, _, v in read_all(kafka_bootstrap, tx)}
    new_ts = int(str(sent_tx[str(h.tx_id[split + 4])]["ts"]))
    rec, v = got[str(h.tx_id[split + 4])]
    assert v["ts"] == new_ts and v["reported_at"] == new_ts + 1200
    assert new_ts + 1200 <= rec <= new_ts + 1200 + TOL_MS


@pytest.mark.integration
def test_a_clock_offset_moves_event_time_across_a_utc_midnight_but_not_record_timestamps(
        kafka_bootstrap: str, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    tx, lab = new_topic(), new_topic()
    wall = time.time_ns() // 1_000_000
    offset = (wall // DAY_MS + 1) * DAY_MS - 2500 - wall  # the clock reads 23:59:57.5 UTC now, ~58.5 once started
    rc = main(["--bootstrap", kafka_bootstrap, "--topic-transactions", tx, "--topic-labels", lab, "--customers",
               str(CFG.customers), "--terminals", str(CFG.terminals), "--days", str(CFG.days), "--seed", str(CFG.seed),
               "--live", "--history-days", "10", "--clock-offset-ms", str(offset), "--rate", "20", "--duration", "4",
               "--quiet", "--json"])
    assert rc == 0
    live = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])["live"]
    assert live["clock_offset_ms"] == offset
    assert abs(live["history_end_ms"] - (wall + offset)) <= 30_000
    h, _ = simulated(CFG)
    split = first_index_of_day(h, 10)
    fresh = [(rec, int(str(v["ts"]))) for _, rec, _, v in read_all(kafka_bootstrap, tx)
             if str(v["tx_id"]) >= str(h.tx_id[split])]
    assert len(fresh) == 80
    assert all(abs(e - rec - offset) <= TOL_MS for rec, e in fresh), "event time = wall clock + offset"
    assert all(abs(rec - time.time() * 1000) <= 60_000 for rec, _ in fresh), "record timestamps are the wall clock"
    days = {e // DAY_MS for _, e in fresh}
    assert len(days) == 2, "the live phase crossed a UTC midnight"
