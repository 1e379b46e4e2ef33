"""Output topics that cannot be written, made so on the real broker, with nothing lost either way.

- Retriable (the scores topic deleted, auto-creation off: unknown topic): the worker applies
  backpressure — nothing is committed past an unacknowledged output — and recovers by itself once
  the topic exists again.
- Non-retriable (the topic's ``max.message.bytes`` below one score: every batch refused for good):
  retrying cannot help, so the worker stops with exit 1 naming the topic, committing nothing past
  it; once the topic is fixed, the restarted worker (what a process supervisor does) scores
  everything. (``min.insync.replicas`` above the replication factor does not refuse writes on this
  single-node Kafka 4.4: tried, it acknowledged them.)
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from ops.loadgen.replay import events, produce
from tests.integration.harness import Run, expected_scores, output_count, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration


def committed(run: Run) -> int:
    c = KafkaConsumer(bootstrap_servers=run.bootstrap, group_id=run.group, enable_auto_commit=False)
    try:
        return sum(c.committed(TopicPartition(run.topics["transactions"], p)) or 0 for p in range(4))
    finally:
        c.close()


def _check_parity(run: Run, scores: list[dict[str, object]], h: History, lab: Labels) -> None:
    expected = expected_scores(h, lab, run.bundle)
    assert {str(s["tx_id"]) for s in scores} == set(expected)
    assert max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores) <= 1e-5  # type: ignore[arg-type]


def test_a_missing_output_topic_is_backpressure_not_loss(run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
    worker = run.start("w1")
    try:
        deadline = time.monotonic() + 120
        while " ready in " not in run.log("w1"):
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        admin.delete_topics([run.topics["scores"]])
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab))
        time.sleep(15)
        assert worker.poll() is None, "the worker must wait, not crash"
        assert committed(run) == 0, "no offset may be committed past an unacknowledged output"
        admin.create_topics([NewTopic(run.topics["scores"], 4, 1)])
        t0 = time.monotonic()
        scores = wait_for_scores(run, len(h), worker, distinct=True, timeout_s=240)
        recovery_s = time.monotonic() - t0
    finally:
        admin.close()
        assert stop(worker) == 0, run.log("w1")[-3000:]
    _check_parity(run, scores, h, lab)
    assert "not acknowledged" in run.log("w1")
    print(f"missing topic: {len(h)} transactions, recovered and drained in {recovery_s:.1f}s")


def test_an_output_refused_for_good_stops_the_worker_and_a_restart_loses_nothing(
        run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
    admin.create_topics([NewTopic(run.topics["scores"], 4, 1, topic_configs={"max.message.bytes": "64"})])
    worker = run.start("w1")
    try:
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab))
        assert worker.wait(timeout=120) == 1, "a refusal for good stops the worker (exit 1), no endless retry"
        assert f"to topic {run.topics['scores']!r} for good" in run.log("w1")
        assert output_count(run) == 0
        assert committed(run) == 0, "no offset may be committed past an unacknowledged output"
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, run.topics["scores"],
                                            configs={"max.message.bytes": "1048588"})])
        worker = run.start("w2")  # what the process supervisor does
        scores = wait_for_scores(run, len(h), worker, distinct=True, timeout_s=240)
    finally:
        admin.close()
        assert stop(worker) == 0, run.log("w2")[-3000:]
    _check_parity(run, scores, h, lab)
