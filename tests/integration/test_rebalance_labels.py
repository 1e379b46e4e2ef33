"""Label state through rebalances: a worker that keeps labels partitions resumes them where its state
ends, never from offset 0 (the labels group never commits), so no label is admitted twice, and an
idle check that a revocation interrupts is skipped, not fatal.

The history (transactions and labels interleaved, realistic report delays) goes in four parts: w1
alone; w2 joins (w1 keeps some labels partitions); w2 leaves with SIGTERM (w1 keeps its own and
takes w2's); w3 joins and w1 is killed with SIGKILL (w3 takes everything). A label admitted twice
after its cut-off closed would be restamped into a later slot and counted again in its terminal's
fraud counts: no label may be restamped or dead-lettered, and every score must equal the offline
score.
"""

from __future__ import annotations

import signal
import subprocess
import time

import orjson
import pytest

from ops.loadgen.replay import events, produce
from tests.integration.harness import Run, consume_all, expected_scores, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration


def _assigned(run: Run, worker: str, partitions: str = "", timeout_s: float = 60) -> None:
    """Until the worker is ready and (when given) its transactions assignment is ``partitions``, e.g. "[0, 1, 2, 3]"."""
    deadline = time.monotonic() + timeout_s
    want = f"transactions partitions assigned: {partitions}"
    while want not in run.log(worker) or " ready in " not in run.log(worker):
        assert time.monotonic() < deadline, run.log(worker)[-3000:]
        time.sleep(0.2)


def _kept(run: Run, worker: str) -> list[str]:
    return [line for line in run.log(worker).splitlines()
            if "labels partitions assigned" in line and "resumed where their state ends: {}" not in line]


def test_join_leave_and_kill_leave_the_label_state_counting_each_label_once(
        run: Run, history: tuple[History, Labels]) -> None:
    h, lab = history
    stream = list(events(h, lab))
    cuts = [0, len(stream) // 4, len(stream) // 2, 3 * len(stream) // 4, len(stream)]
    workers: dict[str, subprocess.Popen[bytes]] = {}

    def send(part: int) -> int:
        n, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"],
                       iter(stream[cuts[part]:cuts[part + 1]]))
        return n

    try:
        workers["w1"] = run.start("w1")
        _assigned(run, "w1")
        total = send(0)
        wait_for_scores(run, total, None, timeout_s=180, distinct=True)
        workers["w2"] = run.start("w2")              # join: w1 keeps half its labels partitions
        _assigned(run, "w2")
        time.sleep(3)
        total += send(1)
        wait_for_scores(run, total, None, timeout_s=180, distinct=True)
        assert stop(workers.pop("w2")) == 0, run.log("w2")[-3000:]   # SIGTERM: w1 keeps its own, takes w2's
        _assigned(run, "w1", "[0, 1, 2, 3]")
        total += send(2)
        wait_for_scores(run, total, None, timeout_s=180, distinct=True)
        workers["w3"] = run.start("w3")
        _assigned(run, "w3")
        workers.pop("w1").send_signal(signal.SIGKILL)   # w3 takes everything, rebuilt from the start
        _assigned(run, "w3", "[0, 1, 2, 3]")
        total += send(3)
        scores = wait_for_scores(run, len(h), None, timeout_s=240, distinct=True)
        time.sleep(2.5)  # a stats interval more
    finally:
        codes = {name: stop(w) for name, w in workers.items()}
    assert codes == {"w3": 0}, run.log("w3")[-3000:]
    # Read once the workers stopped: while they run, a stats message every second keeps the reader going.
    stats = [orjson.loads(x.value) for x in consume_all(run.bootstrap, run.topics["stats"], 10_000, 5)]  # type: ignore[attr-defined]
    assert sum(s["counts"]["labels_late_restamped"] for s in stats) == 0, "a label was admitted twice"
    assert sum(s["counts"]["labels_dead_lettered"] for s in stats) == 0
    assert not consume_all(run.bootstrap, run.topics["dlq"], 1, 2), "nothing here is bad input"
    expected = expected_scores(h, lab, run.bundle)
    worst = max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores)  # type: ignore[arg-type]
    assert worst <= 1e-5, f"worker vs offline score through the rebalances: max |diff| {worst}"
    assert len(_kept(run, "w1")) >= 2, "w1 kept labels partitions at the join and at the leave"
    for name in ("w1", "w2", "w3"):
        assert " died: " not in run.log(name), run.log(name)[-3000:]
