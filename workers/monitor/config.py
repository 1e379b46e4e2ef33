"""The monitor's settings: one frozen object, read from flags that fall back to env variables.

``python -m workers.monitor --help`` lists them. What it shares with the workers (the broker, its
credentials, the scores and labels topics, the bundles directory, --max-future-ms) reads the same
env variables as theirs; what is its own reads ``FRAUDSTREAM_MONITOR_*``, so that a monitor and a
worker configured from one environment never take each other's group or port.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ConfigError
from schemas.kafka_auth import KafkaAuth
from schemas.settings import add, positive_int
from workers.config import Topics, port, positive_float
from workers.monitor.windows import DAY_MS, FEEDBACK_DAYS, LONGEST_ARRIVAL_MS

# Read back on activation beyond the horizon: the longest arrival window (its labels may join scores a
# horizon older) and two days of margin (day rounding, record timestamps ahead of event time).
REBUILD_MARGIN_MS = 2 * DAY_MS


@dataclass(frozen=True)
class MonitorTopics:
    transactions: str = Topics().transactions
    scores: str = Topics().scores
    shadow_scores: str = Topics().shadow_scores
    labels: str = Topics().labels
    metrics: str = "model-metrics"
    dlq: str = "model-metrics.dlq"
    lease: str = "model-metrics.lease"


@dataclass(frozen=True)
class MonitorSettings:
    bootstrap: str
    auth: KafkaAuth
    topics: MonitorTopics
    group_id: str
    monitor_id: str
    bundles: Path
    bundle_key: bytes | None = field(repr=False)  # the HMAC secret: never in a repr or a log line
    horizon_days: int
    lateness_ms: int
    idle_ms: int
    max_future_ms: int
    dlq_partitions: int
    session_timeout_s: float
    metrics_host: str
    metrics_port: int
    data_dir: Path
    retry_backoff_ms: int = 200

    @property
    def rebuild_span_ms(self) -> int:
        """How far back (wall clock) an instance that becomes active reads both topics."""
        return self.horizon_days * DAY_MS + LONGEST_ARRIVAL_MS + REBUILD_MARGIN_MS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workers.monitor",
        description="fraudstream model monitor: joins scores with fraud labels as they arrive and publishes live "
                    "model metrics per model version (compacted topic, Prometheus)")
    add(p, "--bootstrap", "FRAUDSTREAM_BOOTSTRAP", os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "Kafka bootstrap servers (host:port[,host:port])", shown="$KAFKA_BOOTSTRAP, else 127.0.0.1:9092")
    d = MonitorTopics()
    add(p, "--topic-transactions", "FRAUDSTREAM_TOPIC_TRANSACTIONS", d.transactions,
        "topic: the workers' input (only its partition count is read: every scores partition waits for the "
        "scores of each input partition)")
    add(p, "--topic-scores", "FRAUDSTREAM_TOPIC_SCORES", d.scores, "topic: the workers' scores (read)")
    add(p, "--topic-shadow-scores", "FRAUDSTREAM_TOPIC_SHADOW_SCORES", d.shadow_scores,
        "topic: the registry's shadow version's scores (read when it exists: its metrics beside the champion's)")
    add(p, "--topic-labels", "FRAUDSTREAM_TOPIC_LABELS", d.labels, "topic: fraud labels (read)")
    add(p, "--topic-metrics", "FRAUDSTREAM_TOPIC_MODEL_METRICS", d.metrics,
        "topic: model metrics (written; created compacted when missing)")
    add(p, "--topic-metrics-dlq", "FRAUDSTREAM_TOPIC_MODEL_METRICS_DLQ", d.dlq,
        "topic: scores and labels the monitor cannot read (created when missing)")
    add(p, "--topic-lease", "FRAUDSTREAM_TOPIC_MODEL_METRICS_LEASE", d.lease,
        "topic: one partition whose holder in --group-id is the active instance (created when missing)")
    add(p, "--group-id", "FRAUDSTREAM_MONITOR_GROUP_ID", "fraudstream-monitor",
        "consumer group of the monitor instances: one is active, the others stand by")
    add(p, "--monitor-id", "FRAUDSTREAM_MONITOR_ID", f"{socket.gethostname()}-{os.getpid()}",
        "this instance's id (client ids, dead-letter headers)", shown="<hostname>-<pid>")
    add(p, "--bundles", "FRAUDSTREAM_BUNDLES", Path("bundles"),
        "directory of model bundles (<dir>/<model_version>/model.json): their calibration gives the estimated "
        "precision; a version without one gets none", Path)
    add(p, "--horizon-days", "FRAUDSTREAM_MONITOR_HORIZON_DAYS", 60,
        f"how long after a transaction's day its labels still count (the final stage); > {FEEDBACK_DAYS}",
        positive_int)
    add(p, "--lateness-ms", "FRAUDSTREAM_MONITOR_LATENESS_MS", 3_600_000,
        "how far behind its partition's latest event time a score or label may arrive before the windows it "
        "belongs to close without it", int)
    add(p, "--idle-ms", "FRAUDSTREAM_MONITOR_IDLE_MS", 5000,
        "a caught-up partition without a record this long no longer holds its stream's watermark back", int)
    add(p, "--max-future-ms", "FRAUDSTREAM_MAX_FUTURE_MS", 3_600_000,
        "event time allowed ahead of the record's Kafka timestamp", int)
    add(p, "--partitions", "FRAUDSTREAM_PARTITIONS", 4, "partitions of the dead-letter topic when created",
        positive_int)
    add(p, "--session-timeout-s", "FRAUDSTREAM_MONITOR_SESSION_TIMEOUT_S", 10.0,
        "consumer-group session timeout: how long a dead active instance keeps the lease", positive_float)
    add(p, "--metrics-host", "FRAUDSTREAM_MONITOR_METRICS_HOST", "0.0.0.0",
        "address of the health/metrics HTTP server (/healthz, /readyz, /metrics)")
    add(p, "--metrics-port", "FRAUDSTREAM_MONITOR_METRICS_PORT", 9410,
        "port of the health/metrics HTTP server; 0 disables it", port)
    add(p, "--data-dir", "FRAUDSTREAM_MONITOR_DATA_DIR", Path(".state/monitor"), "Faust's local data directory",
        Path)
    return p


def parse(argv: list[str] | None = None) -> MonitorSettings:
    """Parse flags and env; a bad value raises ``ConfigError`` naming the fix."""
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            raise ConfigError("invalid command line (see the message above and --help)") from exc
        raise
    if a.horizon_days <= FEEDBACK_DAYS:
        raise ConfigError(f"--horizon-days {a.horizon_days}: must be more than the {FEEDBACK_DAYS}-day feedback "
                          f"stage (the default, 60, is the longest label report delay) "
                          f"(env FRAUDSTREAM_MONITOR_HORIZON_DAYS)")
    if a.lateness_ms < 0 or a.idle_ms <= 0 or a.max_future_ms < 0:
        raise ConfigError("--lateness-ms and --max-future-ms must be >= 0, --idle-ms > 0 (env "
                          "FRAUDSTREAM_MONITOR_LATENESS_MS, FRAUDSTREAM_MONITOR_IDLE_MS, FRAUDSTREAM_MAX_FUTURE_MS)")
    if a.session_timeout_s < 6:
        raise ConfigError(f"--session-timeout-s {a.session_timeout_s}: brokers refuse sessions under 6 s by default "
                          f"(group.min.session.timeout.ms) (env FRAUDSTREAM_MONITOR_SESSION_TIMEOUT_S)")
    key = os.environ.get("FRAUDSTREAM_BUNDLE_KEY") or None
    topics = MonitorTopics(transactions=a.topic_transactions, scores=a.topic_scores,
                           shadow_scores=a.topic_shadow_scores, labels=a.topic_labels,
                           metrics=a.topic_metrics, dlq=a.topic_metrics_dlq, lease=a.topic_lease)
    if len({*vars(topics).values()}) < len(vars(topics)):
        raise ConfigError(f"the monitor's topics must differ: {topics}")
    return MonitorSettings(
        bootstrap=a.bootstrap, auth=KafkaAuth.from_env(), topics=topics, group_id=a.group_id,
        monitor_id=a.monitor_id, bundles=a.bundles, bundle_key=key.encode() if key else None,
        horizon_days=a.horizon_days, lateness_ms=a.lateness_ms, idle_ms=a.idle_ms, max_future_ms=a.max_future_ms,
        dlq_partitions=a.partitions, session_timeout_s=a.session_timeout_s, metrics_host=a.metrics_host,
        metrics_port=a.metrics_port, data_dir=a.data_dir)
