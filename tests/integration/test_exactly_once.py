"""Exactly-once scoring (``--guarantee exactly-once``) on a real broker: a consumer reading with
``isolation.level=read_committed`` sees every transaction scored once — no loss, no duplicate, every
score the clean offline score — through a kill -9 mid-stream and through a worker frozen past its
session timeout whose partitions moved (its producers are fenced when it wakes up).
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import orjson
import pytest

from ops.loadgen.replay import events, produce
from tests.integration.harness import Run, consume_all, expected_scores, output_count, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration
EXACTLY_ONCE = ["--guarantee", "exactly-once", "--session-timeout-s", "6", "--commit-interval-ms", "300"]


def _committed(run: Run, topic: str) -> list[dict[str, object]]:
    records = consume_all(run.bootstrap, run.topics[topic], 10**9, 8, isolation="read_committed")
    return [orjson.loads(r.value) for r in records]  # type: ignore[attr-defined]


def check_exactly_once(run: Run, h: History, lab: Labels) -> None:
    """Committed scores: each transaction once, with its clean offline score; flags: each flagged one once."""
    expected = expected_scores(h, lab, run.bundle)
    scores = _committed(run, "scores")
    counts = Counter(str(s["tx_id"]) for s in scores)
    repeated = {tx: n for tx, n in counts.items() if n > 1}
    assert not repeated, f"{len(repeated)} transactions scored more than once, e.g. {list(repeated.items())[:3]}"
    assert set(counts) == set(h.tx_id.tolist()), f"lost: {len(set(h.tx_id.tolist()) - set(counts))}"
    worst = max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores)  # type: ignore[arg-type]
    assert worst <= 1e-5, f"committed score vs offline: max |diff| {worst}"
    flags = Counter(str(f["tx_id"]) for f in _committed(run, "flags"))
    assert max(flags.values(), default=1) == 1, "a flag committed twice"
    assert set(flags) == {tx for tx, p in expected.items() if p >= run.bundle.threshold}
    assert not consume_all(run.bootstrap, run.topics["dlq"], 1, 2, isolation="read_committed")


def _wait_log(run: Run, worker: str, text: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in run.log(worker):
        assert time.monotonic() < deadline, f"{worker}: no {text!r}:\n{run.log(worker)[-3000:]}"
        time.sleep(0.2)


def test_kill_9_mid_stream_scores_every_transaction_exactly_once(run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    run.extra = EXACTLY_ONCE
    w1 = run.start("w1")
    produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab))
    deadline = time.monotonic() + 120
    while output_count(run) < len(h) // 4 and time.monotonic() < deadline:  # mid-stream, transactions open
        time.sleep(0.02)
    w1.send_signal(signal.SIGKILL)
    w1.wait(timeout=30)
    written = output_count(run)
    assert written < 2 * len(h), "the kill must land mid-stream"
    w2 = run.start("w2")
    try:
        wait_for_scores(run, len(h), w2, timeout_s=240, distinct=True, isolation="read_committed")
    finally:
        assert stop(w2) == 0, run.log("w2")[-3000:]
    assert "transactional producer" in run.log("w2")
    check_exactly_once(run, h, lab)
    print(f"kill -9 at {written} offsets of the scores topic; {output_count(run) - len(h)} more offsets than committed "
          f"scores at the end: aborted records and transaction markers, unseen by read_committed")


def test_a_join_and_a_frozen_worker_fenced_score_nothing_twice(run: Run, history: tuple[History, Labels]) -> None:
    """w1 alone, then w2 joins mid-stream (a rebalance with state), then w1 is frozen past its session
    timeout with transactions open: w2 takes everything; w1 wakes up believing it still owns its partitions."""
    h, lab = history
    run.extra = EXACTLY_ONCE
    stream = list(events(h, lab))
    third = len(stream) // 3
    w1 = run.start("w1")
    w2 = None
    try:
        _wait_log(run, "w1", "transactions partitions assigned: [0, 1, 2, 3]")
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[:third]))
        wait_for_scores(run, 1, None, isolation="read_committed")
        w2 = run.start("w2")  # joins while w1 has transactions open
        _wait_log(run, "w2", "transactions partitions assigned: [")
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[third:2 * third]))
        wait_for_scores(run, 1, None, isolation="read_committed")
        w1.send_signal(signal.SIGSTOP)  # frozen with its transactions open, past the session timeout
        _wait_log(run, "w2", "transactions partitions assigned: [0, 1, 2, 3]", timeout_s=60)
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[2 * third:]))
        time.sleep(2)
        w1.send_signal(signal.SIGCONT)  # wakes up believing it still owns its partitions
        wait_for_scores(run, len(h), None, timeout_s=240, distinct=True, isolation="read_committed")
        time.sleep(3)  # the woken worker's commits, if any were to go through, would land by now
    finally:
        w1.send_signal(signal.SIGCONT)
        codes = [stop(w) for w in (w1, w2) if w is not None]
    assert codes == [0, 0], run.log("w1")[-3000:] + run.log("w2")[-3000:]
    check_exactly_once(run, h, lab)
