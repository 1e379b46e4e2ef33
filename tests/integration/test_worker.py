"""The worker end to end on the real broker, as a subprocess.

45+ simulated days of a small population, transactions and labels interleaved in event time,
malformed records mixed in. Every transaction is scored exactly once, with the trainer's offline
score; flags are the scores at or above the threshold; stats hold their invariants; bad records
are dead-lettered with reasons; a graceful restart mid-stream changes no score.
"""

from __future__ import annotations

import time
from typing import Any

import jsonschema
import lightgbm as lgb
import numpy as np
import orjson
import pytest

from ops.loadgen.replay import TX, Event, events, produce
from schemas.bundle import Bundle
from schemas.messages import DEAD_LETTER, FLAG, LATENCY_STATS, SCORE
from tests.integration.harness import Run, consume_all, expected_scores, stop, wait_for_scores
from tests.workers.test_explain import logit, logit_tolerance
from trainer.simulate import History, Labels, history_features

pytestmark = pytest.mark.integration

GOOD = {"tx_id": "x", "ts": 1_522_540_800_000, "customer_id": "c0", "terminal_id": "t0", "amount": 10.0}
MALFORMED: list[tuple[bytes | None, bytes, str]] = [
    (b"c0", b"{not json", "bad_json"),
    (b"c0", orjson.dumps({k: v for k, v in GOOD.items() if k != "amount"}), "missing_field:amount"),
    (b"c0", orjson.dumps({**GOOD, "ts": "yesterday"}), "bad_type:ts"),
    (b"c0", b'{"tx_id":"n","ts":1522540800000,"customer_id":"c0","terminal_id":"t0","amount":NaN}', "bad_json"),
    (b"c0", orjson.dumps({**GOOD, "amount": 2e9}), "bad_amount:too_large"),
    (b"c0", orjson.dumps({**GOOD, "amount": -3.5}), "bad_amount:not_positive"),
    (b"c0", b"", "empty"),
    (b"c0", b"x" * 10_000, "too_large"),
    (b"c0", b"\xff\xfe\xfa", "not_utf8"),
    (b"c0", b'{"tx_id":"i","ts":1522540800000,"customer_id":"c0","terminal_id":"t0","amount":Infinity}', "bad_json"),
    (b"c0", b'{"tx_id":"j","ts":1522540800000,"customer_id":"c0","terminal_id":"t0","amount":1e999}', "bad_json"),
    (b"c0", orjson.dumps({**GOOD, "customer_id": 7}), "bad_type:customer_id"),
    (b"c9", orjson.dumps(GOOD), "key_mismatch"),
]


@pytest.mark.parametrize(("batch_size", "graph", "extra"),
                         [(500, "auto", []), (500, "auto", ["--commit-interval-ms", "1", "--latency-target-ms", "20"]),
                          (50, "auto", []), (500, "tensor", [])])
