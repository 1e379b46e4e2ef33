"""The launcher fails with a message that says what to fix (no broker needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ops.kafka import BrokerError, LocalBroker
from ops.kafka.launcher import new_cluster_id, server_properties


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=rf"port {port} .* is taken.*--port 0"):
            LocalBroker(tmp_path).start(port=port)


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerError, match="no Java found"):
        LocalBroker(tmp_path / "k").start(port=0)


def test_bad_kafka_home_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(BrokerError, match=r"KAFKA_HOME=.* has no libs"):
        LocalBroker(tmp_path / "k").start(port=0)


def test_broker_that_exits_reports_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Kafka home whose "broker" is a jar-less classpath: java exits at once with an error.
    libs = tmp_path / "kafka" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-0.jar").write_bytes(b"not a jar")
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path / "kafka"))
    with pytest.raises(BrokerError, match=r"(formatting|exited)"):
        LocalBroker(tmp_path / "k").start(port=0, timeout_s=20)


def test_cli_status_of_nothing_is_non_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    done = subprocess.run([sys.executable, "-m", "ops.kafka", "status", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 3 and "not running" in done.stdout


def test_server_properties_are_single_node_kraft(tmp_path: Path) -> None:
    text = server_properties(tmp_path, 1234, 1235, {"num.partitions": "3"})
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:1235"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    assert props["num.partitions"] == "3"
    ids = [new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
