"""Pieces of the monitor's broker tests: topics, the monitor as a subprocess, a paced producer, readers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.kafka_auth import KafkaAuth
from tests.monitor.data import SHADOW

# Records the monitor must dead-letter, with the reason each gets: (topic, key, value, reason).
MALFORMED_SCORES = [(b"tx-bad-1", b"not json", "bad_json"),
                    (b"tx-bad-2", b'{"schema_version":1,"tx_id":"tx-bad-2"}', "missing_field:customer_id"),
                    (b"tx-bad-3", None, "bad_score")]  # None: a valid score but for its value (filled in)
MALFORMED_LABELS = [(b"t1", b"{", "bad_json"), (b"t1", None, "bad_is_fraud"), (b"wrong", None, "key_mismatch")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Monitors:
    """Monitor subprocesses sharing one group and one set of topics."""
    bootstrap: str
    tmp: Path
    bundles: Path
    horizon_days: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    topics: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.tag
        self.topics = {"scores": f"scores-{t}", "shadow_scores": f"shadow-scores-{t}", "labels": f"labels-{t}",
                       "metrics": f"model-metrics-{t}",
                       "dlq": f"model-metrics-{t}.dlq", "lease": f"model-metrics-{t}.lease"}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        port = self.ports.setdefault(name, free_port())
        t = self.topics
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "workers.monitor", "--bootstrap", self.bootstrap, "--topic-scores", t["scores"],
             "--topic-shadow-scores", t["shadow_scores"],
             "--topic-labels", t["labels"], "--topic-metrics", t["metrics"], "--topic-metrics-dlq", t["dlq"],
             "--topic-lease", t["lease"], "--group-id", f"mon-{self.tag}", "--monitor-id", name,
             "--bundles", str(self.bundles), "--horizon-days", str(self.horizon_days), "--idle-ms", "2000",
             "--session-timeout-s", "6", "--metrics-port", str(port), "--data-dir", str(self.tmp / "faust"), *extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def get(self, name: str, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()
        except OSError:
            return 0, ""

    def wait_role(self, name: str, role: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.procs[name].poll() is None, f"monitor {name} exited:\n{self.log(name)[-3000:]}"
            status, body = self.get(name, "/readyz")
            if status == 200 and json.loads(body).get("role") == role:
                return
            time.sleep(0.2)
        raise AssertionError(f"monitor {name} is not {role} after {timeout_s}s:\n{self.log(name)[-3000:]}")

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, **KafkaAuth.from_env().kafka_python())


def publish(prod: KafkaProducer, topics: dict[str, str], events: list[tuple[int, str, dict[str, Any]]],
            rate: float | None = None) -> None:
    """Scores keyed by tx_id (the shadow version's to the shadow topic, as the workers send them), labels by
    terminal_id, in the given order, at ``rate`` records a second."""
    start = time.monotonic()
    for i, (_, kind, msg) in enumerate(events):
        if kind == "score":
            topic = topics["shadow_scores"] if msg["model_version"] == SHADOW else topics["scores"]
            prod.send(topic, key=msg["tx_id"].encode(), value=orjson.dumps(msg))
        else:
            prod.send(topics["labels"], key=msg["terminal_id"].encode(), value=orjson.dumps(msg))
        if rate is not None and i % 50 == 49:
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    prod.flush()


def publish_malformed(prod: KafkaProducer, topics: dict[str, str], score: dict[str, Any],
                      label: dict[str, Any]) -> None:
    for key, value, _ in MALFORMED_SCORES:
        body = value if value is not None else orjson.dumps({**score, "tx_id": key.decode(), "score": 1.5})
        prod.send(topics["scores"], key=key, value=body)
    for key, value, _ in MALFORMED_LABELS:
        body = value if value is not None else orjson.dumps({**label, "is_fraud": 2 if key == b"t1" else 1})
        prod.send(topics["labels"], key=key, value=body)
    prod.flush()


def read_all(bootstrap: str, topic: str, timeout_s: float = 10) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             **KafkaAuth.from_env().kafka_python())
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out += records
        return out
    finally:
        consumer.close()
