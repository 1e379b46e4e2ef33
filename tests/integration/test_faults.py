"""Faults on the real broker: a worker killed with SIGKILL, the broker restarted, a rebalance.

After each, every transaction is scored at least once, every score equals the clean offline
score (state recovered, not reset), and duplicates stay within what the commit interval allows.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from ops.kafka import LocalBroker
from ops.loadgen.replay import events, produce
from schemas.bundle import Bundle
from tests.integration.harness import Run, consume_all, expected_scores, output_count, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration


def check_scores(scores: list[dict[str, object]], h: History, lab: Labels, bundle: Bundle) -> int:
    """No transaction lost, no score different from the clean run's; returns the duplicates."""
    expected = expected_scores(h, lab, bundle)
    seen: dict[str, float] = {}
    for s in scores:
        tx, score = str(s["tx_id"]), float(s["score"])  # type: ignore[arg-type]
        assert abs(score - expected[tx]) <= 1e-5, f"{tx}: {score} != clean {expected[tx]}"
        seen[tx] = score
    assert set(seen) == set(h.tx_id.tolist()), f"lost: {len(set(h.tx_id.tolist()) - set(seen))}"
    return len(scores) - len(seen)


def test_kill_9_mid_stream_loses_nothing_and_changes_no_score(run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    w1 = run.start("w1")
    produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab))
    deadline = time.monotonic() + 120
    while output_count(run) == 0 and time.monotonic() < deadline:  # as soon as scores flow: mid-stream
        time.sleep(0.05)
    w1.send_signal(signal.SIGKILL)
    w1.wait(timeout=30)
    killed_at_ms = int(time.time() * 1000)
    first = wait_for_scores(run, 1, None)
    assert 0 < len(first) < len(h), "the kill must land mid-stream"
    w2 = run.start("w2")
    try:
        scores = wait_for_scores(run, len(h), w2, distinct=True)
    finally:
        assert stop(w2) == 0, run.log("w2")[-3000:]
    duplicates = check_scores(scores, h, lab, run.bundle)
    dlq = consume_all(run.bootstrap, run.topics["dlq"], 1, 3)
    assert not dlq, "a redelivered record (same partition and offset) is not a duplicate"
    # At most what was scored since the last commit (interval 1 s) before the kill, plus a batch.
    window_ms = 3000
    recent = sum(1 for s in scores[: len(scores) - (len(scores) - len(first))]
                 if int(s["_record_ts"]) >= killed_at_ms - window_ms)  # type: ignore[call-overload]
    print(f"kill -9: {len(h)} transactions, {duplicates} duplicates, {recent} scored in the last {window_ms} ms")
    assert duplicates <= max(recent, 0) + 500
    assert "state rebuilt" in run.log("w2")


def test_broker_restart_mid_run(run: Run, history: tuple[History, Labels], tmp_path: Path) -> None:
    h, lab = history
    broker = LocalBroker(tmp_path / "own-broker")
    info = broker.start(port=0)
    run.bootstrap = info.bootstrap
    half = len(h) // 2
    w1 = run.start("w1")
    try:
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, 0, half))
        wait_for_scores(run, half // 2, w1)
        before = len(run.log("w1"))
        assert broker.stop()
        time.sleep(3)
        assert w1.poll() is None, "the worker must survive the broker going away"
        broker.start(port=0)
        time.sleep(2)
        outage = run.log("w1")[before:].splitlines()
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, half, None))
        scores = wait_for_scores(run, len(h), w1, distinct=True, timeout_s=240)
    finally:
        code = stop(w1)
        broker.stop()
    assert code == 0, run.log("w1")[-3000:]
    duplicates = check_scores(scores, h, lab, run.bundle)
    noisy = [line for line in outage if "[ERROR]" in line or "[WARNING]" in line or " ERROR " in line]
    print(f"broker restart: {len(h)} transactions, {duplicates} duplicates; {len(outage)} log lines during the "
          f"outage, {len(noisy)} errors and warnings")
    # The libraries' repeated lines are rate-limited (workers/logs.py): a few per message, not thousands.
    assert len(noisy) < 200, "\n".join(noisy[:50])


def test_rebalance_second_worker_joins_then_first_leaves(run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    third = len(h) // 3
    w1 = run.start("w1")
    w2 = None
    try:
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, 0, third))
        wait_for_scores(run, third // 2, w1)
        w2 = run.start("w2")
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, third, 2 * third))
        wait_for_scores(run, 2 * third, w1, distinct=True)
        assert stop(w1) == 0, run.log("w1")[-3000:]  # leaves the group gracefully
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, 2 * third, None))
        scores = wait_for_scores(run, len(h), w2, distinct=True)
    finally:
        if w1.poll() is None:
            stop(w1)
        if w2 is not None:
            assert stop(w2) == 0, run.log("w2")[-3000:]
    duplicates = check_scores(scores, h, lab, run.bundle)
    print(f"rebalance: {len(h)} transactions, {duplicates} duplicates")
    assert "state rebuilt" in run.log("w2")
