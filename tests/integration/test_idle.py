"""A transactions partition that never sees a record must not hold back everyone's finality."""

from __future__ import annotations

import re

import pytest
from kafka import KafkaProducer

from ops.loadgen.replay import TX, events
from ops.loadgen.topics import ensure_topics
from tests.integration.harness import Run, consume_all, expected_scores, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration


def test_an_empty_partition_is_closed_as_idle_and_every_transaction_is_scored_with_parity(
        run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    tx_topic, label_topic = run.topics["transactions"], run.topics["labels"]
    ensure_topics(run.bootstrap, [tx_topic, label_topic], 4)
    # Without idle closing, partition 3 never closes a day: every transaction would wait
    # --terminal-wait-s and then be dead-lettered as terminal_state_not_final.
    run.extra = [*run.extra, "--terminal-wait-s", "20", "--idle-ms", "500"]
    worker = run.start("w1")
    producer = KafkaProducer(bootstrap_servers=run.bootstrap, acks="all", linger_ms=5)
    try:
        customers = sorted(set(h.customer_id.tolist()))
        home = {c: i % 3 for i, c in enumerate(customers)}  # partitions 0-2 only; a customer stays on one
        for e in events(h, lab):
            if e.kind == TX:
                producer.send(tx_topic, key=e.key, value=e.value, partition=home[e.key.decode()])
            else:
                producer.send(label_topic, key=e.key, value=e.value)
        producer.flush()
        scores = wait_for_scores(run, len(h), worker, timeout_s=120)
        dlq = consume_all(run.bootstrap, run.topics["dlq"], 1, 3)
    finally:
        producer.close()
        assert stop(worker) == 0, run.log("w1")[-3000:]
    assert not dlq, [dict(r.headers) for r in dlq]  # type: ignore[attr-defined]
    assert sorted(str(s["tx_id"]) for s in scores) == sorted(h.tx_id.tolist())
    expected = expected_scores(h, lab, run.bundle)
    diff = max(abs(float(str(s["score"])) - expected[str(s["tx_id"])]) for s in scores)
    assert diff <= 1e-5, f"worker vs offline score: max |diff| {diff}"
    closed = [line for line in run.log("w1").splitlines() if "idle partitions closed through" in line]
    assert any(re.search(r"[{ ]3: \d+", line) for line in closed), closed  # the empty partition was closed
