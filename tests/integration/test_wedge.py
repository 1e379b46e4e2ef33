"""No record can wedge the worker, and nothing stops silently (issue 12, items 5 and 6).

Records at and just below the broker's size limit on each source topic are dead-lettered whole
while their neighbours are scored and the commits move on; a dead-letter topic too small for its
sources is refused at start; a dead letter the broker still refuses becomes a stub (an output the
broker refuses for good: test_backpressure.py); SIGTERM ends a publish that keeps
failing within the drain bound, naming the topic; any supervised component that dies makes the
worker unhealthy and exit 1.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import MessageSizeTooLargeError

from ops.loadgen.replay import events, produce
from schemas.kafka_auth import KafkaAuth
from tests.integration.harness import Run, consume_all, stop, wait_for_scores
from tests.integration.test_health import free_port, http, probe
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration

N = 3000  # transactions of the history used: the first days


def _admin(run: Run) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=run.bootstrap, **KafkaAuth.from_env().kafka_python())


def _create(run: Run, name: str, configs: dict[str, str]) -> None:
    admin = _admin(run)
    try:
        admin.create_topics([NewTopic(run.topics[name], num_partitions=4, replication_factor=1,
                                      topic_configs=configs)])
    finally:
        admin.close()


def _largest_accepted(run: Run, topic: str, key: bytes) -> bytes:
    """Produce the largest value the broker takes on ``topic`` (its default limit): written to the topic."""
    producer = KafkaProducer(bootstrap_servers=run.bootstrap, max_request_size=4 << 20, acks="all", retries=0,
                             **KafkaAuth.from_env().kafka_python())
    try:
        size = 1_048_588 - 61 - 11 - len(key) + 8  # the limit less the batch and record overheads, plus a margin
        while True:
            value = b"x" * size
            try:
                producer.send(topic, key=key, value=value).get(timeout=30)
                return value
            except MessageSizeTooLargeError:
                size -= 1
    finally:
        producer.close()


def _committed(run: Run, topic: str) -> tuple[int, int]:
    """(committed offsets summed over the partitions, end offsets summed) for the worker's group."""
    consumer = KafkaConsumer(bootstrap_servers=run.bootstrap, group_id=run.group, enable_auto_commit=False,
                             **KafkaAuth.from_env().kafka_python())
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        ends = consumer.end_offsets(tps)
        return sum(consumer.committed(tp) or 0 for tp in tps), sum(ends.values())
    finally:
        consumer.close()


def _small(history: tuple[History, Labels]) -> tuple[History, Labels, list[Any]]:
    h, lab = history
    return h, lab, list(events(h, lab, 0, N))


def test_records_at_the_size_limit_are_dead_lettered_whole_and_commits_move_on(
        run: Run, history: tuple[History, Labels]) -> None:
    _, _, stream = _small(history)
    half = len(stream) // 2
    worker = run.start("w1")
    try:
        tx_a, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[:half]))
        big = [(run.topics["transactions"], b"c0", _largest_accepted(run, run.topics["transactions"], b"c0")),
               (run.topics["labels"], b"t0", _largest_accepted(run, run.topics["labels"], b"t0"))]
        below = [(run.topics["transactions"], b"c1", b"{" + b"y" * (len(big[0][2]) - 1000)),
                 (run.topics["labels"], b"t1", b"[" + b"z" * (len(big[1][2]) - 1000))]
        tx_b, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[half:]),
                          extra=[(t, k, v) for t, k, v in below])
        scores = wait_for_scores(run, tx_a + tx_b, worker, distinct=True)
        dlq = consume_all(run.bootstrap, run.topics["dlq"], 4, 120)
        deadline = time.monotonic() + 60
        while _committed(run, run.topics["transactions"])[0] < _committed(run, run.topics["transactions"])[1]:
            assert time.monotonic() < deadline, "the commits did not reach the end of the transactions topic"
            time.sleep(0.5)
        assert worker.poll() is None
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    assert len(scores) == tx_a + tx_b
    got = {(dict(d.headers)["dlq.source.topic"].decode(), d.value): dict(d.headers)  # type: ignore[attr-defined]
           for d in dlq}
    assert len(got) == 4, [(t, len(v)) for t, v in got]
    for topic, _, value in big + below:
        headers = got[(topic, value)]  # the original bytes, whole
        assert headers["dlq.reason"] == b"too_large" and "dlq.stub" not in headers


