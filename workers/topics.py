"""Create the worker's topics when missing, with partitions and retention from settings."""

from __future__ import annotations

import contextlib
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import ConfigError
from schemas.messages import MAX_MESSAGE_BYTES
from workers.config import Settings

DAY_MS = 86_400_000


def topic_specs(s: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    retention = str(int(s.retention_days * DAY_MS))
    source = {"retention.ms": retention}
    out = {"retention.ms": str(7 * DAY_MS)}
    t = s.topics
    return {
        t.transactions: (s.partitions, source),
        t.labels: (s.partitions, source),
        t.flags: (s.partitions, out),
        t.scores: (s.partitions, out),
        t.stats: (1, out),
        # The dead-letter topic accepts records as large as the source topic does (plus headers).
        t.dlq: (s.partitions, {"retention.ms": retention, "max.message.bytes": str(max(1_048_588, MAX_MESSAGE_BYTES))}),
        t.terminal_days: (1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60_000)}),
    }


def ensure_topics(s: Settings) -> dict[str, int]:
    """Create missing topics; return the partition count of every topic."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=s.bootstrap, **s.auth.kafka_python(),
                                 client_id=f"{s.worker_id}-admin",
                                 request_timeout_ms=15000, bootstrap_timeout_ms=15000)
    except KafkaError as exc:
        if "auth" in type(exc).__name__.lower() or "sasl" in str(exc).lower():
            raise ConfigError(f"Kafka at {s.bootstrap} refused the credentials ({type(exc).__name__}): check "
                              f"FRAUDSTREAM_KAFKA_USERNAME / FRAUDSTREAM_KAFKA_PASSWORD / the SASL mechanism") from exc
        if s.auth.sasl:
            raise ConfigError(
                f"cannot connect to Kafka at {s.bootstrap} as {s.auth.describe()} ({type(exc).__name__}): the broker "
                f"refused the credentials or is unreachable; check FRAUDSTREAM_KAFKA_USERNAME / "
                f"FRAUDSTREAM_KAFKA_PASSWORD / FRAUDSTREAM_KAFKA_SASL_MECHANISM / FRAUDSTREAM_KAFKA_CA_FILE and "
                f"--bootstrap") from exc
        raise ConfigError(
            f"cannot reach Kafka at {s.bootstrap} ({exc}): check --bootstrap / FRAUDSTREAM_BOOTSTRAP") from exc
    try:
        specs = topic_specs(s)
        existing = set(admin.list_topics())
        missing = [NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=cfg)
                   for name, (n, cfg) in specs.items() if name not in existing]
        for topic in missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker created it first
                admin.create_topics([topic])
        # A topic created a moment ago can be described without partitions while its metadata
        # propagates; a worker that took that for 0 partitions could never call a day final.
        deadline = time.monotonic() + 15
        while True:
            described = admin.describe_topics(list(specs))
            counts = {d.get("name", d.get("topic")): len(d["partitions"]) for d in described}
            if all(counts.get(name) for name in specs):
                return counts
            if time.monotonic() >= deadline:
                empty = sorted(name for name in specs if not counts.get(name))
                raise ConfigError(f"Kafka at {s.bootstrap} describes no partitions for {', '.join(empty)} 15 s "
                                  f"after creating them; check the broker's log")
            time.sleep(0.2)
    finally:
        admin.close()
