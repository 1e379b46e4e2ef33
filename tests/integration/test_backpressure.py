"""An output topic that cannot be written, made so on the real broker: the worker applies
backpressure — nothing is committed past an unacknowledged output — and recovers by itself when
the topic is writable again, losing nothing.

How: the topic's ``max.message.bytes`` is set below the size of one score, so the broker refuses
every batch. (``min.insync.replicas`` above the replication factor does not refuse writes on
this single-node Kafka 4.4: tried, it acknowledged them.)
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


def test_unwritable_output_topic_is_backpressure_not_loss(run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
    admin.create_topics([NewTopic(run.topics["scores"], 4, 1, topic_configs={"max.message.bytes": "64"})])
    worker = run.start("w1")
    try:
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab))
        time.sleep(12)
        assert worker.poll() is None, "the worker must wait, not crash"
        assert output_count(run) == 0
        assert committed(run) == 0, "no offset may be committed past an unacknowledged output"
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, run.topics["scores"],
                                            configs={"max.message.bytes": "1048588"})])
        t0 = time.monotonic()
        scores = wait_for_scores(run, len(h), worker, distinct=True, timeout_s=240)
        recovery_s = time.monotonic() - t0
    finally:
        admin.close()
        assert stop(worker) == 0, run.log("w1")[-3000:]
    expected = expected_scores(h, lab, run.bundle)
    assert {str(s["tx_id"]) for s in scores} == set(expected)
    assert max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores) <= 1e-5  # type: ignore[arg-type]
    assert "not acknowledged" in run.log("w1")
    print(f"unwritable topic: {len(h)} transactions, {len(scores) - len(expected)} duplicates, "
          f"recovered and drained in {recovery_s:.1f}s")
