"""Broker faults on a local three-node KRaft cluster (``python -m ops.chaos --brokers 3``).

One worker per guarantee (``--guarantee at-least-once``, ``exactly-once`` or ``both``: then the two
run side by side on their own topics and groups, and every fault hits both at the same moment)
scores a simulated history that a paced feeder produces (``Feeder``: acks=all, idempotent, each
second's labels before its transactions) while the faults follow one another on the cluster:

- ``leader-kill``: kill -9 of the broker leading the most partitions of the workers' topics
  (transactions, scores, flags) other than the active controller, restarted after ``--down-s``
  (default 20 s);
- ``broker-stop``: the busiest broker other than the controller stopped with SIGTERM (controlled
  shutdown) for 60 s, restarted;
- ``broker-freeze``: the coordinator of the workers' consumer groups (their names are picked so that
  one broker coordinates them all) frozen with SIGSTOP for 40 s, past the workers' 30 s producer
  request timeout and their groups' session timeout, then SIGCONT;
- ``controller-kill``: kill -9 of the active controller (the metadata quorum's leader), restarted.

After each fault the node is back in the in-sync replicas of the workers' topics and the workers
have caught up with the input before ``--settle-s`` of quiet load and the next fault. The outputs
are read as a ``read_committed`` consumer sees them, from the start, the moment each becomes
visible. Per window (before the first fault, then from each fault to the next): transactions
produced (acknowledged by the cluster then), lost (never scored), duplicated (second copies that
became visible then), score mismatches against the offline scores, the worst lag (a second's
transactions acknowledged -> all scored), the recovery (the fault -> the last moment the outputs
were more than ``--late-s`` behind the input; and the same from the node's return), and worker
exits: a worker that exits is a finding, reported with its log's last lines, and started again as a
supervisor would, so that the run goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from ops.kafka.cluster import LocalCluster
from ops.kafka.launcher import process_state
from ops.loadgen.replay import TX, events
from trainer.simulate import History, Labels

CLUSTER_FAULTS = ("leader-kill", "broker-stop", "broker-freeze", "controller-kill")
GUARANTEES = ("at-least-once", "exactly-once")
REQUEST_TIMEOUT_S = 30.0   # the worker's producer request timeout (workers/publish.py)
OFFSETS_PARTITIONS = 8   # offsets.topic.num.partitions of ops.kafka's nodes (launcher.server_properties)
STATS_COUNTS = ("labels_late_restamped", "redelivered", "dead_lettered")
TOPIC_NAMES = ("transactions", "labels", "flags", "scores", "stats", "dlq", "terminal_days", "shadow_scores")


def say(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- what the cluster says ---------------------------------------------------------------------------


def live_bootstrap(cluster: LocalCluster) -> str:
    """The nodes that run and are not frozen (a SIGSTOPped node accepts connections but never answers)."""
    return ",".join(n.bootstrap for n in cluster.nodes.values() if n.pid and process_state(n.pid) != "T")


def partitions(cluster: LocalCluster, topics: Iterable[str]) -> dict[tuple[str, int], tuple[int, list[int]]]:
    """(topic, partition) -> (leader, in-sync replicas), from one metadata request to a live node."""
    admin = KafkaAdminClient(bootstrap_servers=live_bootstrap(cluster), request_timeout_ms=10_000,
                             client_id="fraudstream-chaos")
    try:
        described = admin.describe_topics(list(topics))
    finally:
        admin.close()
    return {(str(t.get("name", t.get("topic"))), int(p["partition_index"])):
            (int(p["leader_id"]), sorted(int(n) for n in p["isr_nodes"]))
            for t in described for p in t["partitions"]}


def busiest(cluster: LocalCluster, topics: Iterable[str], exclude: Iterable[int] = ()) -> tuple[int, int]:
    """The node leading the most partitions of ``topics`` (not one of ``exclude``), and how many it leads."""
    leads = Counter(leader for leader, _ in partitions(cluster, topics).values())
    skip = set(exclude)
    candidates = [i for i in sorted(cluster.nodes) if i not in skip]
    node = max(candidates, key=lambda i: (leads[i], -i))
    return node, leads[node]


def java_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units, 32-bit wrap-around)."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition(group: str, count: int) -> int:
    """A consumer group's ``__consumer_offsets`` partition: ``Utils.abs(group.hashCode()) % count`` as the broker
    computes it (Kafka's ``Utils.abs``: 0 for Integer.MIN_VALUE, not the partitioner's ``& 0x7fffffff``)."""
    h = java_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % count


def group_coordinator(cluster: LocalCluster, group: str) -> int:
    """The broker coordinating a consumer group: the leader of its ``__consumer_offsets`` partition."""
    offsets = partitions(cluster, ["__consumer_offsets"])
    return offsets[("__consumer_offsets", offsets_partition(group, len(offsets)))][0]


def new_controller(cluster: LocalCluster, old: int, timeout_s: float = 60) -> tuple[int, float]:
    """The active controller once it is not ``old`` (killed), and the seconds that took; (-1, NaN) if none
    within the timeout. Right after a kill the metadata may still name the dead node: asked again until not."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            node = cluster.controller()
        except Exception:  # a connection to the dead node, no quorum leader yet: ask again
            node = -1
        if node not in (-1, old):
            return node, time.monotonic() - t0
        time.sleep(0.25)
    return -1, math.nan


