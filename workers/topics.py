"""Create the worker's topics when missing, with partitions and retention from settings, and check
that the dead-letter topic takes every record its sources take, plus the dead-letter headers."""

from __future__ import annotations

import contextlib
import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from schemas.errors import ConfigError
from schemas.replication import AUTO, cluster_factor, topic_settings
from workers.config import Settings

DAY_MS = 86_400_000
log = logging.getLogger("fraudstream.worker")
# A dead letter is its source record plus headers of at most ~1.3 kB (the detail is capped at 1000
# bytes): a DLQ we create gets the sources' limit plus DLQ_HEADROOM; an existing one must allow at
# least the sources' limit plus DLQ_HEADER_ROOM.
DLQ_HEADROOM = 64 * 1024
DLQ_HEADER_ROOM = 4096


def topic_specs(s: Settings, source_max_bytes: int | None = None) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic the worker uses: (partitions, configs at creation). ``source_max_bytes``: the
    largest record the sources take (sizes the dead-letter topic; unknown before they exist)."""
    retention = str(int(s.retention_days * DAY_MS))
    source = {"retention.ms": retention}
    out = {"retention.ms": str(7 * DAY_MS)}
    t = s.topics
    return {
        t.transactions: (s.partitions, source),
        t.labels: (s.partitions, source),
        t.flags: (s.partitions, out),
        t.scores: (s.partitions, out),
        t.shadow_scores: (s.partitions, out),
        t.stats: (1, out),
        t.dlq: (s.partitions, {"retention.ms": retention} if source_max_bytes is None else
                {"retention.ms": retention, "max.message.bytes": str(source_max_bytes + DLQ_HEADROOM)}),
        # Hourly segments: compaction only cleans closed segments, and the table's trimmed keys
        # (tombstones) should go within hours, not after the default week-long segment.
        t.terminal_days: (1, {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60_000),
                              "segment.ms": str(3_600_000)}),
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
        existing = set(admin.list_topics())
        sources = [s.topics.transactions, s.topics.labels]
        _create_missing(admin, {n: v for n, v in topic_specs(s).items() if n != s.topics.dlq}, existing,
                        s.replication_factor)
        limits = _max_message_bytes(admin, sources)
        source_max = max(limits.values()) if limits else None
        specs = topic_specs(s, source_max)
        _create_missing(admin, {s.topics.dlq: specs[s.topics.dlq]}, existing, s.replication_factor)
        dlq_max = _max_message_bytes(admin, [s.topics.dlq])
        if source_max is not None and dlq_max:
            _check_dlq(s, dlq_max[s.topics.dlq], source_max)
        return _partition_counts(s, admin, list(specs))
    finally:
        admin.close()


def _create_missing(admin: KafkaAdminClient, specs: dict[str, tuple[int, dict[str, str]]], existing: set[str],
                    replication: int = AUTO) -> None:
    """Create the topics of ``specs`` not in ``existing``, replicated as ``schemas.replication`` says
    (``replication``: the requested factor, AUTO from the cluster's size)."""
    missing = [name for name in specs if name not in existing]
    if not missing:
        return
    factor = cluster_factor(admin, replication)
    for name in missing:
        n, cfg = specs[name]
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker created it first
            admin.create_topics([NewTopic(name, num_partitions=n, replication_factor=factor,
                                          topic_configs={**topic_settings(factor), **cfg})])


def _max_message_bytes(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """The effective ``max.message.bytes`` of each topic (its own, else the broker's default); empty
    when the credentials may not describe configs (the dead-letter check is then skipped, with a warning)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None}) for t in topics]
    deadline = time.monotonic() + 15
    while True:
        try:
            described = admin.describe_configs(resources, config_filter="all")
            return {t: int(described["topic"][t]["max.message.bytes"]["value"]) for t in topics}
        except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
            log.warning("cannot read max.message.bytes of %s (%r): the dead-letter topic's size is not checked",
                        ", ".join(topics), exc)
            return {}
        except (KafkaError, KeyError) as exc:  # a topic created a moment ago may not be known yet
            if time.monotonic() >= deadline:
                raise ConfigError(f"cannot read max.message.bytes of {', '.join(topics)} from "
                                  f"the broker: {exc!r}") from exc
            time.sleep(0.2)


def _check_dlq(s: Settings, dlq_max: int, source_max: int) -> None:
    """A dead letter must fit wherever its source record fit: else one large record would wedge it."""
    if dlq_max < source_max + DLQ_HEADER_ROOM:
        want = source_max + DLQ_HEADROOM
        raise ConfigError(
            f"dead-letter topic {s.topics.dlq!r} takes records of at most {dlq_max} bytes, but its sources take "
            f"{source_max} and a dead letter adds headers: raise it to at least {source_max + DLQ_HEADER_ROOM} "
            f"(kafka-configs.sh --bootstrap-server {s.bootstrap} --alter --entity-type topics --entity-name "
            f"{s.topics.dlq} --add-config max.message.bytes={want}), or point --topic-dlq at another topic")


def _partition_counts(s: Settings, admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of every topic. A topic created a moment ago can be described without partitions
    while its metadata propagates; a worker that took that for 0 partitions could never call a day final."""
    deadline = time.monotonic() + 15
    while True:
        described = admin.describe_topics(names)
        counts = {d.get("name", d.get("topic")): len(d["partitions"]) for d in described}
        if all(counts.get(name) for name in names):
            return counts
        if time.monotonic() >= deadline:
            empty = sorted(name for name in names if not counts.get(name))
            raise ConfigError(f"Kafka at {s.bootstrap} describes no partitions for {', '.join(empty)} 15 s "
                              f"after creating them; check the broker's log")
        time.sleep(0.2)
