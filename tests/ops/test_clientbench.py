"""ops.clientbench on the real broker, small: each measurement moves every record (the output topics
hold exactly what the input held) and reports a positive rate."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer

from ops.bench.kafka_io import create_topics, end_total
from ops.clientbench import jvm
from ops.clientbench.passthrough import aiokafka_rate, confluent_rate

pytestmark = pytest.mark.integration
N = 3000


def _count(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return end_total(consumer, topic)
    finally:
        consumer.close()


def test_every_client_moves_every_record(kafka_bootstrap: str) -> None:
    tag = f"cbt-{uuid.uuid4().hex[:8]}"
    src, out_a, out_c = f"{tag}-in", f"{tag}-a", f"{tag}-c"
    create_topics(kafka_bootstrap, [src, out_a, out_c], 4)
    assert jvm.produce(kafka_bootstrap, src, N, 200) > 0
    assert _count(kafka_bootstrap, src) == N
    assert jvm.consume(kafka_bootstrap, src, N) > 0
    assert aiokafka_rate(kafka_bootstrap, src, out_a, N, f"{out_a}-g") > 0
    assert confluent_rate(kafka_bootstrap, src, out_c, N, f"{out_c}-g") > 0
    assert _count(kafka_bootstrap, out_a) == N and _count(kafka_bootstrap, out_c) == N
