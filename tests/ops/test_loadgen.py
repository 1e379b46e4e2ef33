"""The load generator against the real broker: counts, keys, label order, pacing."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from ops.loadgen.__main__ import main
from ops.loadgen.replay import events
from ops.loadgen.schedule import Schedule
from ops.loadgen.send import CLIENTS, ProducerOptions, send
from ops.loadgen.source import simulated
from trainer.simulate import SimConfig

pytestmark = pytest.mark.integration


def murmur2_partition(key: bytes | None, partitions: int) -> int:
    from kafka.partitioner.default import murmur2

    assert key is not None
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, dict[str, object]]]:
    """(offset order within partition) -> (partition, timestamp, key, value) of every record."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out = []
        deadline = time.monotonic() + 30
        while sum(consumer.position(tp) for tp in parts) < sum(ends.values()) and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend((r.partition, r.timestamp, r.key, orjson.loads(r.value)) for r in recs)
        return out
    finally:
        consumer.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_cli_sends_exactly_the_count_keyed_by_customer_with_labels_after_their_transactions(
        kafka_bootstrap: str, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str], client: str) -> None:
    tx, lab = new_topic(partitions=3), new_topic(partitions=2)
    # 60 days of 40 customers: labels (reported days after their transaction) arrive within the first 1 500.
    t0 = time.time() * 1000
    rc = main(["--bootstrap", kafka_bootstrap, "--topic-transactions", tx, "--topic-labels", lab,
               "--customers", "40", "--terminals", "80", "--days", "60", "--seed", "1", "--count", "1500",
               "--quiet", "--json", "--client", client])
    assert rc == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    txs, labels = read_all(kafka_bootstrap, tx), read_all(kafka_bootstrap, lab)
    assert summary["transactions"] == len(txs) == 1500
    assert summary["labels"] == len(labels) > 0
    assert summary["client"] == client
    # Record timestamps are send times (the benchmark's latency starts there).
    assert all(t0 - 1000 <= ts <= time.time() * 1000 + 1000 for _, ts, _, _ in txs + labels)
    # Kafka's murmur2 key partitioner, whichever client: the same customer always on the same partition.
    assert all(p == murmur2_partition(key, 3) for p, _, key, _ in txs)
    assert all(key == str(v["customer_id"]).encode() for _, _, key, v in txs)
    assert all(key == str(v["terminal_id"]).encode() for _, _, key, v in labels)
    sent_ts = {v["tx_id"]: v["ts"] for _, _, _, v in txs}
    assert len(sent_ts) == 1500
    # Every label is for a sent transaction, and its send time is no earlier than that transaction's.
    sent_at = {v["tx_id"]: ts for _, ts, _, v in txs}
    for _, ts, _, v in labels:
        assert v["tx_id"] in sent_ts
        assert ts >= sent_at[str(v["tx_id"])]
        assert v["ts"] == sent_ts[v["tx_id"]] and int(str(v["ts"])) <= int(str(v["reported_at"]))
        assert v["is_fraud"] in (0, 1)
    # A label is sent when the replay reaches its reported_at: exactly those reported before the next transaction.
    h, labs = simulated(SimConfig(customers=40, terminals=80, days=60, seed=1))
    assert len(labels) == int((labs.reported_at < h.ts[1500]).sum())
    assert sorted(str(v["tx_id"]) for _, _, _, v in labels) == sorted(
        str(t) for t, r in zip(labs.tx_id, labs.reported_at, strict=True) if r < h.ts[1500])
    # Within each partition, transactions are in event-time order.
    for p in range(3):
        times = [int(str(v["ts"])) for part, _, _, v in txs if part == p]
        assert times == sorted(times)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_target_rate_is_not_exceeded(kafka_bootstrap: str, new_topic: Callable[..., str], client: str) -> None:
    tx, lab = new_topic(), new_topic()
    h, labels = simulated(SimConfig(customers=30, terminals=60, days=40, seed=2))
    count, rate = 300, 200.0
    s = send(kafka_bootstrap, tx, lab, events(h, labels, 0, count), Schedule(rate=rate),
             ProducerOptions(client=client), count=count)
    assert s.transactions == count
    # The last transaction is due at (count - 1) / rate; never assert an upper bound on speed.
    assert s.send_seconds >= (count - 1) / rate - 0.05
    assert len(read_all(kafka_bootstrap, tx)) == count


def test_steps_and_duration_stop_the_run(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    tx, lab = new_topic(), new_topic()
    h, _ = simulated(SimConfig(customers=30, terminals=60, days=40, seed=2))
    s = send(kafka_bootstrap, tx, lab, events(h, None), Schedule(), count=10)
    assert s.transactions == 10
    s = send(kafka_bootstrap, tx, lab, events(h, None), Schedule(rate=100), duration_s=0.5)
    assert s.transactions == 50  # due at 0, 0.01, ..., 0.49 s
    from ops.loadgen.schedule import parse_steps

    s = send(kafka_bootstrap, tx, lab, events(h, None), Schedule(steps=parse_steps("100:0.5,200:0.5")))
    assert s.transactions == 150 and s.step_counts == [50, 100]
    assert s.send_seconds >= 0.99 - 0.05
