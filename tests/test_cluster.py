"""The local three-node cluster (``python -m ops.kafka start --brokers 3``): its properties without a JVM, then a
real cluster that loses a partition leader to kill -9 and keeps every acknowledged record."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from ops.kafka import BrokerError
from ops.kafka.cluster import ClusterInfo, LocalCluster, cluster_size
from ops.kafka.launcher import BrokerInfo, pid_alive


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_properties_of_three_nodes(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    info = cluster.plan(port=19092)
    assert [info.nodes[i].port for i in (1, 2, 3)] == [19092, 19093, 19094]
    ports = [p for n in info.nodes.values() for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6
    assert len({n.cluster_id for n in info.nodes.values()}) == 1
    assert info.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    texts = cluster.properties(info)
    voters = ",".join(f"{i}@127.0.0.1:{info.nodes[i].controller_port}" for i in (1, 2, 3))
    for i, text in texts.items():
        props = _props(text)
        assert props["node.id"] == str(i)
        assert props["process.roles"] == "broker,controller"
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == (f"PLAINTEXT://127.0.0.1:{info.nodes[i].port},"
                                      f"CONTROLLER://127.0.0.1:{info.nodes[i].controller_port}")
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{info.nodes[i].port}"
        assert props["log.dirs"] == str(tmp_path.resolve() / f"node-{i}" / "data")
        for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                    "share.coordinator.state.topic.replication.factor", "default.replication.factor"):
            assert props[key] == "3", key
        for key in ("transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr", "min.insync.replicas"):
            assert props[key] == "2", key


def test_free_ports_and_refusals(tmp_path: Path) -> None:
    info = LocalCluster(tmp_path / "a").plan(port=0)
    assert len({p for n in info.nodes.values() for p in (n.port, n.controller_port)}) == 6
    with pytest.raises(BrokerError, match="3 or more nodes"):
        LocalCluster(tmp_path, size=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=rf"port {port} .* is taken.*--port 0"):
            LocalCluster(tmp_path / "taken").start(port=port)
    assert cluster_size(tmp_path / "taken") == 0   # nothing recorded: a start with --port 0 picks anew
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "broker.json").write_text("{}")
    with pytest.raises(BrokerError, match="single broker"):
        LocalCluster(tmp_path / "single").start(port=0)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    done = subprocess.run([sys.executable, "-m", "ops.kafka", "start", "--brokers", "3", "--sasl-ssl",
                           "--state-dir", str(tmp_path / "b")], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1 and "--sasl-ssl runs one broker only" in done.stderr
    assert cluster_size(tmp_path / "b") == 0


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    return subprocess.run([sys.executable, "-m", "ops.kafka", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, env=env, timeout=180, check=False)


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout_s, f"{what}: not within {timeout_s}s"
        time.sleep(0.5)
    return time.monotonic() - t0


def _produce(producer: KafkaProducer, topic: str, values: range) -> None:
    futures = [producer.send(topic, str(v).encode()) for v in values]
    producer.flush(timeout=100)
    for f in futures:
        f.get(timeout=1)   # raises unless acknowledged by all in-sync replicas


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id="test-cluster-reader")
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                seen += [int(r.value) for r in records]
        return seen
    finally:
        consumer.close()


@pytest.mark.integration
def test_cluster_survives_a_killed_leader(tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    t0 = time.monotonic()
    started = _cli(state, "start", "--brokers", "3", "--port", "0")
    assert started.returncode == 0, started.stderr[-3000:]
    print(f"cluster started in {time.monotonic() - t0:.1f}s")
    bootstrap = started.stdout.strip()
    cluster = LocalCluster(state)
    try:
        info = cluster.running()
        assert isinstance(info, ClusterInfo) and bootstrap == info.bootstrap
        assert len(bootstrap.split(",")) == 3
        assert all(isinstance(n, BrokerInfo) and n.pid for n in cluster.nodes.values())
        status = _cli(state, "status")
        assert status.returncode == 0 and status.stdout.count("answers") == 3, status.stdout
        assert cluster.controller() in (1, 2, 3)

        topic = f"t-{uuid.uuid4().hex[:12]}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-cluster")
        try:
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3,
                                          topic_configs={"min.insync.replicas": "2"})])
        finally:
            admin.close()
        _wait_for("partition 0 led with 3 in sync", lambda: cluster.isr(topic, 0) == [1, 2, 3], 30)

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, client_id="test-cluster")
        try:
            _produce(producer, topic, range(0, 300))
            victim = cluster.leader_of(topic, 0)
            assert victim in (1, 2, 3)
            killed = cluster.kill(victim)
            assert not pid_alive(killed) and cluster.nodes[victim].pid == 0
            t_kill = time.monotonic()
            _produce(producer, topic, range(300, 600))
            print(f"600 acknowledged, the last 300 in {time.monotonic() - t_kill:.1f}s after node {victim} died")
        finally:
            producer.close(timeout=10)

        new_leader = cluster.leader_of(topic, 0)
        assert new_leader in (1, 2, 3) and new_leader != victim
        assert victim not in cluster.isr(topic, 0)
        assert cluster.controller() != victim
        down = _cli(state, "status")
        assert down.returncode != 0 and f"node {victim}:" in down.stdout and "not running" in down.stdout, down.stdout

        seen = _read_all(bootstrap, topic, 3)
        assert len(seen) == 600 and sorted(seen) == list(range(600))

        cluster.start_node(victim)
        took = _wait_for(f"node {victim} back in the ISR", lambda: victim in cluster.isr(topic, 0), 60)
        print(f"node {victim} rejoined the ISR {took:.1f}s after it answered")
        assert _cli(state, "status").returncode == 0

        follower = next(i for i in (1, 2, 3) if i != cluster.controller())
        cluster.pause(follower)
        hung = _cli(state, "status")
        assert hung.returncode == 3 and f"node {follower}: " in hung.stdout and "paused" in hung.stdout, hung.stdout
        assert hung.stdout.count("answers") == 2, hung.stdout
        cluster.resume(follower)
        assert _cli(state, "status").returncode == 0

        pids = [n.pid for n in cluster.nodes.values()]
        stopped = _cli(state, "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not any(pid_alive(p) for p in pids)
        assert _cli(state, "status").returncode == 3
    finally:
        cluster.stop(grace_s=10)
