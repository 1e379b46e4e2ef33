"""Labels as they really arrive, through a worker subprocess on the real broker.

Label report delays spread over days and weeks (out of transaction-time order), duplicated
labels, labels that change their minds, chargebacks weeks late, and malformed labels of every
kind. No valid label is dead-lettered; every score equals the offline score computed with the
same label events; every malformed label is dead-lettered with its reason and counted in the
stats topic.
"""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from ops.loadgen.replay import TX, Event, produce, transaction_value
from schemas.features import DAY_MS, HOUR_MS
from tests.integration.harness import Run, consume_all, expected_scores, output_count, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration

LABEL = 0
T = 1_525_132_800_000  # 2018-05-01T00:00Z
GOOD = {"tx_id": "nope", "customer_id": "c0", "terminal_id": "t0", "ts": T, "is_fraud": 1, "reported_at": T + DAY_MS}


def _bad(**change: object) -> bytes:
    return orjson.dumps({k: v for k, v in {**GOOD, **change}.items() if v is not ...})


MALFORMED_LABELS: list[tuple[bytes | None, bytes, str]] = [
    (b"t0", _bad(is_fraud="0"), "bad_is_fraud"),
    (b"t0", _bad(is_fraud=2), "bad_is_fraud"),
    (b"t0", _bad(is_fraud=True), "bad_is_fraud"),
    (b"t0", _bad(is_fraud=None), "bad_is_fraud"),
    (b"t0", _bad(is_fraud=1.0), "bad_is_fraud"),
    (b"t0", _bad(is_fraud=...), "missing_field:is_fraud"),
    (b"t0", _bad(reported_at=...), "missing_field:reported_at"),
    (b"t0", _bad(reported_at="tomorrow"), "bad_reported_at"),
    (b"t0", _bad(reported_at=T - 1), "bad_reported_at"),
    (b"t0", _bad(reported_at=10**15), "bad_reported_at"),
    (b"t0", _bad(ts="yesterday"), "bad_type:ts"),
    (b"t0", _bad(ts=5), "bad_ts"),
    (b"t0", _bad(tx_id=...), "missing_field:tx_id"),
    (b"t0", _bad(tx_id=7), "bad_type:tx_id"),
    (b"t0", _bad(tx_id="has space"), "bad_id:tx_id"),
    (b"t0", _bad(customer_id="x" * 65), "bad_id:customer_id"),
    (b"t\xc3\xa9", _bad(terminal_id="t\u00e9"), "bad_id:terminal_id"),
    (b"t9", _bad(), "key_mismatch"),
    (None, _bad(), "key_mismatch"),
    (b"t0", b"[1, 2]", "not_object"),
    (b"t0", b"{nope", "bad_json"),
    (b"t0", b"", "empty"),
    (b"t0", b"x" * 10_000, "too_large"),
]


def label_events(h: History, lab: Labels, seed: int = 11) -> Labels:
    """The simulator's labels plus what real feedback also does: duplicates, a first word that is later
    retracted or confirmed the other way (flips), and chargebacks weeks late."""
    rng = np.random.default_rng(seed)
    n = len(lab)
    idx = np.arange(n)
    flips = idx[rng.random(n) < 0.04]
    dups = idx[rng.random(n) < 0.05]
    late = idx[rng.random(n) < 0.03]
    rows = np.concatenate((idx, flips, dups, late))
    reported = np.concatenate((lab.reported_at, lab.reported_at[flips] - rng.integers(HOUR_MS, 2 * DAY_MS, len(flips)),
                               lab.reported_at[dups], lab.ts[late] + rng.integers(20 * DAY_MS, 40 * DAY_MS, len(late))))
    reported = np.maximum(reported, lab.ts[rows])
    fraud = lab.is_fraud[rows].copy()
    fraud[n:n + len(flips)] = 1 - fraud[n:n + len(flips)]
    order = np.argsort(reported, kind="stable")
    rows, reported, fraud = rows[order], reported[order], fraud[order]
    return Labels(lab.tx_id[rows], lab.customer_id[rows], lab.terminal_id[rows], lab.ts[rows],
                  fraud.astype(np.int8), reported.astype(np.int64))


def stream(h: History, lab: Labels) -> list[Event]:
    out = [Event(int(t), TX, str(c).encode(), transaction_value(str(i), int(t), str(c), str(term), int(a)))
           for i, t, c, term, a in zip(h.tx_id, h.ts, h.customer_id, h.terminal_id, h.amount_cents, strict=True)]
    for j in range(len(lab)):
        value = orjson.dumps({"tx_id": str(lab.tx_id[j]), "customer_id": str(lab.customer_id[j]),
                              "terminal_id": str(lab.terminal_id[j]), "ts": int(lab.ts[j]),
                              "is_fraud": int(lab.is_fraud[j]), "reported_at": int(lab.reported_at[j])})
        out.append(Event(int(lab.reported_at[j]), LABEL, str(lab.terminal_id[j]).encode(), value))
    return sorted(out, key=lambda e: (e.time_ms, e.kind))


def test_labels_in_any_order_are_all_counted_and_bad_ones_dead_lettered(
        run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    events = label_events(h, lab)
    delays = events.reported_at - events.ts
    assert (np.diff(events.ts // DAY_MS) < 0).sum() > len(events) // 10  # out of transaction-time order
    assert delays.max() > 14 * DAY_MS and len(np.unique(events.tx_id)) < len(events)
    records = stream(h, events)
    step = len(records) // (len(MALFORMED_LABELS) + 1)
    extra = [(run.topics["labels"], k, v) for k, v, _ in MALFORMED_LABELS]
    worker = run.start("w1")
    try:
        # The malformed labels go out mid-stream, among good ones.
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(records[:step]), extra=extra)
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(records[step:]))
        scores = wait_for_scores(run, len(h), worker)
        dlq = consume_all(run.bootstrap, run.topics["dlq"], len(MALFORMED_LABELS), 60)
        time.sleep(2.5)  # one more stats interval
        stats = [orjson.loads(x.value) for x in consume_all(run.bootstrap, run.topics["stats"], 10_000, 5)]  # type: ignore[attr-defined]
        dlq_total = output_count(run, "dlq")
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    ids = [str(s["tx_id"]) for s in scores]
    assert len(ids) == len(set(ids)) == len(h), "every transaction scored exactly once"
    expected = expected_scores(h, events, run.bundle)
    diff = max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores)  # type: ignore[arg-type]
    assert diff <= 1e-5, f"worker vs offline score with out-of-order labels: max |diff| {diff}"
    # Only the malformed labels were dead-lettered, each with its reason; no valid label was.
    assert dlq_total == len(MALFORMED_LABELS)
    reasons = sorted(dict(d.headers)["dlq.reason"].decode() for d in dlq)  # type: ignore[attr-defined]
    assert reasons == sorted(r for _, _, r in MALFORMED_LABELS)
    assert all(dict(d.headers)["dlq.source.topic"].decode() == run.topics["labels"] for d in dlq)  # type: ignore[attr-defined]
    counts = {k: sum(st["counts"][k] for st in stats) for k in ("labels_in", "labels_dead_lettered",
                                                                  "labels_late_restamped")}
    assert counts == {"labels_in": len(events) + len(MALFORMED_LABELS),
                      "labels_dead_lettered": len(MALFORMED_LABELS), "labels_late_restamped": 0}
    # The risk features did count frauds: the comparison above is not between two empty columns.
    assert np.std([float(s["score"]) for s in scores]) > 0.01  # type: ignore[arg-type]
