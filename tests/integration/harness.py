"""Shared pieces of the worker integration tests: topics per test, a worker subprocess, outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka import KafkaConsumer

from ops.bench.kafka_io import end_total
from schemas.bundle import Bundle
from schemas.kafka_auth import KafkaAuth
from trainer.export import offline_scores
from trainer.simulate import History, Labels


@dataclass
class Run:
    bootstrap: str
    topics: dict[str, str]
    group: str
    bundle: Bundle
    tmp: Path
    batch_size: int = 500
    metrics_port: int = 0  # 0: no health/metrics server, so that workers on this host never share a port
    extra: list[str] = field(default_factory=list)  # more worker flags
    registry: bool = False  # no --bundle: the registry's champion (its topics in ``extra``)

    def args(self) -> list[str]:
        t = self.topics
        model = [] if self.registry else ["--bundle", str(self.bundle.path)]
        return ["--bootstrap", self.bootstrap, *model, "--group-id", self.group,
                "--topic-transactions", t["transactions"], "--topic-labels", t["labels"],
                "--topic-flags", t["flags"], "--topic-scores", t["scores"], "--topic-stats", t["stats"],
                "--topic-dlq", t["dlq"], "--topic-terminal-days", t["terminal_days"],
                *(["--topic-shadow-scores", t["shadow_scores"]] if "shadow_scores" in t else []), "--partitions", "4",
                "--stats-interval", "1", "--data-dir", str(self.tmp / "faust"), "--batch-size", str(self.batch_size),
                "--terminal-wait-s", "60", "--metrics-port", str(self.metrics_port),
                *self.extra]

    def start(self, worker_id: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{worker_id}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([sys.executable, "-m", "workers", *self.args(), "--worker-id", worker_id],
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def log(self, worker_id: str) -> str:
        return (self.tmp / f"{worker_id}.log").read_text(errors="replace")


def consume_all(bootstrap: str, topic: str, expect: int, timeout_s: float,
                isolation: str = "read_uncommitted") -> list[object]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000, isolation_level=isolation,
                             **KafkaAuth.from_env().kafka_python())
    out: list[object] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(out) < expect:  # poll, not iterate: a busy topic never idles
        for records in consumer.poll(timeout_ms=200, max_records=10_000).values():
            out.extend(records)
    consumer.close()
    return out


def expected_scores(h: History, lab: Labels, bundle: Bundle) -> dict[str, float]:
    """The trainer's offline scores of every transaction, with every label event of ``lab``."""
    return offline_scores(h, lab, bundle.onnx_path)


def wait_for_scores(r: Run, n: int, proc: subprocess.Popen[bytes] | None, timeout_s: float = 180,
                    distinct: bool = False, topic: str = "scores",
                    isolation: str = "read_uncommitted") -> list[dict[str, object]]:
    """Score messages from the start of the topic until ``n`` (distinct tx ids when asked) are in
    (``isolation``: read_committed to see only committed transactions' outputs)."""
    consumer = KafkaConsumer(r.topics[topic], bootstrap_servers=r.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000, isolation_level=isolation,
                             **KafkaAuth.from_env().kafka_python())
    out: list[dict[str, object]] = []
    ids: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (len(ids) if distinct else len(out)) < n:
            for rec in consumer:
                msg = orjson.loads(rec.value)
                msg["_record_ts"] = rec.timestamp
                out.append(msg)
                ids.add(str(msg["tx_id"]))
            assert proc is None or proc.poll() is None, f"the worker exited with {proc.returncode}"
    finally:
        consumer.close()
    return out


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=60)




def output_count(r: Run, topic: str = "scores") -> int:
    """Records on an output topic so far (cheap: end offsets only)."""
    consumer = KafkaConsumer(bootstrap_servers=r.bootstrap, **KafkaAuth.from_env().kafka_python())
    try:
        return end_total(consumer, r.topics[topic])
    finally:
        consumer.close()
