"""The monitor's topics: its sources must exist (the workers create them); its outputs are created when
missing — ``model-metrics`` compacted, the lease with one partition, the dead-letter topic sized to
take any record its sources take (``workers.topics``'s rule)."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from schemas.errors import ConfigError
from workers.monitor.config import MonitorSettings
from workers.topics import DLQ_HEADER_ROOM, DLQ_HEADROOM, _create_missing, _max_message_bytes

log = logging.getLogger("fraudstream.monitor")
DAY_MS = 86_400_000
# Hourly segments: compaction only cleans closed segments, and a tx_day record replaced by its next
# stage (or a republication) should go within hours.
METRICS_CONFIG = {"cleanup.policy": "compact", "segment.ms": str(3_600_000), "min.compaction.lag.ms": str(60_000)}


def admin_client(s: MonitorSettings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(bootstrap_servers=s.bootstrap, **s.auth.kafka_python(),
                                client_id=f"{s.monitor_id}-admin", request_timeout_ms=15000,
                                bootstrap_timeout_ms=15000)
    except KafkaError as exc:
        raise ConfigError(f"cannot connect to Kafka at {s.bootstrap} as {s.auth.describe()} ({exc!r}): check "
                          f"--bootstrap / FRAUDSTREAM_BOOTSTRAP and the FRAUDSTREAM_KAFKA_* credentials") from exc


def ensure_topics(s: MonitorSettings) -> dict[str, int]:
    """Check the sources, create the outputs; the partition counts of the sources and the dead-letter topic."""
    t = s.topics
    admin = admin_client(s)
    try:
        existing = set(admin.list_topics())
        for name, flag in ((t.scores, "--topic-scores"), (t.labels, "--topic-labels")):
            if name not in existing:
                raise ConfigError(f"topic {name!r} does not exist: start the workers first (they create it), or "
                                  f"point {flag} at the topic they use")
        _create_missing(admin, {t.metrics: (1, METRICS_CONFIG), t.lease: (1, {})}, existing)
        limits = _max_message_bytes(admin, [t.scores, t.labels])
        # Kept as long as a rebuild reads back: it tells a new active instance what is already dead-lettered.
        dlq = {"retention.ms": str(s.rebuild_span_ms + DAY_MS)}
        if limits:
            dlq["max.message.bytes"] = str(max(limits.values()) + DLQ_HEADROOM)
        _create_missing(admin, {t.dlq: (s.dlq_partitions, dlq)}, existing)
        dlq_max = _max_message_bytes(admin, [t.dlq]).get(t.dlq)
        if limits and dlq_max is not None and dlq_max < max(limits.values()) + DLQ_HEADER_ROOM:
            raise ConfigError(f"dead-letter topic {t.dlq!r} takes records of at most {dlq_max} bytes, less than its "
                              f"sources take plus headers: raise its max.message.bytes to "
                              f"{max(limits.values()) + DLQ_HEADROOM}, or point --topic-metrics-dlq elsewhere")
        counts = _partitions(admin, [t.scores, t.labels, t.lease, t.dlq])
        if counts[t.lease] != 1:
            raise ConfigError(f"lease topic {t.lease!r} has {counts[t.lease]} partitions: it must have exactly one "
                              f"(delete it, or point --topic-lease at a new name)")
        _warn_short_retention(s, admin)
        shadow = _partitions(admin, [t.shadow_scores])[t.shadow_scores] if t.shadow_scores in existing else 0
        return {t.scores: counts[t.scores], t.labels: counts[t.labels], t.dlq: counts[t.dlq],
                t.transactions: _input_partitions(s, admin, existing), t.shadow_scores: shadow}
    finally:
        admin.close()


def _input_partitions(s: MonitorSettings, admin: KafkaAdminClient, existing: set[str]) -> int:
    """The input topic's partitions (the sources each scores partition waits for); 0, with a warning, without it."""
    if s.topics.transactions not in existing:
        log.warning("topic %r (--topic-transactions) does not exist: the scores partitions wait for no input "
                    "partition, and in a backlog the first scores of the slowest ones may count late",
                    s.topics.transactions)
        return 0
    return _partitions(admin, [s.topics.transactions])[s.topics.transactions]


def _partitions(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of every topic (a topic created a moment ago may be described without any for a while)."""
    deadline = time.monotonic() + 15
    while True:
        counts = {d.get("name", d.get("topic")): len(d["partitions"]) for d in admin.describe_topics(names)}
        if all(counts.get(n) for n in names) or time.monotonic() >= deadline:
            missing = [n for n in names if not counts.get(n)]
            if missing:
                raise ConfigError(f"the broker describes no partitions for {', '.join(missing)}; check its log")
            return counts
        time.sleep(0.2)


def _warn_short_retention(s: MonitorSettings, admin: KafkaAdminClient) -> None:
    """An instance that becomes active reads back ``rebuild_span_ms``: a source that keeps less makes the windows
    it cannot rebuild go unpublished (suppressed, never wrong). Worth saying at start, not worth refusing."""
    names = [s.topics.scores, s.topics.labels]
    try:
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n, {"retention.ms": None})
                                      for n in names], config_filter="all")
        retention = {n: int(got["topic"][n]["retention.ms"]["value"]) for n in names}
    except (KafkaError, KeyError, ValueError, TypeError) as exc:
        log.warning("cannot read the retention of %s (%r): not checked", ", ".join(names), exc)
        return
    for name, ms in retention.items():
        if 0 <= ms < s.rebuild_span_ms:
            log.warning("topic %s keeps %.1f days, less than the %.0f days a new active monitor reads back "
                        "(--horizon-days %d + 7 + 2): after a failover, windows reaching further back are not "
                        "published; raise its retention.ms to %d", name, ms / DAY_MS, s.rebuild_span_ms / DAY_MS,
                        s.horizon_days, s.rebuild_span_ms)