def test_a_dead_letter_topic_smaller_than_its_sources_is_refused_at_start(run: Run) -> None:
    _create(run, "dlq", {"max.message.bytes": "100000"})
    worker = run.start("w1")
    assert worker.wait(timeout=120) == 2
    log = run.log("w1")
    assert f"dead-letter topic {run.topics['dlq']!r} takes records of at most 100000 bytes" in log
    assert "max.message.bytes=" in log and "kafka-configs.sh" in log


def test_a_dead_letter_the_broker_refuses_becomes_a_stub(run: Run, history: tuple[History, Labels]) -> None:
    _, _, stream = _small(history)
    worker = run.start("w1")
    try:
        n_tx, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[:1000]))
        wait_for_scores(run, n_tx, worker)
        admin = _admin(run)  # shrink the DLQ behind the worker's back: its start-up check has passed
        try:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, run.topics["dlq"],
                                                configs={"max.message.bytes": "2000"})])
        finally:
            admin.close()
        time.sleep(2)
        poison = b"{" + b"p" * 20_000
        more, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[1000:2000]),
                          extra=[(run.topics["transactions"], b"c0", poison)])
        wait_for_scores(run, n_tx + more, worker)
        dlq = consume_all(run.bootstrap, run.topics["dlq"], 1, 60)
        assert worker.poll() is None
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    assert len(dlq) == 1
    rec: Any = dlq[0]
    headers = dict(rec.headers)
    assert rec.value == b"" and headers["dlq.stub"] == b"MessageSizeTooLargeError"
    assert headers["dlq.reason"] == b"too_large" and headers["dlq.source.topic"] == run.topics["transactions"].encode()
    assert int(headers["dlq.source.offset"]) >= 0 and "dlq.source.partition" in headers


def test_sigterm_ends_a_publish_that_keeps_failing_within_the_drain_bound(
        run: Run, history: tuple[History, Labels]) -> None:
    run.extra = ["--drain-timeout-s", "3"]
    _, _, stream = _small(history)
    half = len(stream) // 2
    worker = run.start("w1")
    n_tx, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[:half]))
    wait_for_scores(run, n_tx // 2, worker)
    admin = _admin(run)  # the scores topic goes away (auto-creation is off): every score fails, retriably
    try:
        admin.delete_topics([run.topics["scores"]])
    finally:
        admin.close()
    produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[half:]))
    deadline = time.monotonic() + 120
    while "not acknowledged" not in run.log("w1"):
        assert worker.poll() is None and time.monotonic() < deadline, run.log("w1")[-3000:]
        time.sleep(0.5)
    committed = _committed(run, run.topics["transactions"])
    t0 = time.monotonic()
    code = stop(worker)
    took = time.monotonic() - t0
    # The drain bound (3 s), the 2 s for probes to see why, then Faust's own stop.
    assert code == 1 and took < 3 + 12, (code, took)
    log = run.log("w1")
    assert f"output record(s) to {run.topics['scores']!r} not acknowledged" in log, log[-3000:]
    # main's last word; the consumer loop or the flusher, whichever completed the batch in flight
    assert re.search(r"error: the worker stopped: (consuming transactions|flushing): stopping:", log), log[-3000:]
    assert committed[0] < committed[1]  # the records whose scores failed were never committed
    assert _committed(run, run.topics["transactions"])[0] == committed[0]  # nor at the stop


COMPONENTS = ["terminal-table reader", "label aggregator", "watchdog", "flusher", "stats", "consumer"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_component_that_dies_makes_the_worker_unhealthy_and_exit_1(run: Run, component: str) -> None:
    port = run.metrics_port = free_port()
    run.extra = ["--metrics-host", "127.0.0.1"]
    worker = run.start("w1", env={"FRAUDSTREAM_TEST_HOOKS": "1"})
    deadline = time.monotonic() + 120
    while True:
        assert worker.poll() is None and time.monotonic() < deadline
        try:
            if probe(port, "/readyz")[0] == 200 and "transactions partitions assigned" in run.log("w1"):
                break
        except OSError:
            pass
        time.sleep(0.3)
    status, body = http(port, f"/debug/kill?component={component.replace(' ', '+')}", method="POST")
    assert status == 200, body
    seen: set[int] = set()
    while worker.poll() is None and time.monotonic() < deadline:
        try:
            live, ready = probe(port, "/healthz"), probe(port, "/readyz")
            seen.add(live[0])
            if live[0] == 503:
                assert f"component {component} died" in live[1]["reason"] and ready[0] == 503
        except OSError:
            pass  # the server is gone: the worker is stopping
        time.sleep(0.05)
    assert worker.wait(timeout=60) == 1
    assert f"component {component} died: it was cancelled" in run.log("w1")
    assert 503 in seen and 200 not in seen, seen
