"""Broker faults on a three-node KRaft cluster (``ops.kafka.cluster.LocalCluster``, started once for this
module on free ports) while a worker scores a paced stream (the feeder of ``ops.chaos.cluster``: each
second's labels, then its transactions):

- the broker leading most of the worker's partitions killed with SIGKILL under exactly-once: every
  transaction committed once (read_committed), with its offline score, each flag once, no dead letter;
- a broker frozen with SIGSTOP for 40 s, past the worker's 30 s producer request timeout, under
  at-least-once: nothing lost, every score (duplicates included) the offline score; once a broker that
  leads some of the worker's partitions but neither coordinates its group nor controls the cluster, once
  the group's coordinator (the worker's next offset commit is often refused, its session expired: it must
  rejoin and re-read from its last commit, never exit);
- the active controller killed with SIGKILL under exactly-once: as for the leader.

The topics are replicated three times with min.insync.replicas 2 (the worker's ``--replication-factor``
auto), so one broker down never stops the outputs. Every node stopped is started again (or resumed)
before the test ends, so each test starts from a healthy cluster; the worker is never restarted.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from ops.chaos.cluster import Feeder, busiest, group_coordinator, new_controller, partitions, wait_in_sync
from ops.kafka.cluster import LocalCluster
from ops.kafka.launcher import process_state
from schemas.bundle import Bundle
from tests.integration.harness import Run, expected_scores, output_count, stop
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration

EXACTLY_ONCE = ["--guarantee", "exactly-once", "--commit-interval-ms", "300"]
PREFIX = 6000          # transactions of the history each test streams (of ~12.6 k)
NAMES = ("transactions", "labels", "flags", "scores", "stats", "dlq", "terminal_days", "shadow_scores")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster3"))
    t0 = time.monotonic()
    c.start(port=0)
    print(f"3-node cluster up in {time.monotonic() - t0:.1f}s")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def healthy(cluster: LocalCluster) -> Iterator[None]:
    """Every node runs and answers before a test; after it, a node left stopped or frozen is brought back."""
    yield
    for node, info in cluster.nodes.items():
        if not info.pid:
            cluster.start_node(node)
        elif process_state(info.pid) == "T":
            cluster.resume(node)


@pytest.fixture(scope="module")
def expected(history: tuple[History, Labels], bundle: Bundle) -> dict[str, float]:
    h, lab = history
    return expected_scores(h, lab, bundle)


@pytest.fixture
def crun(cluster: LocalCluster, bundle: Bundle, tmp_path: Path) -> Run:
    info = cluster.running()
    assert info is not None
    tag = uuid.uuid4().hex[:8]
    return Run(info.bootstrap, {n: f"{n}-{tag}" for n in NAMES}, f"g-{tag}", bundle, tmp_path)


def _wait_log(run: Run, worker: str, text: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in run.log(worker):
        assert time.monotonic() < deadline, f"{worker}: no {text!r}:\n{run.log(worker)[-3000:]}"
        time.sleep(0.2)


def _start(run: Run, worker: str = "w1") -> subprocess.Popen[bytes]:
    proc = run.start(worker)
    _wait_log(run, worker, "transactions partitions assigned: [0, 1, 2, 3]")
    return proc


def _committed(run: Run, topic: str) -> list[dict[str, object]]:
    """Every committed record of an output topic (read_committed, up to its last stable offset)."""
    consumer = KafkaConsumer(bootstrap_servers=run.bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", client_id="test-cluster-faults")
    try:
        parts = consumer.partitions_for_topic(run.topics[topic]) or set()
        tps = [TopicPartition(run.topics[topic], p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic}: not read to its end in 60 s"
            for records in consumer.poll(timeout_ms=500).values():
                out += [orjson.loads(r.value) for r in records]
        return out
    finally:
        consumer.close()


def _wait_scored(run: Run, n: int, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    """Until ``n`` distinct transactions are scored and committed (the worker must stay up throughout)."""
    consumer = KafkaConsumer(run.topics["scores"], bootstrap_servers=run.bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             isolation_level="read_committed", request_timeout_ms=5000)
    ids: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(ids) < n:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}:\n{run.log('w1')[-3000:]}"
            assert time.monotonic() < deadline, f"{len(ids)} of {n} scored in {timeout_s}s:\n{run.log('w1')[-3000:]}"
            for records in consumer.poll(timeout_ms=500).values():
                ids.update(str(orjson.loads(r.value)["tx_id"]) for r in records)
    finally:
        consumer.close()


def _check(run: Run, h: History, expected: dict[str, float], n: int, *, once: bool) -> int:
    """The first ``n`` transactions: none lost, every committed score the offline one; ``once``: none twice and
    each flag once. Returns the duplicated scores."""
    ids = [str(t) for t in h.tx_id[:n].tolist()]
    scores = _committed(run, "scores")
    counts = Counter(str(s["tx_id"]) for s in scores)
    lost = set(ids) - set(counts)
    assert not lost, f"{len(lost)} transactions lost, e.g. {sorted(lost)[:3]}"
    assert set(counts) == set(ids), f"scored and never produced: {sorted(set(counts) - set(ids))[:3]}"
    worst = max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores)  # type: ignore[arg-type]
    assert worst <= 1e-5, f"a committed score differs from the offline one by {worst}"
    repeated = {tx: k for tx, k in counts.items() if k > 1}
    flags = Counter(str(f["tx_id"]) for f in _committed(run, "flags"))
    assert set(flags) == {tx for tx in ids if expected[tx] >= run.bundle.threshold}
    assert not _committed(run, "dlq"), "dead letters"
    if once:
        assert not repeated, f"{len(repeated)} transactions scored twice, e.g. {list(repeated.items())[:3]}"
        assert max(flags.values(), default=1) == 1, "a flag committed twice"
    return len(scores) - len(counts)


def _restart_later(cluster: LocalCluster, node: int, after_s: float) -> threading.Thread:
    def again() -> None:
        time.sleep(after_s)
        cluster.start_node(node, timeout_s=180)

    t = threading.Thread(target=again, daemon=True)
    t.start()
    return t


def _kill_under_load(cluster: LocalCluster, crun: Run, history: tuple[History, Labels], expected: dict[str, float],
                     pick: str) -> None:
    h, lab = history
    crun.extra = EXACTLY_ONCE
    w1 = _start(crun)
    feeder = Feeder(crun.bootstrap, h, lab, [(crun.topics["transactions"], crun.topics["labels"])], rate=300,
                    stop=PREFIX)
    feeder.start()
    restart = None
    try:
        deadline = time.monotonic() + 60
        while feeder.produced < PREFIX // 3 or output_count(crun) == 0:  # mid-stream, transactions open
            assert time.monotonic() < deadline and feeder.is_alive(), "no load"
            time.sleep(0.1)
        topics = [crun.topics[t] for t in ("transactions", "scores", "flags")]
        if pick == "controller":
            victim = cluster.controller()
        else:
            victim, leads = busiest(cluster, topics)
            assert leads >= 1
        cluster.kill(victim, signal.SIGKILL)
        t_kill, at = time.monotonic(), feeder.produced
        restart = _restart_later(cluster, victim, 5)
        if pick == "controller":
            new, took = new_controller(cluster, victim)
            assert new in (1, 2, 3), f"no controller elected in 60 s after node {victim} died"
            print(f"node {new} the controller {took:.1f}s after node {victim} died")
        _wait_scored(crun, at, w1)
        print(f"kill -9 of node {victim} ({pick}) at {at} produced: those committed "
              f"{time.monotonic() - t_kill:.1f}s later")
        feeder.join(timeout=120)
        assert feeder.error is None and feeder.produced == PREFIX and feeder.resent == 0
        _wait_scored(crun, PREFIX, w1)
        restart.join(timeout=200)
        assert not restart.is_alive()
        print(f"node {victim} back in every ISR {wait_in_sync(cluster, topics, victim):.1f}s after it answered")
    finally:
        feeder.halt.set()
        if restart is not None:
            restart.join(timeout=200)
        code = stop(w1)
    assert code == 0, crun.log("w1")[-3000:]
    _check(crun, h, expected, PREFIX, once=True)


def test_leader_kill_9_under_load_exactly_once(cluster: LocalCluster, crun: Run, history: tuple[History, Labels],
                                               expected: dict[str, float]) -> None:
    _kill_under_load(cluster, crun, history, expected, "leader")


def _freeze(cluster: LocalCluster, crun: Run, history: tuple[History, Labels], expected: dict[str, float],
            coordinator: bool) -> None:
    """At-least-once; a broker leading some of the worker's partitions SIGSTOPped for 40 s under load: the worker's
    group coordinator (``coordinator``), else a broker that is neither it nor the active controller."""
    h, lab = history
    w1 = _start(crun)
    feeder = Feeder(crun.bootstrap, h, lab, [(crun.topics["transactions"], crun.topics["labels"])], rate=100,
                    stop=PREFIX)
    feeder.start()
    topics = [crun.topics[t] for t in ("transactions", "scores", "flags")]
    victim = 0
    try:
        deadline = time.monotonic() + 60
        while output_count(crun) == 0 or feeder.produced < 800:
            assert time.monotonic() < deadline and feeder.is_alive(), "no load"
            time.sleep(0.1)
        found = group_coordinator(cluster, crun.group)
        assert f"Discovered coordinator {found} for group {crun.group} " in crun.log("w1"), "coordinator misplaced"
        if coordinator:
            victim = found
        else:
            victim, _ = busiest(cluster, topics, exclude=[cluster.controller(), found])
        leads = sum(1 for leader, _ in partitions(cluster, topics).values() if leader == victim)
        assert coordinator or leads >= 1, f"node {victim} leads none of the worker's partitions"
        cluster.pause(victim)
        t0, at = time.monotonic(), feeder.produced
        time.sleep(40)   # past the producers' 30 s request timeout and the group's session timeout; load flowing
        assert w1.poll() is None, f"the worker exited while node {victim} was frozen:\n{crun.log('w1')[-3000:]}"
        cluster.resume(victim)
        _wait_scored(crun, at, w1)
        print(f"SIGSTOP of node {victim} ({leads} leaders{', the group coordinator' if coordinator else ''}) at {at} "
              f"produced: those scored {time.monotonic() - t0:.1f}s after the freeze")
        feeder.join(timeout=150)
        assert feeder.error is None and feeder.produced == PREFIX, feeder.error
        _wait_scored(crun, PREFIX, w1)
        print(f"node {victim} back in every ISR {wait_in_sync(cluster, topics, victim):.1f}s after SIGCONT")
    finally:
        feeder.halt.set()
        if victim:
            cluster.resume(victim)
        code = stop(w1)
    assert code == 0, crun.log("w1")[-3000:]
    duplicates = _check(crun, h, expected, PREFIX, once=False)
    print(f"frozen broker: {PREFIX} transactions, {duplicates} duplicated scores (at-least-once), "
          f"{feeder.resent} input records sent again")


def test_broker_frozen_past_the_request_timeout(cluster: LocalCluster, crun: Run, history: tuple[History, Labels],
                                               expected: dict[str, float]) -> None:
    _freeze(cluster, crun, history, expected, coordinator=False)


def test_group_coordinator_frozen_past_the_session_timeout(cluster: LocalCluster, crun: Run,
                                                          history: tuple[History, Labels],
                                                          expected: dict[str, float]) -> None:
    """After the freeze the group's new coordinator has expired the worker's session: an offset commit that
    reaches it before a heartbeat does is refused (CommitFailedError). The worker must rejoin and re-read from
    its last commit, not exit."""
    _freeze(cluster, crun, history, expected, coordinator=True)
    assert "the worker stopped" not in crun.log("w1"), crun.log("w1")[-3000:]


def test_controller_kill_9_exactly_once(cluster: LocalCluster, crun: Run, history: tuple[History, Labels],
                                        expected: dict[str, float]) -> None:
    _kill_under_load(cluster, crun, history, expected, "controller")