def wait_in_sync(cluster: LocalCluster, topics: Iterable[str], node: int, timeout_s: float = 120) -> float:
    """Seconds until ``node`` is in the ISR of every partition of ``topics``; NaN if not within the timeout."""
    names = list(topics)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if all(node in isr for _, isr in partitions(cluster, names).values()):
                return time.monotonic() - t0
        except Exception:  # metadata from a node that is still starting: ask again
            pass
        time.sleep(0.5)
    return math.nan


# -- load and outputs --------------------------------------------------------------------------------


Record = tuple[str, bytes, bytes]


@dataclass
class _Chunk:
    end: int                      # the history index after its last transaction
    outstanding: int = 0          # records sent and not yet acknowledged
    failed: list[Record] = field(default_factory=list)   # refused: to send again
    done_at: float = 0.0          # monotonic time of its last acknowledgement



class Feeder(threading.Thread):
    """Produces transactions ``start:stop`` of a history (and the labels reported meanwhile) at ``rate``
    transactions a second, in chunks of ``chunk_s``, to every (transactions, labels) topic pair of ``targets``
    (kafka-python: acks=all, idempotent): a chunk's labels first, its transactions once they are acknowledged
    (``_acknowledged``). Chunks go out on time whatever the acknowledgements of the earlier ones' transactions
    (a partition whose leader is down holds its own records, not the stream); a record refused after the
    producer's own retries is sent again (``resent``: each may be a duplicate input, which a worker dead-letters
    as ``duplicate_tx_id``). A request timeout of 10 s: the load must get past a frozen leader sooner than the
    worker under test does.

    ``produced``: the transactions acknowledged so far, a prefix of the history (every chunk before it
    acknowledged); ``acked``: (monotonic time of a chunk's last acknowledgement, its end) in order."""

    def __init__(self, bootstrap: str, h: History, lab: Labels, targets: list[tuple[str, str]], rate: float,
                 start: int = 0, stop: int | None = None, chunk_s: float = 1.0) -> None:
        super().__init__(daemon=True, name="chaos-feeder")
        self.bootstrap, self.h, self.lab, self.targets = bootstrap, h, lab, targets
        self.start_at, self.stop_at = start, len(h) if stop is None else min(stop, len(h))
        self.per_chunk = max(1, round(rate * chunk_s))
        self.chunk_s = chunk_s
        self.produced = start
        self.acked: list[tuple[float, int]] = []
        self.resent = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self._lock = threading.Lock()
        self._chunks: deque[_Chunk] = deque()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the caller
            self.error = exc
            say(f"feeder failed: {exc!r}")

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                 linger_ms=5, batch_size=256 * 1024, request_timeout_ms=10_000,
                                 delivery_timeout_ms=120_000, client_id="fraudstream-chaos-feeder")
        t_start = time.monotonic()
        try:
            for k, a in enumerate(range(self.start_at, self.stop_at, self.per_chunk)):
                due = t_start + k * self.chunk_s
                while True:
                    self._settle(producer)
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    if self.halt.wait(min(wait, 0.05)):
                        return
                b = min(a + self.per_chunk, self.stop_at)
                stream = list(events(self.h, self.lab, a, b))
                labels = _Chunk(b)
                self._send(producer, labels, [(lab, e.key, e.value) for e in stream if e.kind != TX
                                              for _, lab in self.targets])
                if not self._acknowledged(producer, labels):
                    return
                chunk = _Chunk(b)
                self._chunks.append(chunk)
                self._send(producer, chunk, [(tx, e.key, e.value) for e in stream if e.kind == TX
                                             for tx, _ in self.targets])
        finally:
            deadline = time.monotonic() + 150   # what was sent: acknowledged (or given up) before the end
            while self._chunks and time.monotonic() < deadline:
                self._settle(producer)
                time.sleep(0.05)
            try:
                producer.close(timeout=10)
            except Exception as exc:  # what it still held is not counted as produced anyway
                say(f"feeder: closing its producer: {exc!r}")

    def _send(self, producer: KafkaProducer, chunk: _Chunk, records: list[Record]) -> None:
        def ok(_: object) -> None:
            with self._lock:
                chunk.outstanding -= 1
                chunk.done_at = time.monotonic()

        def refused(rec: Record) -> Callable[[BaseException], None]:
            def handle(exc: BaseException) -> None:
                with self._lock:
                    chunk.outstanding -= 1
                    chunk.failed.append(rec)
            return handle

        with self._lock:
            chunk.outstanding += len(records)
        for rec in records:
            try:
                f = producer.send(rec[0], key=rec[1], value=rec[2])
            except Exception as exc:  # no metadata for the topic within max_block_ms (its leader down): later
                refused(rec)(exc)
                continue
            f.add_callback(ok)
            f.add_errback(refused(rec))

    def _acknowledged(self, producer: KafkaProducer, labels: _Chunk) -> bool:
        """Wait until a chunk's labels are all acknowledged (sending refused ones again); False if halted.

        Its transactions go out only then. A label must be in the topic before the transactions that follow
        it in event time: a worker closes a quiet labels partition's report slots up to the transactions'
        clock less --label-lateness-ms (10 min of event time), and this replay runs ~3 event hours a second,
        so a label held up a second by a broker fault while transactions flow past it on other brokers would
        be late (restamped to a later slot: a different score), which the same delay in live time is not."""
        while True:
            with self._lock:
                again, labels.failed = labels.failed, []
                done = not labels.outstanding and not again
            if done:
                return True
            if again:
                self.resent += len(again)
                say(f"feeder: {len(again)} labels refused (before transaction {labels.end}): sent again")
                self._send(producer, labels, again)
            self._settle(producer)
            if self.halt.wait(0.005):
                return False

    def _settle(self, producer: KafkaProducer) -> None:
        """Send refused records again; move ``produced`` past the chunks acknowledged in full."""
        for chunk in self._chunks:
            with self._lock:
                again, chunk.failed = chunk.failed, []
            if again:
                self.resent += len(again)
                say(f"feeder: {len(again)} records refused (ending at transaction {chunk.end}): sent again")
                self._send(producer, chunk, again)
        while self._chunks:
            with self._lock:
                head = self._chunks[0]
                if head.outstanding or head.failed:
                    return
            self._chunks.popleft()
            self.produced = head.end
            self.acked.append((head.done_at, head.end))


