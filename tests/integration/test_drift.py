"""Drift monitoring end to end: the load generator's compressed replay into a worker subprocess on the real
broker, the drift windows read back from latency-stats.

The population is the quick bundle's (1000 customers, 2000 terminals, seed 0: the same profiles as the
training data), simulated from the day after the bundle's data ends. The first 37 days warm the state up
(the features' look-back); the next 30 are stationary and no day may raise a false alarm (every PSI
< 0.1); from day 67 on the amounts double (``--drift-from-day 67 --drift-kind amount``), and day 67's
window must show it (the amount's or the score's PSI > 0.25). Days 68-69 move the watermark past day 67.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer

from ops.loadgen.drift import inject
from schemas.drift import PSI_ALERT, PSI_WARN
from schemas.kafka_auth import KafkaAuth
from tests.integration.harness import Run, output_count, stop
from trainer.simulate import DAY_MS, History, SimConfig, simulate, start_ms

pytestmark = pytest.mark.integration

START = "2018-06-24"          # the quick bundle's data ends 2018-06-23
WARM_UP, STATIONARY, DRIFT_DAY, DAYS = 37, 30, 67, 70


def simulated() -> History:
    """What the load generator sends (``ops.loadgen`` with the flags of ``send``)."""
    return inject(simulate(SimConfig(1000, 2000, DAYS, START, seed=0)), "amount", DRIFT_DAY)


def send(run: Run) -> int:
    """The drifted history through ``python -m ops.loadgen``; the transactions sent."""
    done = subprocess.run(
        [sys.executable, "-m", "ops.loadgen", "--bootstrap", run.bootstrap,
         "--topic-transactions", run.topics["transactions"], "--topic-labels", run.topics["labels"],
         "--customers", "1000", "--terminals", "2000", "--days", str(DAYS), "--start", START, "--seed", "0",
         "--drift-from-day", str(DRIFT_DAY), "--drift-kind", "amount", "--quiet", "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout.strip().splitlines()[-1])["transactions"])


def drift_reports(run: Run, until_day_start: int, timeout_s: float) -> list[dict[str, Any]]:
    """Every ``drift`` object of the stats topic, until one closes the day starting at ``until_day_start``."""
    consumer = KafkaConsumer(run.topics["stats"], bootstrap_servers=run.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, **KafkaAuth.from_env().kafka_python())
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:  # polled: the worker publishes stats every interval, without end
            for recs in consumer.poll(timeout_ms=500).values():
                out += [orjson.loads(rec.value)["drift"] for rec in recs]
            if any(w["window"] == "day" and w["start"] == until_day_start for d in out for w in d.get("closed", ())):
                break
    finally:
        consumer.close()
    return out


def test_stationary_days_raise_no_alarm_and_amount_drift_does_within_its_day(run: Run) -> None:
    assert run.bundle.monitoring is not None, "the quick bundle carries a monitoring block"
    run.batch_size = 1000
    run.extra = [*run.extra, "--reasons", "0", "--stats-interval", "0.5"]
    worker = run.start("w1")
    try:
        sent = send(run)
        deadline = time.monotonic() + 120
        while output_count(run) < sent and time.monotonic() < deadline:
            assert worker.poll() is None, run.log("w1")[-3000:]
            time.sleep(1)
        day0 = start_ms(START)
        reports = drift_reports(run, day0 + DRIFT_DAY * DAY_MS, 30)
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    assert all(r["enabled"] for r in reports)
    days = {w["start"]: w for r in reports for w in r["closed"] if w["window"] == "day"}
    per_day = np.bincount((simulated().ts - day0) // DAY_MS, minlength=DAYS)
    assert all(days[day0 + d * DAY_MS]["rows"] == per_day[d] for d in range(DRIFT_DAY + 1)), "every row counted once"
    assert sum(sum(r["late_rows"].values()) for r in reports) == 0, "one worker: its oldest partition bounds all"
    assert not any(w["forced"] for w in days.values()), "the partitions' skew stays within the open days"
    for d in range(WARM_UP, WARM_UP + STATIONARY):
        w = days[day0 + d * DAY_MS]
        worst = max(w["psi"], key=lambda n: w["psi"][n])
        assert w["psi"][worst] < PSI_WARN, f"day {d}: {worst} PSI {w['psi'][worst]:.3f} with no drift"
    drifted = days[day0 + DRIFT_DAY * DAY_MS]
    assert max(drifted["psi"]["TX_AMOUNT"], drifted["psi"]["score"]) > PSI_ALERT, drifted["psi"]
    expected = run.bundle.monitoring.expected_alert_rate
    stationary = [days[day0 + d * DAY_MS]["alert_rate"] for d in range(WARM_UP, DRIFT_DAY)]
    assert all(0.5 * expected < r < 2 * expected for r in stationary), (expected, stationary)
    assert drifted["alert_rate"] > 2 * expected
