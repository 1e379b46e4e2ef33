"""A local KRaft Apache Kafka cluster of three (or more) nodes on 127.0.0.1, from the same jars as the broker.

Each node is a :class:`~ops.kafka.launcher.LocalBroker` in ``<state>/node-<id>`` (its
``server.properties``, ``data/``, ``broker.json`` and ``broker.log``), running as both broker and
controller; the controllers form a static quorum (``controller.quorum.voters``) of all nodes. The
internal topics, and topics created without settings, get 3 replicas and need 2 in sync.
``<state>/cluster.json`` marks the directory as a cluster's. A start after a stop reuses the ports,
the data and the cluster id.

Tests drive faults with :meth:`LocalCluster.kill`, :meth:`~LocalCluster.stop_node`,
:meth:`~LocalCluster.start_node`, :meth:`~LocalCluster.pause` and :meth:`~LocalCluster.resume`, and
look at the outcome with :meth:`~LocalCluster.leader_of`, :meth:`~LocalCluster.isr` and
:meth:`~LocalCluster.controller`.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ops.kafka.launcher import (
    DEFAULT_STATE_DIR,
    BrokerError,
    BrokerInfo,
    LocalBroker,
    broker_answers,
    check_ports_free,
    classpath,
    free_port,
    java_binary,
    new_cluster_id,
    pid_alive,
    process_state,
    terminate,
)

CLUSTER_FILE = "cluster.json"
DEFAULT_HEAP = "384m"   # per node: three JVMs share a small machine
REPLICATION = 3


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str
    nodes: dict[int, BrokerInfo]   # node id -> ports and pid (0: not running)

    @property
    def bootstrap(self) -> str:
        return ",".join(self.nodes[i].bootstrap for i in sorted(self.nodes))

    @property
    def voters(self) -> str:
        """``controller.quorum.voters``: every node is a voter."""
        return ",".join(f"{i}@127.0.0.1:{self.nodes[i].controller_port}" for i in sorted(self.nodes))


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    pid: int
    port: int
    alive: bool
    paused: bool
    answers: bool


def cluster_size(state_dir: Path | str) -> int:
    """The node count of the cluster whose state is in ``state_dir``; 0 when it holds none."""
    path = Path(state_dir) / CLUSTER_FILE
    if not path.exists():
        return 0
    return int(json.loads(path.read_text())["size"])


class LocalCluster:
    """``size`` combined broker+controller JVMs whose files live under ``state_dir``."""

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, size: int = 3, heap: str = DEFAULT_HEAP,
                 extra: dict[str, str] | None = None) -> None:
        if size < REPLICATION:
            raise BrokerError(f"a cluster has {REPLICATION} or more nodes (asked for {size}); one broker: --brokers 1")
        self.state = Path(state_dir).resolve()
        self.size = size
        self.extra = dict(extra or {})   # server.properties overrides for every node
        self.file = self.state / CLUSTER_FILE
        self._nodes = {i: LocalBroker(self.state / f"node-{i}", heap=heap, node_id=i) for i in range(1, size + 1)}

    # -- what there is ---------------------------------------------------------------------------

    def info(self) -> ClusterInfo | None:
        """Ports, cluster id and pids as recorded (a pid may be of a process that has since died)."""
        if not self.file.exists():
            return None
        infos = {i: node.info() for i, node in self._nodes.items()}
        nodes = {i: info for i, info in infos.items() if info is not None}
        if len(nodes) != self.size:
            return None
        return ClusterInfo(cluster_id=json.loads(self.file.read_text())["cluster_id"], nodes=nodes)

    @property
    def nodes(self) -> dict[int, BrokerInfo]:
        """Node id -> its ports and pid, the pid 0 for a node that does not run."""
        info = self.info()
        if info is None:
            return {}
        return {i: n if n.pid and pid_alive(n.pid) else replace(n, pid=0) for i, n in info.nodes.items()}

    def running(self) -> ClusterInfo | None:
        """The cluster when at least one of its nodes runs."""
        info = self.info()
        if info is None or not any(n.pid for n in self.nodes.values()):
            return None
        return replace(info, nodes=self.nodes)

    def status(self, timeout_s: float = 5.0) -> list[NodeStatus]:
        out = []
        for i, n in self.nodes.items():
            paused = bool(n.pid) and process_state(n.pid) == "T"
            answers = bool(n.pid) and not paused and broker_answers(n.probe, timeout_s, this_node=True)
            out.append(NodeStatus(node_id=i, pid=n.pid, port=n.port, alive=bool(n.pid), paused=paused,
                                  answers=answers))
        return out

    def properties(self, info: ClusterInfo) -> dict[int, str]:
        """Node id -> the ``server.properties`` text its start writes (no JVM involved)."""
        return {i: node.properties(info.nodes[i], self.extra, voters=info.voters, replication=REPLICATION)
                for i, node in self._nodes.items()}

    def plan(self, port: int = 9092) -> ClusterInfo:
        """The recorded ports and cluster id, else new ones: client ports ``port``, ``port+1``, ... (0: free ports),
        free controller ports."""
        previous = self.info()
        if previous is not None:
            return previous
        taken = {port + k for k in range(self.size)} if port else set()

        def pick() -> int:
            p = free_port()
            while p in taken:
                p = free_port()
            taken.add(p)
            return p

        cluster_id = new_cluster_id()
        nodes = {}
        for i in self._nodes:
            client = port + i - 1 if port else pick()
            nodes[i] = BrokerInfo(port=client, controller_port=pick(), cluster_id=cluster_id, pid=0)
        return ClusterInfo(cluster_id=cluster_id, nodes=nodes)

    # -- the whole cluster -----------------------------------------------------------------------

    def start(self, port: int = 9092, timeout_s: float = 120.0) -> ClusterInfo:
        """Start the nodes that do not run (all of them at first) and wait until every node answers."""
        if (self.state / "broker.json").exists():
            raise BrokerError(f"{self.state} holds a single broker's state: stop it and use another --state-dir")
        recorded = cluster_size(self.state)
        if recorded and recorded != self.size:
            raise BrokerError(f"{self.state} holds a {recorded}-node cluster, not {self.size}: "
                              f"use --brokers {recorded} or another --state-dir")
        info = self.plan(port)
        stopped = [i for i, node in self._nodes.items() if not node.running()]
        # What would fail every node, before anything is recorded or started.
        check_ports_free([p for i in stopped for p in (info.nodes[i].port, info.nodes[i].controller_port)])
        java_binary()
        classpath()
        if not self.file.exists():
            for i, node in self._nodes.items():
                node.record(info.nodes[i])   # so that a start that fails half way keeps one cluster id
            self.file.write_text(json.dumps({"size": self.size, "cluster_id": info.cluster_id}))
        launched: list[int] = []
        current = 0
        try:
            for current in stopped:
                self._launch(current, info)
                launched.append(current)
            deadline = time.monotonic() + timeout_s
            for current, node in self._nodes.items():
                node.wait_ready(self._recorded(current), timeout_s, deadline)
        except BrokerError as exc:
            self._stop([self._nodes[i] for i in launched], grace_s=10)
            raise BrokerError(f"node {current} ({self._nodes[current].state}): {exc}") from exc
        running = self.running()
        assert running is not None
        return running

    def stop(self, grace_s: float = 30.0) -> bool:
        """Stop every node cleanly and at once (a node stopped last alone could not reach a controller quorum
        for its controlled shutdown). True if any was running."""
        return self._stop(list(self._nodes.values()), grace_s)

    # -- one node --------------------------------------------------------------------------------

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to a node's JVM (SIGKILL: an abrupt crash; this waits until it is gone). Its pid."""
        node = self._node(node_id)
        pid = node.send_signal(sig)
        if not pid:
            raise BrokerError(f"node {node_id} does not run")
        if sig == signal.SIGKILL:
            terminate_by = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < terminate_by:
                time.sleep(0.05)
            node.forget_process()
        return pid

    def stop_node(self, node_id: int, grace_s: float = 30.0) -> bool:
        """Stop one node cleanly (SIGTERM: controlled shutdown). True if it was running."""
        return self._node(node_id).stop(grace_s)

    def start_node(self, node_id: int, timeout_s: float = 90.0) -> BrokerInfo:
        """Start one node again on its ports and data, and wait until it answers."""
        node = self._node(node_id)
        info = self.info()
        if info is None:
            raise BrokerError(f"no cluster in {self.state}: start it first")
        if not node.running():
            self._launch(node_id, info)
        try:
            node.wait_ready(self._recorded(node_id), timeout_s)
        except BrokerError as exc:
            raise BrokerError(f"node {node_id} ({node.state}): {exc}") from exc
        return self._recorded(node_id)

    def pause(self, node_id: int) -> None:
        """SIGSTOP a node: its process stays, its sockets stop answering (a hung broker)."""
        if not self._node(node_id).send_signal(signal.SIGSTOP):
            raise BrokerError(f"node {node_id} does not run")

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        if not self._node(node_id).send_signal(signal.SIGCONT):
            raise BrokerError(f"node {node_id} does not run")

    # -- what the cluster says -------------------------------------------------------------------

    def leader_of(self, topic: str, partition: int) -> int:
        """The node that leads ``topic``'s ``partition`` by the metadata a live node serves; -1 if none."""
        return int(self._partition(topic, partition)["leader_id"])

    def isr(self, topic: str, partition: int) -> list[int]:
        """The in-sync replicas of ``topic``'s ``partition``."""
        return sorted(int(n) for n in self._partition(topic, partition)["isr_nodes"])

    def controller(self) -> int:
        """The active controller: the leader of the metadata quorum (DescribeCluster's controller id is a
        random broker in KRaft, not the controller)."""
        with self._admin() as admin:
            quorum = admin.describe_metadata_quorum()
        return int(quorum["topics"][0]["partitions"][0]["leader_id"])

    # -- helpers ---------------------------------------------------------------------------------

    def _node(self, node_id: int) -> LocalBroker:
        if node_id not in self._nodes:
            raise BrokerError(f"no node {node_id}: the nodes are {sorted(self._nodes)}")
        return self._nodes[node_id]

    def _recorded(self, node_id: int) -> BrokerInfo:
        info = self._nodes[node_id].info()
        assert info is not None
        return info

    def _launch(self, node_id: int, info: ClusterInfo) -> None:
        self._nodes[node_id].launch(replace(info.nodes[node_id], pid=0), self.extra, voters=info.voters,
                                    replication=REPLICATION)

    def _stop(self, nodes: list[LocalBroker], grace_s: float) -> bool:
        pids = [info.pid for info in (node.running() for node in nodes) if info]
        terminate(pids, grace_s)
        for node in nodes:
            node.forget_process()
        return bool(pids)

    def _partition(self, topic: str, partition: int) -> dict[str, Any]:
        with self._admin() as admin:
            topics = admin.describe_topics([topic])
        for found in topics:
            for p in found["partitions"]:
                if p["partition_index"] == partition:
                    return dict(p)
        raise BrokerError(f"no partition {topic}[{partition}] in the cluster's metadata")

    @contextmanager
    def _admin(self) -> Iterator[Any]:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        # Only nodes that run and are not paused: a paused one accepts connections but never answers.
        live = [n.bootstrap for n in self.nodes.values() if n.pid and process_state(n.pid) != "T"]
        if not live:
            raise BrokerError(f"no node of the cluster in {self.state} runs")
        try:
            admin = KafkaAdminClient(bootstrap_servers=",".join(live), request_timeout_ms=10_000,
                                     bootstrap_timeout_ms=10_000, client_id="fraudstream-cluster")
        except (KafkaError, OSError, ValueError) as exc:
            raise BrokerError(f"no node of the cluster answers ({exc})") from exc
        try:
            yield admin
        finally:
            admin.close()