class Tail(threading.Thread):
    """Reads a topic from its start with ``isolation.level=read_committed``: every record, the moment it
    became visible (monotonic), by tx_id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name=f"tail-{topic}")
        self.bootstrap, self.topic = bootstrap, topic
        self.copies: list[tuple[float, str, float]] = []   # (seen at, tx_id, score)
        self.first: dict[str, float] = {}                  # tx_id -> first seen at
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # A short request timeout: a fetch from a frozen broker gives up in 5 s (kafka-python's default
            # would hold this reader 30 s and blur the recovery times it measures).
            consumer = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=None,
                                     auto_offset_reset="earliest", enable_auto_commit=False,
                                     isolation_level="read_committed", request_timeout_ms=5_000,
                                     client_id=f"fraudstream-chaos-tail-{self.topic}")
            try:
                while not self.halt.is_set():
                    for records in consumer.poll(timeout_ms=200, max_records=10_000).values():
                        now = time.monotonic()
                        for r in records:
                            self.take(now, orjson.loads(r.value))
            finally:
                consumer.close()
        except BaseException as exc:
            self.error = exc
            say(f"reader of {self.topic} failed: {exc!r}")

    def take(self, now: float, m: dict[str, Any]) -> None:
        tx = str(m["tx_id"])
        self.copies.append((now, tx, float(m.get("score", math.nan))))
        self.first.setdefault(tx, now)


class StatsTail(Tail):
    """The worker's stats topic: its counters summed (``labels_late_restamped``: labels that came after their
    report slot closed, and so count from a later one: the one cause of a score unlike the offline one that is
    not a fault of the worker's)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.counts: Counter[str] = Counter()

    def take(self, now: float, m: dict[str, Any]) -> None:
        counts = m.get("counts", m)
        if isinstance(counts, dict):
            self.counts.update({k: int(v) for k, v in counts.items() if k in STATS_COUNTS and v})


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """One guarantee's worker, topics and group, and what a read_committed reader saw of its outputs."""

    guarantee: str
    topics: dict[str, str]
    group: str
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    started: int = 0
    exits: list[tuple[float, int, str]] = field(default_factory=list)   # (monotonic, code, log tail)
    scores: Tail | None = None
    flags: Tail | None = None
    stats: StatsTail | None = None

    @property
    def short(self) -> str:
        return "eos" if self.guarantee == "exactly-once" else "alo"

    def worker_log(self) -> Path:
        return self.log_dir / f"worker-{self.short}-{self.started}.log"


