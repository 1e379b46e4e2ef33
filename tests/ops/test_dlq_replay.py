"""``python -m ops.dlq replay`` on the real broker: dry run sends nothing; a replay re-drives the
original bytes to the source topic, filtered by reason, once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.integration


def _records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000)
    out = [(r.key, r.value, dict(r.headers or [])) for r in c]
    c.close()
    return out


def _replay(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.dlq", "replay", "--bootstrap", bootstrap, "--idle-ms", "2000",
                           *args], capture_output=True, text=True, timeout=120, check=False)


def test_dry_run_then_filtered_replay_once(kafka_bootstrap: str, new_topic: Callable[..., str],
                                           new_group: Callable[[], str]) -> None:
    source, dlq, group = new_topic(), new_topic(), new_group()
    p = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i, reason in enumerate([b"bad_json", b"terminal_state_not_final", b"terminal_state_not_final"]):
        p.send(dlq, key=b"c%d" % i, value=b"original-%d" % i, headers=[
            ("dlq.reason", reason), ("dlq.source.topic", source.encode()), ("dlq.source.partition", b"0"),
            ("dlq.source.offset", b"%d" % i)])
    p.flush()
    p.close()
    dry = _replay(kafka_bootstrap, "--dlq-topic", dlq, "--group", group, "--dry-run", "true")
    assert dry.returncode == 0 and "would replay 3 records" in dry.stdout, dry.stdout + dry.stderr
    assert _records(kafka_bootstrap, source) == []
    done = _replay(kafka_bootstrap, "--dlq-topic", dlq, "--group", group, "--reason", "terminal_state")
    assert done.returncode == 0 and "replayed 2 records; skipped 1" in done.stdout, done.stdout + done.stderr
    got = _records(kafka_bootstrap, source)
    assert [(k, v) for k, v, _ in got] == [(b"c1", b"original-1"), (b"c2", b"original-2")]
    assert got[0][2]["dlq.replayed-from"] == f"{dlq}/0/1".encode()
    again = _replay(kafka_bootstrap, "--dlq-topic", dlq, "--group", group, "--reason", "terminal_state")
    assert "replayed 0 records" in again.stdout
    assert len(_records(kafka_bootstrap, source)) == 2
