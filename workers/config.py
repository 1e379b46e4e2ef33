"""The worker's settings: one frozen object, read from flags that fall back to env variables.

``python -m workers --help`` lists every setting with its env variable and default.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ConfigError
from schemas.features import LABEL_CUTOFF_MARGIN_MS
from schemas.kafka_auth import KafkaAuth
from schemas.replication import AUTO, parse_factor
from schemas.settings import add, flag, non_negative_float, non_negative_int, positive_int

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
GRAPHS = ("auto", "tree", "tensor")
GUARANTEES = ("at-least-once", "exactly-once")
# --batch-size auto: 1000 on the CPU; 4096 when the provider in use is CUDA or TensorRT (decided
# after the session loads, workers/__main__.py). A GPU run costs about the same for a few hundred
# rows as for thousands (launch- and copy-bound), so a larger cap drains bursts and backlogs in
# fewer, cheaper calls, while --max-wait-ms still bounds how long a batch waits to fill. Not
# measured on a GPU yet (BENCHMARKS.md, "GPU path"): revisit with ops.inferbench on one.
CPU_BATCH_SIZE = 1000
GPU_BATCH_SIZE = 4096
OFFSET_RESETS = ("earliest", "latest")


@dataclass(frozen=True)
class Topics:
    transactions: str = "transactions"
    labels: str = "fraud-labels"
    flags: str = "fraud-flags"
    scores: str = "scores"
    stats: str = "latency-stats"
    dlq: str = "transactions.dlq"
    terminal_days: str = "terminal-days"
    shadow_scores: str = "shadow-scores"    # the registry's shadow version's scores (never flagged)
    model_bundles: str = "model-bundles"    # the registry (schemas/registry.py): read without --bundle
    model_control: str = "model-control"


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    bundle: Path | None  # None: the registry's champion (workers/registry.py)
    shadow_bundle: Path | None  # a fixed shadow (scores to the shadow topic, never flags); None: none or the registry's
    bundle_key: bytes | None = field(repr=False)  # the HMAC secret: never in a repr or a log line
    require_signature: bool
    topics: Topics
    partitions: int
    retention_days: float
    scores_enabled: bool
    batch_size: int
    max_wait_ms: float
    provider: str
    intra_op_threads: int
    inter_op_threads: int
    stats_interval_s: float
    worker_id: str
    group_id: str
    auto_offset_reset: str
    lateness_ms: int
    label_lateness_ms: int
    max_future_ms: int
    terminal_wait_s: float
    idle_ms: int
    retries: int
    retry_backoff_ms: int
    data_dir: Path
    session_timeout_s: float
    auth: KafkaAuth
    commit_interval_ms: int = 1000
    replication_factor: int = AUTO  # of the topics created at start (schemas/replication.py)
    exactly_once: bool = False      # --guarantee exactly-once (workers/transact.py)
    latency_target_ms: float = 0.0  # 0: fixed batches (workers/batching.py)
    graph: str = "auto"            # auto | tree | tensor (workers/score.py)
    batch_size_auto: bool = False  # --batch-size auto: the GPU default may replace CPU_BATCH_SIZE at start
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9400       # 0: no HTTP server
    watchdog_interval_s: float = 5.0
    stall_after_s: float = 30.0
    drain_timeout_s: float = 10.0
    reasons: int = 3               # reason codes per flag (workers/explain.py); 0: none, LightGBM not loaded
    reasons_share: float = 0.1     # at most this share of the scored rows explained, on average (ReasonBudget)
    drift: bool = True             # count scored rows into the bundle's reference bins (workers/drift.py)
    test_hooks: bool = False       # env FRAUDSTREAM_TEST_HOOKS=1: POST /debug/pause|resume (tests only)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workers",
        description="fraudstream stream worker: score transactions from Kafka with ONNX Runtime")
    add(p, "--bootstrap", "FRAUDSTREAM_BOOTSTRAP", os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "Kafka bootstrap servers (host:port[,host:port])", shown="$KAFKA_BOOTSTRAP, else 127.0.0.1:9092")
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", None,
        "model bundle directory; unset: the champion of the model registry (topics model-bundles and "
        "model-control), followed while running: a new champion is swapped in without a restart", Path)
    add(p, "--shadow-bundle", "FRAUDSTREAM_SHADOW_BUNDLE", None,
        "a second bundle that scores every transaction from the same rows, to the shadow-scores topic, never "
        "flagging; without --bundle, model-control's shadow replaces it", _optional_path)
    add(p, "--require-signature", "FRAUDSTREAM_REQUIRE_SIGNATURE", False,
        "refuse an unsigned bundle (key in env FRAUDSTREAM_BUNDLE_KEY)", flag)
    d = Topics()
    for name in ("transactions", "labels", "flags", "scores", "stats", "dlq", "terminal_days", "shadow_scores",
                 "model_bundles", "model_control"):
        add(p, f"--topic-{name.replace('_', '-')}", f"FRAUDSTREAM_TOPIC_{name.upper()}", getattr(d, name),
            f"topic: {name.replace('_', ' ')}")
    add(p, "--partitions", "FRAUDSTREAM_PARTITIONS", 4, "partitions of the topics created at start when missing",
        positive_int)
    add(p, "--replication-factor", "FRAUDSTREAM_REPLICATION_FACTOR", "auto",
        "replication factor of the topics created at start when missing; auto: 3 on a cluster of three brokers or "
        "more, else 1 (min.insync.replicas 2 with a factor of 3 or more, else 1); existing topics are left as they are",
        parse_factor)
    add(p, "--guarantee", "FRAUDSTREAM_GUARANTEE", "at-least-once",
        "at-least-once: outputs acknowledged, then offsets committed (a kill -9 may repeat a few outputs); "
        "exactly-once: each input partition's outputs (scores, flags, dead letters, shadow scores) and its offsets "
        "are committed in one Kafka transaction, so consumers reading with isolation.level=read_committed see "
        "every transaction scored once through kill -9, rebalances and broker failover (the lag they see grows by "
        "up to --commit-interval-ms)")
    add(p, "--retention-days", "FRAUDSTREAM_RETENTION_DAYS", 40.0,
        "retention of created source topics (must cover the 37-day state horizon)", non_negative_float)
    add(p, "--scores", "FRAUDSTREAM_SCORES", True, "publish every score to the scores topic", flag)
    add(p, "--reasons", "FRAUDSTREAM_REASONS", 3,
        "reason codes per flag: the features with the largest positive TreeSHAP contributions (LightGBM's "
        "pred_contrib on the flagged rows only, about 1 ms a flag); 0: flags carry no explanation", non_negative_int)
    add(p, "--reasons-share", "FRAUDSTREAM_REASONS_SHARE", 0.1,
        "at most this share of the scored rows get reason codes, on average: under a flood of flags the "
        "highest-scored of each batch are explained, the others go out without (counted in "
        "fraudstream_flags_unexplained_total)", _share)
    add(p, "--drift", "FRAUDSTREAM_DRIFT", True,
        "drift monitoring: scored rows counted into the bundle's reference bins per stats interval, event-time "
        "hour and day; PSI and alert rate in latency-stats and /metrics (a bundle without a monitoring block: off, "
        "logged); --drift false: off", flag, nargs="?", const=True)
    add(p, "--batch-size", "FRAUDSTREAM_BATCH_SIZE", "auto",
        f"maximum records per inference batch; auto: {CPU_BATCH_SIZE} on the CPU, {GPU_BATCH_SIZE} with a CUDA or "
        f"TensorRT provider", batch_size)
    add(p, "--max-wait-ms", "FRAUDSTREAM_MAX_WAIT_MS", 5.0, "maximum wait to fill a batch", non_negative_float)
    add(p, "--provider", "FRAUDSTREAM_PROVIDER", "auto", f"execution provider: {' | '.join(PROVIDERS)}")
    add(p, "--graph", "FRAUDSTREAM_GRAPH", "auto",
        f"which of the bundle's graphs to run: {' | '.join(GRAPHS)}; auto: the tensorized graph when the provider "
        f"in use is CUDA or TensorRT, the tree graph on the CPU")
    add(p, "--threads", "FRAUDSTREAM_THREADS", 1, "ONNX Runtime intra-op threads", positive_int)
    add(p, "--inter-threads", "FRAUDSTREAM_INTER_THREADS", 1, "ONNX Runtime inter-op threads", positive_int)
    add(p, "--stats-interval", "FRAUDSTREAM_STATS_INTERVAL_S", 5.0, "seconds between latency-stats messages",
        non_negative_float)
    add(p, "--worker-id", "FRAUDSTREAM_WORKER_ID", f"{socket.gethostname()}-{os.getpid()}", "worker id in stats",
        shown="<hostname>-<pid>")
    add(p, "--group-id", "FRAUDSTREAM_GROUP_ID", "fraudstream-worker", "consumer group of the workers")
    add(p, "--auto-offset-reset", "FRAUDSTREAM_AUTO_OFFSET_RESET", "earliest",
        "where a new group starts: earliest | latest")
    add(p, "--lateness-ms", "FRAUDSTREAM_LATENESS_MS", 600_000,
        "allowed event-time lateness; later transactions go to the dead-letter topic", int)
    add(p, "--label-lateness-ms", "FRAUDSTREAM_LABEL_LATENESS_MS", 600_000,
        "how long after its reported_at a label may still arrive and count from its own report slot (a later one "
        "counts from the next open slot, and is counted in labels_late_restamped); with --lateness-ms and --idle-ms "
        "it must stay "
        "below the one-hour margin of the label cut-off, so that no day waits at midnight", int)
    add(p, "--max-future-ms", "FRAUDSTREAM_MAX_FUTURE_MS", 3_600_000,
        "event time allowed ahead of the record's Kafka timestamp", int)
    add(p, "--terminal-wait-s", "FRAUDSTREAM_TERMINAL_WAIT_S", 900.0,
        "how long a transaction waits for the terminal day buckets it needs to be final before it is dead-lettered "
        "(in live time they are final an hour before its day begins; a wait means a transactions or labels partition "
        "is behind by more than that); keep it above --lateness-ms", non_negative_float)
    add(p, "--idle-ms", "FRAUDSTREAM_IDLE_MS", 1000,
        "a caught-up transactions or labels partition without a record this long is idle: its days are closed "
        "up to the other partitions' (so it does not hold back finality)", int)
    add(p, "--retries", "FRAUDSTREAM_RETRIES", 3, "scoring retries before a batch is dead-lettered", int)
    add(p, "--retry-backoff-ms", "FRAUDSTREAM_RETRY_BACKOFF_MS", 200, "first retry backoff (doubles)", int)
    add(p, "--data-dir", "FRAUDSTREAM_DATA_DIR", Path(".state/worker"), "Faust's local data directory", Path)
    add(p, "--commit-interval-ms", "FRAUDSTREAM_COMMIT_INTERVAL_MS", None,
        "how often acknowledged offsets are committed (also at a rebalance and at stop): a kill -9 re-scores at "
        "most this much more; a commit per batch costs a broker round trip each; exactly-once: how often each "
        "partition's transaction commits, so how late read_committed consumers see the outputs", int,
        shown="1000; 100 with --guarantee exactly-once")
    add(p, "--latency-target-ms", "FRAUDSTREAM_LATENCY_TARGET_MS", 0.0,
        "adaptive batching: the batch size (up to --batch-size) and the wait to fill it are chosen so that a "
        "transaction's time in the worker stays within this target at the offered load; 0: fixed batches of "
        "--batch-size, each fetch waiting at most --max-wait-ms", non_negative_float)
    add(p, "--session-timeout-s", "FRAUDSTREAM_SESSION_TIMEOUT_S", 10.0,
        "consumer-group session timeout: how long a dead worker's partitions wait before moving", non_negative_float)
    add(p, "--metrics-host", "FRAUDSTREAM_METRICS_HOST", "0.0.0.0",
        "address of the health/metrics HTTP server (/healthz, /readyz, /metrics)")
    add(p, "--metrics-port", "FRAUDSTREAM_METRICS_PORT", 9400,
        "port of the health/metrics HTTP server; 0 disables it (give each worker on one host its own)", port)
    add(p, "--watchdog-interval-s", "FRAUDSTREAM_WATCHDOG_INTERVAL_S", 5.0,
        "seconds between the stall watchdog's looks at each partition's end offset and processed position",
        positive_float)
    add(p, "--stall-after-s", "FRAUDSTREAM_STALL_AFTER_S", 30.0,
        "a partition with lag whose processed position has not moved this long is stalled (not ready, not live); "
        "a bounded wait for terminal finality is not a stall: its clock starts when --terminal-wait-s has passed",
        positive_float)
    add(p, "--drain-timeout-s", "FRAUDSTREAM_DRAIN_TIMEOUT_S", 10.0,
        "after SIGTERM, how long the batch in flight may keep retrying its outputs; then the worker stops "
        "without committing past them (exit 1; they are processed again after the restart)", positive_float)
    return p


def port(value: str) -> int:
    n = int(value)
    if not 0 <= n <= 65535:
        raise ValueError(f"must be a TCP port 0..65535, got {n}")
    return n


def positive_float(value: str) -> float:
    x = float(value)
    if not x > 0 or x == float("inf"):
        raise ValueError(f"must be a positive number, got {value}")
    return x


def _optional_path(value: str) -> Path | None:
    return Path(value) if value.strip() else None  # an empty env variable: unset


def _share(value: str) -> float:
    x = float(value)
    if not 0 < x <= 1:
        raise ValueError(f"must be a share in (0, 1], got {value}")
    return x


def batch_size(value: str) -> int:
    """``auto`` (0) or a positive number of records."""
    return 0 if value.strip().lower() == "auto" else positive_int(value)


def _check_lateness(lateness_ms: int, label_lateness_ms: int, idle_ms: int) -> None:
    """The defaults' promise — no transaction waits at a UTC midnight — holds only if a day's label cut-off
    (LABEL_CUTOFF_MARGIN_MS before it) closes before the day begins, even with a quiet label feed."""
    budget = lateness_ms + label_lateness_ms + idle_ms
    if budget >= LABEL_CUTOFF_MARGIN_MS:
        raise ConfigError(
            f"--lateness-ms {lateness_ms} + --label-lateness-ms {label_lateness_ms} + --idle-ms {idle_ms} = "
            f"{budget} ms reaches the label cut-off margin ({LABEL_CUTOFF_MARGIN_MS} ms before each UTC midnight): "
            f"every day's first transactions would wait for labels; lower them so that they sum to less")


def parse(argv: list[str] | None = None) -> Settings:
    """Parse flags and env into ``Settings``; a bad value raises ``ConfigError`` naming the fix."""
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            raise ConfigError("invalid command line (see the message above and --help)") from exc
        raise
    if a.provider not in PROVIDERS:
        raise ConfigError(f"--provider {a.provider!r}: choose one of {', '.join(PROVIDERS)} (env FRAUDSTREAM_PROVIDER)")
    if a.graph not in GRAPHS:
        raise ConfigError(f"--graph {a.graph!r}: choose one of {', '.join(GRAPHS)} (env FRAUDSTREAM_GRAPH)")
    if a.guarantee not in GUARANTEES:
        raise ConfigError(f"--guarantee {a.guarantee!r}: choose one of {', '.join(GUARANTEES)} "
                          "(env FRAUDSTREAM_GUARANTEE)")
    if a.commit_interval_ms is None:  # exactly-once: outputs are visible only at the commit (BENCHMARKS.md)
        a.commit_interval_ms = 100 if a.guarantee == "exactly-once" else 1000
    if a.commit_interval_ms <= 0:
        raise ConfigError(f"--commit-interval-ms {a.commit_interval_ms}: must be > 0 "
                          "(env FRAUDSTREAM_COMMIT_INTERVAL_MS)")
    if a.auto_offset_reset not in OFFSET_RESETS:
        raise ConfigError(f"--auto-offset-reset {a.auto_offset_reset!r}: choose earliest or latest")
    if a.lateness_ms < 0 or a.label_lateness_ms < 0 or a.max_future_ms < 0 or a.retries < 0 or a.idle_ms <= 0:
        raise ConfigError("--lateness-ms, --label-lateness-ms, --max-future-ms and --retries must be >= 0, "
                          "--idle-ms > 0")
    _check_lateness(a.lateness_ms, a.label_lateness_ms, a.idle_ms)
    if a.retention_days < 38:
        raise ConfigError(f"--retention-days {a.retention_days} does not cover the 37-day state horizon (use >= 38)")
    key = os.environ.get("FRAUDSTREAM_BUNDLE_KEY") or None
    if a.require_signature and not key:
        raise ConfigError("--require-signature needs the signing key in env FRAUDSTREAM_BUNDLE_KEY")
    topics = Topics(**{name: getattr(a, f"topic_{name}") for name in Topics.__dataclass_fields__})
    return Settings(
        bootstrap=a.bootstrap, bundle=a.bundle, shadow_bundle=a.shadow_bundle, bundle_key=key.encode() if key else None,
        require_signature=a.require_signature, topics=topics, partitions=a.partitions,
        retention_days=a.retention_days, scores_enabled=a.scores, batch_size=a.batch_size or CPU_BATCH_SIZE,
        max_wait_ms=a.max_wait_ms, provider=a.provider, intra_op_threads=a.threads,
        inter_op_threads=a.inter_threads, stats_interval_s=a.stats_interval, worker_id=a.worker_id,
        group_id=a.group_id, auto_offset_reset=a.auto_offset_reset, lateness_ms=a.lateness_ms,
        label_lateness_ms=a.label_lateness_ms,
        max_future_ms=a.max_future_ms, terminal_wait_s=a.terminal_wait_s, idle_ms=a.idle_ms,
        retries=a.retries, retry_backoff_ms=a.retry_backoff_ms, data_dir=a.data_dir,
        session_timeout_s=a.session_timeout_s, auth=KafkaAuth.from_env(),
        commit_interval_ms=a.commit_interval_ms, replication_factor=a.replication_factor,
        exactly_once=a.guarantee == "exactly-once", latency_target_ms=a.latency_target_ms,
        metrics_host=a.metrics_host, metrics_port=a.metrics_port, watchdog_interval_s=a.watchdog_interval_s,
        stall_after_s=a.stall_after_s, drain_timeout_s=a.drain_timeout_s, reasons=a.reasons,
        reasons_share=a.reasons_share, graph=a.graph,
        batch_size_auto=a.batch_size == 0,
        drift=a.drift,
        test_hooks=os.environ.get("FRAUDSTREAM_TEST_HOOKS", "") == "1",
    )
