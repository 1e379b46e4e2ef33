"""Poison and hostile input at volume: 24 kinds of bad records, each with its own reason, more
than 10 % of the stream, among good ones. The worker never crashes or stalls; every bad record is
in the dead-letter topic with its reason and original bytes; every good one is scored once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from ops.loadgen.replay import TX, Event, events, produce
from tests.integration.harness import Run, consume_all, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def _tx(i: int, **over: object) -> dict[str, object]:
    return {"tx_id": f"bad{i}", "ts": 1_522_540_800_000, "customer_id": "c0", "terminal_id": "t0", "amount": 5.0,
            **over}


# kind -> (reason, builder(i) -> (key, value)); the stream context supplies real ids/times where needed.
Kind = tuple[str, Callable[[int], tuple[bytes, bytes]]]
KINDS: dict[str, Kind] = {
    "syntax": ("bad_json", lambda i: (b"c0", b'{"tx_id": "bad%d", ' % i)),
    "nan": ("bad_json", lambda i: (b"c0", b'{"tx_id":"bad%d","ts":1,"customer_id":"c0","amount":NaN}' % i)),
    "infinity": ("bad_json", lambda i: (b"c0", b'{"tx_id":"bad%d","amount":-Infinity}' % i)),
    "nesting": ("too_deep", lambda i: (b"c0", b"[" * (1500 + i) + b"]" * (1500 + i))),
    "encoding": ("not_utf8", lambda i: (b"c0", b'{"tx_id":"\xff\xfe%d"}' % i)),
    "empty": ("empty", lambda i: (b"c0", b"")),
    "size": ("too_large", lambda i: (b"c0", orjson.dumps(_tx(i, pad="x" * 5000)))),
    "array": ("not_object", lambda i: (b"c0", orjson.dumps([_tx(i)]))),
    "no_amount": ("missing_field:amount", lambda i: (b"c0", orjson.dumps(
        {k: v for k, v in _tx(i).items() if k != "amount"}))),
    "no_id": ("missing_field:tx_id", lambda i: (b"c0", orjson.dumps(
        {k: v for k, v in _tx(i).items() if k != "tx_id"} | {"n": i}))),
    "ts_string": ("bad_type:ts", lambda i: (b"c0", orjson.dumps(_tx(i, ts="2018-04-01T00:00:00Z")))),
    "ts_float": ("bad_type:ts", lambda i: (b"c0", orjson.dumps(_tx(i, ts=1.5e12 + i)))),
    "amount_string": ("bad_type:amount", lambda i: (b"c0", orjson.dumps(_tx(i, amount="5.00")))),
    "customer_int": ("bad_type:customer_id", lambda i: (b"c0", orjson.dumps(_tx(i, customer_id=i)))),
    "huge_id": ("bad_id:tx_id", lambda i: (b"c0", orjson.dumps(_tx(i, tx_id="X" * (100 + i))))),
    "id_space": ("bad_id:terminal_id", lambda i: (b"c0", orjson.dumps(_tx(i, terminal_id=f"t {i}")))),
    "negative": ("bad_amount:not_positive", lambda i: (b"c0", orjson.dumps(_tx(i, amount=-1.0 - i)))),
    "too_much": ("bad_amount:too_large", lambda i: (b"c0", orjson.dumps(_tx(i, amount=1e9 + i)))),
    "sub_cent": ("bad_amount:sub_cent", lambda i: (b"c0", orjson.dumps(_tx(i, amount=1.005 + i)))),
    "ancient": ("bad_ts", lambda i: (b"c0", orjson.dumps(_tx(i, ts=1000 + i)))),
    "far_future": ("future_ts", lambda i: (b"c0", orjson.dumps(_tx(i, ts=int(time.time() * 1000) + 10 * DAY_MS)))),
    "wrong_key": ("key_mismatch", lambda i: (b"c1", orjson.dumps(_tx(i)))),
}
PER_KIND = 60


def test_poison_at_volume(run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    stream = list(events(h, lab))
    bad: list[tuple[bytes, bytes, str]] = []
    for reason, build in KINDS.values():
        for i in range(PER_KIND):
            key, value = build(i)
            bad.append((key, value, reason))
    # Duplicates of real transactions at a new offset (within the 30-day dedup horizon: beyond it a
    # replayed old transaction is simply late), and events later than the allowed lateness, placed
    # in the stream's last quarter so that their partitions have moved on.
    for j in range(PER_KIND):
        i = len(h) * 62 // 100 + j * 7
        original = orjson.dumps({"tx_id": str(h.tx_id[i]), "ts": int(h.ts[i]), "customer_id": str(h.customer_id[i]),
                                 "terminal_id": str(h.terminal_id[i]), "amount": int(h.amount_cents[i]) / 100})
        bad.append((str(h.customer_id[i]).encode(), original, "duplicate_tx_id"))
        late = orjson.dumps({"tx_id": f"late{j}", "ts": int(h.ts[i]) - 2 * DAY_MS, "customer_id": str(h.customer_id[i]),
                             "terminal_id": str(h.terminal_id[i]), "amount": 9.99})
        bad.append((str(h.customer_id[i]).encode(), late, "late"))
    assert len({r for _, _, r in bad}) >= 20 and len(bad) >= 0.1 * len(h)
    # Spread the simple kinds over the stream; duplicates and late ones go in its last quarter.
    simple = [b for b in bad if b[2] not in ("duplicate_tx_id", "late")]
    tail = [b for b in bad if b[2] in ("duplicate_tx_id", "late")]
    mixed: list[Event] = []
    step_simple = len(stream) // (len(simple) + 1)
    start_tail = len(stream) * 3 // 4
    step_tail = (len(stream) - start_tail) // (len(tail) + 1)
    si = ti = 0
    for pos, e in enumerate(stream):
        mixed.append(e)
        if si < len(simple) and pos == (si + 1) * step_simple:
            key, value, _ = simple[si]
            mixed.append(Event(e.time_ms, TX, key, value))
            si += 1
        if ti < len(tail) and pos == start_tail + (ti + 1) * step_tail:
            key, value, _ = tail[ti]
            mixed.append(Event(e.time_ms, TX, key, value))
            ti += 1
    assert si == len(simple) and ti == len(tail)
    worker = run.start("w1")
    try:
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(mixed))
        scores = wait_for_scores(run, len(h), worker, distinct=True)
        dlq = consume_all(run.bootstrap, run.topics["dlq"], len(bad), 120)
        assert worker.poll() is None, "the worker must survive the poison"
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    ids = [str(s["tx_id"]) for s in scores]
    assert len(ids) == len(set(ids)) == len(h), "every good transaction scored exactly once, no bad one scored"
    got = Counter((d.value, dict(d.headers)["dlq.reason"].decode()) for d in dlq)  # type: ignore[attr-defined]
    expected = Counter((v, r) for _, v, r in bad)
    missing, extra = list((expected - got).items())[:3], list((got - expected).items())[:3]
    assert got == expected, f"missing: {missing}, extra: {extra}"