def test_worker_scores_everything_once_with_offline_parity(run: Run, history: tuple[History, Labels],
                                                           batch_size: int, graph: str, extra: list[str]) -> None:
    # Batch 50: per-partition queues pass their limit while they wait for other partitions; only
    # per-partition pausing (not a global stop) keeps the lagging partitions flowing.
    # Graph tensor: the tensorized (GPU) graph run on the CPU gives the offline (tree graph) scores.
    h, lab = history
    # Commit interval 1 ms: a commit after every acknowledged batch; latency target: adaptive batches.
    # Every flag explained (--reasons-share 1), so that check_reasons sees them all: the budget's own rule is
    # tests/workers/test_explain.py's.
    run.batch_size, run.extra = batch_size, [*run.extra, "--reasons-share", "1", *extra]
    if graph != "auto":
        run.extra = [*run.extra, "--graph", graph]
    worker = run.start("w1")
    try:
        stream = list(events(h, lab))
        step = len(stream) // (len(MALFORMED) + 1)
        for i, (k, v, _) in enumerate(MALFORMED):  # among good neighbours, mid-stream
            t = stream[(i + 1) * step]
            stream.insert((i + 1) * step, Event(t.time_ms, TX, k or b"", v))
        n_tx, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream))
        n_tx -= len(MALFORMED)
        assert n_tx == len(h)
        scores = wait_for_scores(run, n_tx, worker)
        dlq = consume_all(run.bootstrap, run.topics["dlq"], len(MALFORMED), 60)
        flags = consume_all(run.bootstrap, run.topics["flags"], 1, 10)
        time.sleep(2.5)  # one more stats interval
        stats = [orjson.loads(x.value) for x in consume_all(run.bootstrap, run.topics["stats"], 10_000, 5)]  # type: ignore[attr-defined]
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    ids = [str(s["tx_id"]) for s in scores]
    assert len(ids) == len(set(ids)) == n_tx, "every transaction scored exactly once"
    assert f"graph {'tree' if graph == 'auto' else graph}" in run.log("w1")
    expected = expected_scores(h, lab, run.bundle)
    diff = max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores)  # type: ignore[arg-type]
    assert diff <= 1e-5, f"worker vs offline score: max |diff| {diff}"
    validator = jsonschema.Draft202012Validator(SCORE)
    threshold = run.bundle.threshold
    for s in scores:
        validator.validate({k: v for k, v in s.items() if k != "_record_ts"})
        assert s["flag"] == (float(s["score"]) >= threshold)  # type: ignore[arg-type]
    flagged = {str(s["tx_id"]) for s in scores if s["flag"]}
    flag_msgs = [orjson.loads(f.value) for f in consume_all(run.bootstrap, run.topics["flags"],  # type: ignore[attr-defined]
                                                             len(flagged), 30)]
    assert flags and {m["tx_id"] for m in flag_msgs} == flagged
    check_reasons(flag_msgs, h, lab, run.bundle)
    reasons = sorted(dict(d.headers)["dlq.reason"].decode() for d in dlq)  # type: ignore[attr-defined]
    assert reasons == sorted(r for _, _, r in MALFORMED)
    assert {d.value for d in dlq} == {v for _, v, _ in MALFORMED}  # type: ignore[attr-defined]
    dlq_validator = jsonschema.Draft202012Validator(DEAD_LETTER)
    for d in dlq:
        headers = {k: v.decode() for k, v in d.headers}  # type: ignore[attr-defined]
        dlq_validator.validate(headers)
        assert headers["dlq.source.topic"] == run.topics["transactions"]
    stats_validator = jsonschema.Draft202012Validator(LATENCY_STATS)
    for st in stats:
        stats_validator.validate(st)
        for dist in ("e2e_ms", "queue_ms", "inference_ms", "batch_size"):
            d = st[dist]
            if d["count"]:
                assert d["p50"] <= d["p95"] <= d["p99"] <= d["max"]
    total_in = sum(st["counts"]["in"] for st in stats)
    assert total_in == n_tx + len(MALFORMED)
    assert sum(st["counts"]["scored"] + st["counts"]["dead_lettered"] for st in stats) == total_in
    assert np.mean([float(s["score"]) for s in scores]) > 0  # type: ignore[arg-type]


def check_reasons(flags: list[dict[str, Any]], h: History, lab: Labels, bundle: Bundle) -> None:
    """Every flag carries the worker's default 3 reasons: the largest positive TreeSHAP contributions of the
    offline features of its transaction, and those, the unlisted features' contributions and the bias sum to
    the logit of its score (``logit_tolerance``: float32 sums and sigmoid in ONNX Runtime)."""
    assert bundle.lgb_path is not None
    booster = lgb.Booster(model_file=str(bundle.lgb_path))
    row = {t: i for i, t in enumerate(h.tx_id.tolist())}
    x = history_features(h, lab)[[row[m["tx_id"]] for m in flags]]
    contrib = booster.predict(x, pred_contrib=True)
    validator = jsonschema.Draft202012Validator(FLAG)
    names = booster.feature_name()
    for m, c, v in zip(flags, contrib, x, strict=True):
        validator.validate(m)
        e, p = m["explanation"], np.float32(m["score"])
        top = [j for j in np.argsort(-c[:-1], kind="stable")[:3] if c[j] > 0]
        assert [(r["feature"], r["value"]) for r in e["reasons"]] == [(names[j], float(v[j])) for j in top]
        assert np.allclose([r["contribution"] for r in e["reasons"]], c[top], rtol=0, atol=1e-9)
        listed = {names.index(r["feature"]) for r in e["reasons"]}
        rest = sum(c[j] for j in range(len(names)) if j not in listed)
        total = sum(r["contribution"] for r in e["reasons"]) + rest + e["bias"]
        assert abs(total - logit(p)) <= logit_tolerance(p), (m["tx_id"], total, float(logit(p)))
        assert abs(total - e["raw_score"]) <= 1e-6


def test_graceful_restart_mid_stream_changes_no_score(run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    half = len(h) // 2
    worker = run.start("w1")
    try:
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, 0, half))
        first = wait_for_scores(run, half, worker)
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    assert len(first) >= half
    worker = run.start("w2")
    try:
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, half, None))
        scores = wait_for_scores(run, len(h), worker)
    finally:
        assert stop(worker) == 0, run.log("w2")[-3000:]
    assert "state rebuilt" in run.log("w2")
    expected = expected_scores(h, lab, run.bundle)
    by_id: dict[str, set[float]] = {}
    for s in scores:
        by_id.setdefault(str(s["tx_id"]), set()).add(float(s["score"]))  # type: ignore[arg-type]
    assert set(by_id) == set(h.tx_id.tolist()), "nothing lost across the restart"
    worst = max(abs(v - expected[k]) for k, vs in by_id.items() for v in vs)
    assert worst <= 1e-5, f"a score changed across the restart: {worst}"