@dataclass
class Fault:
    kind: str
    node: int
    leads: int            # partitions of the workers' topics it led
    t0: float             # monotonic time of the fault
    target: int           # transactions produced (acknowledged) at the fault
    t1: float = math.nan  # the node back (started or resumed)
    target1: int = 0
    in_sync_s: float = math.nan   # from its return until it is in every ISR again
    controller_after: int = -1    # controller-kill: the new controller
    controller_elected_s: float = math.nan
    caught_up: bool = True        # the workers caught up with the input before the next fault
    coordinates: list[str] = field(default_factory=list)   # the workers whose consumer group it coordinated
    was_controller: bool = False


class ClusterChaos:
    def __init__(self, bundle: Path, work: Path, guarantees: list[str], brokers: int = 3,
                 worker_args: list[str] | None = None) -> None:
        self.bundle, self.work = bundle, work
        self.cluster = LocalCluster(work / "kafka", size=brokers)
        self.bootstrap = ""
        # One coordinator for every worker's group (their __consumer_offsets partition alike): a fault on it
        # hits them all, as any other fault does.
        tag = uuid.uuid4().hex[:6]

        groups: list[str] = []
        for g in guarantees:   # a suffix per group (one suffix for all keeps their hashes' difference mod 8)
            group = f"chaos-{g}-{tag}"
            while groups and (offsets_partition(group, OFFSETS_PARTITIONS)
                              != offsets_partition(groups[0], OFFSETS_PARTITIONS)):
                group = f"chaos-{g}-{tag}-{uuid.uuid4().hex[:4]}"
            groups.append(group)
        self.pipelines = [Pipeline(g, {n: f"chaos-{'eos' if g == 'exactly-once' else 'alo'}-{n}-{tag}"
                                       for n in TOPIC_NAMES}, group, work)
                          for g, group in zip(guarantees, groups, strict=True)]
        self.worker_args = worker_args or []
        self.faults: list[Fault] = []

    @property
    def watched_topics(self) -> list[str]:
        return [p.topics[n] for p in self.pipelines for n in ("transactions", "scores", "flags")]

    # workers

    def start_worker(self, p: Pipeline) -> None:
        p.started += 1
        argv = [sys.executable, "-m", "workers", "--bootstrap", self.bootstrap, "--bundle", str(self.bundle),
                "--group-id", p.group, "--worker-id", f"chaos-{p.short}-{p.started}", "--guarantee", p.guarantee,
                "--data-dir", str(self.work / f"faust-{p.short}"), "--terminal-wait-s", "120",
                "--metrics-port", "0", *self.worker_args]
        for name, topic in p.topics.items():
            argv += [f"--topic-{name.replace('_', '-')}", topic]
        log = open(p.worker_log(), "ab")  # noqa: SIM115 - lives as long as the worker
        p.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_assigned(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        for p in self.pipelines:
            while "transactions partitions assigned: [" not in p.worker_log().read_text(errors="replace"):
                if p.proc is not None and p.proc.poll() is not None:
                    raise RuntimeError(f"the {p.guarantee} worker exited with {p.proc.returncode} at start:\n"
                                       + tail_of(p.worker_log()))
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {p.guarantee} worker got no partitions in {timeout_s:.0f}s:\n"
                                       + tail_of(p.worker_log()))
                time.sleep(0.3)

    def watch(self) -> None:
        """A worker that exited is a finding: recorded with its log's tail, and started again."""
        for p in self.pipelines:
            if p.proc is not None and p.proc.poll() is not None:
                tail = tail_of(p.worker_log())
                p.exits.append((time.monotonic(), p.proc.returncode, tail))
                say(f"FINDING: the {p.guarantee} worker exited with {p.proc.returncode}; its log ends:\n{tail}")
                self.start_worker(p)

    def nap(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.watch()
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    # faults

    def during(self, what: Callable[[], object]) -> None:
        """Run ``what`` (a node's start, a wait) in a thread, watching the workers meanwhile; raise what it raised."""
        failure: list[BaseException] = []

        def call() -> None:
            try:
                what()
            except BaseException as exc:
                failure.append(exc)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        while t.is_alive():
            self.nap(0.5)
        if failure:
            raise failure[0]

    def wait_caught_up(self, produced: int, tx_ids: list[str], timeout_s: float) -> bool:
        """Until every pipeline's reader saw the first ``produced`` transactions scored; False (a finding) if not."""
        deadline = time.monotonic() + timeout_s
        for p in self.pipelines:
            assert p.scores is not None
            while any(tx not in p.scores.first for tx in tx_ids[:produced]):
                if time.monotonic() > deadline:
                    missing = sum(1 for tx in tx_ids[:produced] if tx not in p.scores.first)
                    say(f"FINDING: the {p.guarantee} worker has not caught up {timeout_s:.0f}s on: {missing} of the "
                        f"first {produced} transactions not scored; its log ends:\n{tail_of(p.worker_log())}")
                    return False
                self.nap(0.5)
        return True

    def inject(self, kind: str, down_s: float, settle_s: float, feeder: Feeder, tx_ids: list[str],
               catch_up_s: float = 240) -> Fault:
        """The fault, the node back after ``down_s``, back in every ISR, the workers caught up with the input,
        then ``settle_s`` of load: the next fault starts from a healthy cluster and workers."""
        topics = self.watched_topics
        if kind == "controller-kill":
            node = self.cluster.controller()
            leads = Counter(lead for lead, _ in partitions(self.cluster, topics).values())[node]
        elif kind == "broker-freeze":
            # The workers' group coordinator: a frozen broker is always some groups' coordinator, and that is the
            # harder case (heartbeats and offset commits hang with it, besides the produce requests).
            node = group_coordinator(self.cluster, self.pipelines[0].group)
            leads = Counter(lead for lead, _ in partitions(self.cluster, topics).values())[node]
        else:  # not the controller: its loss is a fault of its own (controller-kill)
            node, leads = busiest(self.cluster, topics, exclude=[self.cluster.controller()])
        f = Fault(kind, node, leads, time.monotonic(), feeder.produced)
        f.coordinates = [p.short for p in self.pipelines if group_coordinator(self.cluster, p.group) == node]
        f.was_controller = kind == "controller-kill" or self.cluster.controller() == node
        say(f"{kind}: node {node} (leads {leads} of the workers' partitions, coordinates the groups of "
            f"{', '.join(f.coordinates) or 'neither worker'}), {f.target} transactions produced")
        if kind in ("leader-kill", "controller-kill"):
            self.cluster.kill(node, signal.SIGKILL)
        elif kind == "broker-stop":
            self.during(lambda: self.cluster.stop_node(node, grace_s=60))
        elif kind == "broker-freeze":
            self.cluster.pause(node)
        else:
            raise ValueError(kind)
        if kind == "controller-kill":
            def elected() -> None:
                f.controller_after, f.controller_elected_s = new_controller(self.cluster, node, down_s)

            self.during(elected)
            say(f"{kind}: node {f.controller_after} is the controller {f.controller_elected_s:.1f}s after the kill")
        self.nap(max(0.0, f.t0 + down_s - time.monotonic()))
        if kind == "broker-freeze":
            self.cluster.resume(node)
        else:
            self.during(lambda: self.cluster.start_node(node, timeout_s=180))
        f.t1, f.target1 = time.monotonic(), feeder.produced

        def in_sync() -> None:
            f.in_sync_s = wait_in_sync(self.cluster, topics, node)

        self.during(in_sync)
        say(f"{kind}: node {node} back {f.t1 - f.t0:.1f}s after the fault, in every ISR {f.in_sync_s:.1f}s later")
        f.caught_up = self.wait_caught_up(feeder.produced, tx_ids, catch_up_s)
        self.nap(settle_s)
        self.faults.append(f)
        return f


def tail_of(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def count_committed(bootstrap: str, topic: str, timeout_s: float = 8) -> int:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, isolation_level="read_committed",
                             client_id="fraudstream-chaos-count")
    n = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                n += len(records)
    finally:
        consumer.close()
    return n


# -- figures -----------------------------------------------------------------------------------------


@dataclass
class Row:
    guarantee: str
    window: str          # the fault, or "steady" before the first
    node: str
    produced: int
    lost: int
    duplicated: int
    mismatches: int
    worst_lag_s: float   # the slowest chunk of the window: acknowledged -> all of it visible (inf: never)
    recovery_s: float    # the fault -> the last moment the outputs were more than LATE_S behind (0: never)
    after_return_s: float
    in_sync_s: float
    worker_exits: int


@dataclass(frozen=True)
class ChunkSeen:
    acked: float     # its last record acknowledged by the cluster
    visible: float   # its last transaction's score visible to read_committed (inf: some never were)
    start: int
    end: int


def chunks_seen(first: dict[str, float], tx_ids: list[str], acked: list[tuple[float, int]],
                start: int = 0) -> list[ChunkSeen]:
    out = []
    for t, end in acked:
        seen = [first.get(tx, math.inf) for tx in tx_ids[start:end]]
        out.append(ChunkSeen(t, max(seen, default=t), start, end))
        start = end
    return out


def figures(p: Pipeline, faults: list[Fault], tx_ids: list[str], acked: list[tuple[float, int]],
            expected: dict[str, float], late_s: float) -> list[Row]:
    """One row per window: before the first fault ("steady"), then from each fault to the next.

    Transactions produced and lost count by when the cluster acknowledged them; duplicates and mismatches by
    when the copy became visible; the lags of a chunk (a second's transactions) by when it became visible or
    late, whichever came first."""
    assert p.scores is not None
    first, copies = p.scores.first, p.scores.copies
    edges = [-math.inf, *(f.t0 for f in faults), math.inf]

    def window(t: float) -> int:
        return next(i for i in range(len(edges) - 1) if edges[i] <= t < edges[i + 1])

    n = len(edges) - 1
    produced, lost, dup, bad, exits = [0] * n, [0] * n, [0] * n, [0] * n, [0] * n
    chunks = chunks_seen(first, tx_ids, acked)
    for c in chunks:
        w = window(c.acked)
        produced[w] += c.end - c.start
        lost[w] += sum(1 for tx in tx_ids[c.start:c.end] if tx not in first)
    seen: set[str] = set()
    for t, tx, score in copies:
        w = window(t)
        if tx in seen:
            dup[w] += 1
        seen.add(tx)
        if not abs(score - expected.get(tx, math.inf)) <= 1e-5:
            bad[w] += 1
    for t, _, _ in p.exits:
        exits[window(t)] += 1
    # A chunk belongs to the window in which it became visible or late (more than late_s after its
    # acknowledgement), whichever came first: its delay is that window's fault's doing.
    by_window: list[list[ChunkSeen]] = [[] for _ in range(n)]
    for c in chunks:
        by_window[window(min(c.visible, c.acked + late_s))].append(c)
    rows = []
    for i in range(n):
        mine = by_window[i]
        worst = max((c.visible - c.acked for c in mine), default=math.nan)
        if i == 0:
            rows.append(Row(p.guarantee, "steady", "", produced[0], lost[0], dup[0], bad[0], worst, math.nan,
                            math.nan, math.nan, exits[0]))
            continue
        f = faults[i - 1]
        late = [c.visible for c in mine if c.visible - c.acked > late_s]
        end = max(late, default=f.t0)
        role = f"{f.leads} led" + (", group coordinator" if f.coordinates else "") + \
            (", controller" if f.was_controller else "")
        rows.append(Row(p.guarantee, f.kind, f"{f.node} ({role})", produced[i], lost[i], dup[i], bad[i],
                        worst, end - f.t0, max(0.0, end - f.t1), f.in_sync_s, exits[i]))
    return rows


def table(rows: list[Row]) -> str:
    head = ("| guarantee | fault | node (leaders) | produced | lost | duplicated | score mismatches | worst lag s | "
            "recovery s | after the node's return s | node in sync s | worker exits |")
    out = [head, "|" + "---|" * 12]

    def s(x: float) -> str:
        return "-" if math.isnan(x) else "never" if math.isinf(x) else f"{x:.1f}"

    for r in rows:
        out.append(f"| {r.guarantee} | {r.window} | {r.node or '-'} | {r.produced} | {r.lost} | {r.duplicated} | "
                   f"{r.mismatches} | {s(r.worst_lag_s)} | {s(r.recovery_s)} | {s(r.after_return_s)} | "
                   f"{s(r.in_sync_s)} | {r.worker_exits} |")
    return "\n".join(out)


def steady_lag(first: dict[str, float], tx_ids: list[str], acked: list[tuple[float, int]], until: float) -> float:
    """Median seconds from a chunk's acknowledgement to all of it visible, for the chunks before ``until``."""
    lags = sorted(c.visible - c.acked for c in chunks_seen(first, tx_ids, acked) if c.visible < until)
    return lags[len(lags) // 2] if lags else math.nan


# -- command -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, h: History, lab: Labels, expected: dict[str, float]) -> int:
    guarantees = list(GUARANTEES) if args.guarantee == "both" else [args.guarantee]
    faults = [f for f in args.faults.split(",") if f]
    for f in faults:
        if f not in CLUSTER_FAULTS:
            raise SystemExit(f"--faults: {f!r} is not a cluster fault ({', '.join(CLUSTER_FAULTS)})")
    down = {"leader-kill": args.down_s, "controller-kill": args.down_s, "broker-stop": args.stop_s,
            "broker-freeze": args.freeze_s}
    rate = args.rate
    work = Path(tempfile.mkdtemp(prefix="fraudstream-chaos-cluster-"))
    chaos = ClusterChaos(args.bundle, work, guarantees, brokers=args.brokers)
    say(f"up to {len(h)} transactions at {rate:.0f}/s (~{len(h) / rate:.0f}s of load); faults {', '.join(faults)}; "
        f"guarantees {', '.join(guarantees)}; work dir {work}")
    t_start = time.monotonic()
    chaos.bootstrap = chaos.cluster.start(port=0).bootstrap
    say(f"cluster of {args.brokers} up in {time.monotonic() - t_start:.1f}s at {chaos.bootstrap}")
    feeder: Feeder | None = None
    tx_ids = [str(t) for t in h.tx_id.tolist()]
    stops: dict[str, int | None] = {}
    dlq: dict[str, int] = {}
    try:
        for p in chaos.pipelines:
            chaos.start_worker(p)
        chaos.wait_assigned()
        for p in chaos.pipelines:
            p.scores, p.flags = Tail(chaos.bootstrap, p.topics["scores"]), Tail(chaos.bootstrap, p.topics["flags"])
            p.stats = StatsTail(chaos.bootstrap, p.topics["stats"])
            for t in (p.scores, p.flags, p.stats):
                t.start()
        feeder = Feeder(chaos.bootstrap, h, lab, [(p.topics["transactions"], p.topics["labels"])
                                                  for p in chaos.pipelines], rate)
        feeder.start()
        chaos.nap(args.warmup_s)
        for f in faults:
            chaos.inject(f, down[f], args.settle_s, feeder, tx_ids, catch_up_s=args.drain_timeout_s)
        if not feeder.is_alive():
            say("NOTE: the history ran out before the faults ended: the last faults hit less load than the first "
                "(larger --customers or --days, or a lower --rate)")
        feeder.halt.set()
        chaos.during(feeder.join)
        say(f"{feeder.produced} transactions produced ({feeder.resent} records sent again)"
            + (f"; the feeder failed: {feeder.error!r}" if feeder.error else ""))
        chaos.wait_caught_up(feeder.produced, tx_ids, args.drain_timeout_s)
        chaos.nap(3)  # late duplicates, if any, land by now
    finally:
        for p in chaos.pipelines:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in chaos.pipelines:
            if p.proc is not None:
                try:
                    stops[p.guarantee] = p.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.proc.kill()
                    stops[p.guarantee] = None
        try:
            dlq = {p.guarantee: count_committed(chaos.bootstrap, p.topics["dlq"]) for p in chaos.pipelines}
        finally:
            if feeder is not None:
                feeder.halt.set()
            for p in chaos.pipelines:
                for reader in (p.scores, p.flags, p.stats):
                    if reader is not None:
                        reader.halt.set()
                        reader.join(timeout=10)
            chaos.cluster.stop()
    total = time.monotonic() - t_start
    return report(args, chaos, feeder, h, tx_ids, expected, stops, dlq, total, t_start, work)


def report(args: argparse.Namespace, chaos: ClusterChaos, feeder: Feeder, h: History, tx_ids: list[str],
           expected: dict[str, float], stops: dict[str, int | None], dlq: dict[str, int], total: float,
           t_start: float, work: Path) -> int:
    code = 0
    rows: list[Row] = []
    for p in chaos.pipelines:
        rows += figures(p, chaos.faults, tx_ids, feeder.acked, expected, args.late_s)
    print(f"\n{args.brokers}-broker cluster (each node broker and controller), one worker per guarantee on its own "
          f"topics (4 partitions, 3 replicas, min.insync.replicas 2), {feeder.produced} transactions at "
          f"{args.rate:.0f}/s with their labels, {total:.0f}s in all. Outputs read with "
          f"isolation.level=read_committed as they became visible.\n"
          f"worst lag: the slowest chunk of a second's transactions, acknowledged by the cluster -> all scored; "
          f"recovery: the fault -> the last moment the outputs were more than {args.late_s:g}s behind the input "
          f"(0: never); after the node's return: the same from its restart (or SIGCONT).\n")
    print(table(rows))
    print()
    for f in chaos.faults:
        if f.kind == "controller-kill":
            print(f"controller-kill: node {f.node} killed, node {f.controller_after} the controller "
                  f"{f.controller_elected_s:.1f}s later")
        if not f.caught_up:
            code = 1
    for p in chaos.pipelines:
        assert p.scores is not None and p.flags is not None
        flagged = Counter(tx for _, tx, _ in p.flags.copies)
        lost = sum(1 for tx in tx_ids[:feeder.produced] if tx not in p.scores.first)
        dup = len(p.scores.copies) - len(p.scores.first)
        bad = sum(1 for _, tx, s in p.scores.copies if not abs(s - expected.get(tx, math.inf)) <= 1e-5)
        first_fault = chaos.faults[0].t0 if chaos.faults else math.inf
        lag = steady_lag(p.scores.first, tx_ids, feeder.acked, first_fault)
        flag_dups = sum(n - 1 for n in flagged.values())
        counts = p.stats.counts if p.stats is not None else Counter()
        print(f"{p.guarantee}: {lost} lost, {dup} duplicated, {bad} mismatches of {feeder.produced}; flags "
              f"{len(flagged)} ({flag_dups} repeated); dead letters {dlq.get(p.guarantee)}; labels late (restamped) "
              f"{counts['labels_late_restamped']}; redelivered {counts['redelivered']}; lag before the faults "
              f"(median) {lag:.2f}s; worker exits {len(p.exits)}; exit code at the end {stops.get(p.guarantee)}")
        for t, c, tail in p.exits:
            last = [line for line in tail.splitlines() if line.startswith("error:")]
            print(f"  worker exit {t - t_start:.0f}s into the run, code {c}: {last[-1][:300] if last else '?'}")
        if lost or bad or p.exits or (p.guarantee == "exactly-once" and (dup or flag_dups)) \
                or stops.get(p.guarantee) != 0 or dlq.get(p.guarantee):
            code = 1
    if any(math.isinf(r.recovery_s) for r in rows):
        code = 1
    print(f"feeder: {feeder.produced} produced, {feeder.resent} records sent again; work dir {work}")
    if args.json_out:
        result = {}
        for p in chaos.pipelines:
            assert p.scores is not None
            result[p.guarantee] = {
                "lags": [(round(c.acked - t_start, 1), round(c.visible - c.acked, 2))
                         for c in chunks_seen(p.scores.first, tx_ids, feeder.acked)],
                "exits": [(round(t - t_start, 1), c, tail) for t, c, tail in p.exits],
                "exit_code": stops.get(p.guarantee), "dead_letters": dlq.get(p.guarantee),
                "stats": dict(p.stats.counts) if p.stats is not None else {}}
        args.json_out.write_text(json.dumps({
            "brokers": args.brokers, "transactions": feeder.produced, "rate": args.rate, "seconds": total,
            "rows": [r.__dict__ for r in rows], "guarantees": result,
            "faults": [{**f.__dict__, "t0": f.t0 - t_start, "t1": f.t1 - t_start} for f in chaos.faults],
            "work_dir": str(work)}, indent=2, default=str))
    return code


__all__ = ["CLUSTER_FAULTS", "ClusterChaos", "Feeder", "StatsTail", "Tail", "busiest", "group_coordinator",
           "new_controller", "partitions", "run", "wait_in_sync"]
