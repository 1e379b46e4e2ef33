"""Kafka chores of the benchmark (kafka-python): topics, end offsets, reading a topic back."""

from __future__ import annotations

import os
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from ops.loadgen.topics import ensure_topics
from schemas.replication import parse_factor


def create_topics(bootstrap: str, names: list[str], partitions: int, configs: dict[str, str] | None = None) -> None:
    """Replicated as the workers of the run will (env FRAUDSTREAM_REPLICATION_FACTOR, else auto)."""
    ensure_topics(bootstrap, names, partitions, configs,
                  replication=parse_factor(os.environ.get("FRAUDSTREAM_REPLICATION_FACTOR") or "auto"))


def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fraudstream-bench-admin")
    try:
        names = [t for t in admin.list_topics() if t.startswith(prefix)]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()


def end_total(consumer: KafkaConsumer, topic: str) -> int:
    parts = consumer.partitions_for_topic(topic) or set()
    ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
    return int(sum(ends.values()))


def wait_count(bootstrap: str, topic: str, n: int, timeout_s: float, alive: object = None) -> int:
    """Poll the topic's end offsets until they sum to ``n`` (or the timeout); return the last total."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    total = 0
    try:
        while time.monotonic() < deadline:
            consumer._client.cluster.request_update()  # pick up a topic created meanwhile
            total = end_total(consumer, topic)
            if total >= n:
                break
            if callable(alive) and not alive():
                break
            time.sleep(0.25)
    finally:
        consumer.close()
    return total


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, bytes]]:
    """Every record now in ``topic``: (timestamp ms, key, value)."""
    return [(r.timestamp, r.key, r.value) for r in read_records(bootstrap, topic)]


def read_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record now in ``topic``, as kafka-python ``ConsumerRecord``s (headers, partition, offset too)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_bytes=64 * 1024 * 1024, max_poll_records=10000)
    out: list[Any] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        todo = {tp for tp in parts if ends[tp] > 0}
        while todo:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
            # By position, not by the last record's offset: on a transactional topic the last offset is a
            # commit marker, never returned as a record.
            todo = {tp for tp in todo if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()
    return out
