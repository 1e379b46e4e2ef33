"""The broker is real: clients of two stacks, partitions, group offsets, restart on the same data."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ops.kafka import LocalBroker, broker_answers

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=k, value=v) for k, v in items]
    for f in futures:
        f.get(timeout=30)
    producer.close()


def _consume(bootstrap: str, topic: str, expected: int, group: str | None = None,
             commit: bool = False) -> list[tuple[int, int, bytes, bytes]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=15000,
    )
    out: list[tuple[int, int, bytes, bytes]] = []
    for rec in consumer:
        out.append((rec.partition, rec.offset, rec.key, rec.value))
        if len(out) >= expected:
            break
    if commit:
        consumer.commit()
    consumer.close()
    return out


def test_kafka_python_round_trip(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic()
    items = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
    _produce(kafka_bootstrap, topic, items)
    got = _consume(kafka_bootstrap, topic, len(items))
    assert [(k, v) for _, _, k, v in got] == items
    assert [o for _, o, _, _ in got] == list(range(200))


def test_aiokafka_round_trip(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = new_topic()

    async def run() -> list[tuple[bytes, bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(100):
                await producer.send_and_wait(topic, key=f"a{i}".encode(), value=f"b{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        got: list[tuple[bytes, bytes]] = []
        try:
            while len(got) < 100:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), timeout=30)
                for records in batches.values():
                    got.extend((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert got == [(f"a{i}".encode(), f"b{i}".encode()) for i in range(100)]


def test_partitions_keep_keys_together(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=4)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    assert consumer.partitions_for_topic(topic) == {0, 1, 2, 3}
    consumer.close()
    items = [(f"customer-{i % 40}".encode(), f"{i}".encode()) for i in range(400)]
    _produce(kafka_bootstrap, topic, items)
    got = _consume(kafka_bootstrap, topic, len(items))
    assert len(got) == 400
    partitions_of_key: dict[bytes, set[int]] = {}
    for partition, _, key, _ in got:
        partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert len({p for _, _, _, p in [(0, 0, 0, next(iter(s))) for s in partitions_of_key.values()]}) > 1
    # Order within a key is preserved.
    for key in partitions_of_key:
        values = [int(v) for _, _, k, v in got if k == key]
        assert values == sorted(values)


def test_committed_offset_survives_consumer_restart(
    kafka_bootstrap: str, new_topic: Callable[..., str], new_group: Callable[[], str]
) -> None:
    topic, group = new_topic(), new_group()
    _produce(kafka_bootstrap, topic, [(b"k", f"{i}".encode()) for i in range(20)])
    first = _consume(kafka_bootstrap, topic, 8, group=group, commit=True)
    assert [v for _, _, _, v in first] == [f"{i}".encode() for i in range(8)]
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    assert consumer.committed(TopicPartition(topic, 0)) == 8
    consumer.close()
    rest = _consume(kafka_bootstrap, topic, 12, group=group)
    assert [v for _, _, _, v in rest] == [f"{i}".encode() for i in range(8, 20)]


def test_broker_restarts_on_same_log_dir_with_data_intact(tmp_path: Path) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    broker = LocalBroker(tmp_path / "kafka")
    info = broker.start(port=0)
    try:
        admin = KafkaAdminClient(bootstrap_servers=info.bootstrap)
        admin.create_topics([NewTopic("durable", num_partitions=2, replication_factor=1)])
        admin.close()
        items = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(50)]
        _produce(info.bootstrap, "durable", items)
        assert broker.stop()
        assert broker.running() is None
        assert not broker_answers(info.bootstrap, timeout_s=2.0)
        again = broker.start(port=0)
        assert again.bootstrap == info.bootstrap and again.cluster_id == info.cluster_id
        assert again.pid != info.pid
        got = _consume(again.bootstrap, "durable", len(items))
        assert sorted((k, v) for _, _, k, v in got) == sorted(items)
        # A second start while running is idempotent: same process.
        assert broker.start(port=0).pid == again.pid
    finally:
        broker.stop()
