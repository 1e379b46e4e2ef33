"""The guarantee bench's pure helpers: its settings, their order, the environment they run in, the medians."""

from __future__ import annotations

import math
import os

import pytest

from ops.guaranteebench import (
    ENV_COMMIT,
    ENV_FACTOR,
    ENV_GUARANTEE,
    DrainResult,
    Setting,
    build_parser,
    drain_table,
    environ,
    interleaved,
    latency_table,
    median_rows,
    plan_settings,
    step_inputs,
)


def test_settings_on_a_cluster_and_on_one_broker() -> None:
    drains, lat = plan_settings(3, [1000, 100])
    assert [s.name for s in drains] == ["at-least-once, RF 3", "exactly-once, commit 1000 ms, RF 3",
                                        "exactly-once, commit 100 ms, RF 3", "at-least-once, RF 1"]
    assert [s.name for s in lat] == ["at-least-once, RF 1", "at-least-once, RF 3",
                                     "exactly-once, commit 1000 ms, RF 3", "exactly-once, commit 100 ms, RF 3"]
    drains, lat = plan_settings(1, [500])
    assert [s.name for s in drains] == ["at-least-once, RF 1", "exactly-once, commit 500 ms, RF 1"]
    assert lat == drains
    assert Setting("exactly-once", "3", 100).env() == {ENV_GUARANTEE: "exactly-once", ENV_FACTOR: "3",
                                                       ENV_COMMIT: "100"}


def test_interleaved_rotates_the_order_every_run() -> None:
    a, b, c = Setting(), Setting(factor="3"), Setting("exactly-once")
    assert interleaved([a, b, c], 3) == [a, b, c, b, c, a, c, a, b]
    assert interleaved([a, b], 1) == [a, b]
    assert interleaved([], 2) == []


def test_environ_sets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_GUARANTEE, "before")
    monkeypatch.delenv(ENV_FACTOR, raising=False)
    with environ({ENV_GUARANTEE: "exactly-once", ENV_FACTOR: "3"}):
        assert os.environ[ENV_GUARANTEE] == "exactly-once"
        assert os.environ[ENV_FACTOR] == "3"
    assert os.environ[ENV_GUARANTEE] == "before"
    assert ENV_FACTOR not in os.environ
    with pytest.raises(RuntimeError), environ({ENV_FACTOR: "1"}):
        raise RuntimeError("restored on the way out too")
    assert ENV_FACTOR not in os.environ


def _r(setting: str, tx: float, cpu: float, scores: int = 100, distinct: int = 100, markers: int = 0,
       broker: float = float("nan")) -> DrainResult:
    return DrainResult(setting, tx, cpu, broker, scores, distinct, markers, tx * cpu / 1e6)


def test_median_rows_and_ratios_to_the_baseline() -> None:
    results = [_r("alo", 1000, 50), _r("eos", 900, 55, markers=10), _r("alo", 1200, 40),
               _r("eos", 800, 60, scores=101, markers=20), _r("alo", 1100, 45), _r("eos", 1000, 50, markers=30)]
    rows = median_rows(results, "alo", ["alo", "eos", "absent"])
    assert [r["setting"] for r in rows] == ["alo", "eos"]
    alo, eos = rows
    assert alo["runs"] == [1000, 1200, 1100]
    assert alo["tx_per_s"] == 1100 and alo["cpu_us_per_tx"] == 45
    assert alo["tx_vs_base"] == 0 and alo["cpu_vs_base"] == 0
    assert eos["tx_per_s"] == 900 and eos["cpu_us_per_tx"] == 55
    assert eos["tx_vs_base"] == pytest.approx(900 / 1100 - 1)
    assert eos["cpu_vs_base"] == pytest.approx(55 / 45 - 1)
    assert eos["duplicates"] == 1 and eos["markers"] == 20
    assert eos["worker_cores"] == pytest.approx(0.0495)
    assert math.isnan(eos["broker_cpu_us_per_tx"])  # brokers not ours: no figure, not a zero
    table = drain_table(rows)
    assert "| eos | 900, 800, 1,000 | 900 | -18.2% | 55.0 | +22.2% | 0.05 | - | 20 | 1 |" in table.splitlines()


def test_median_rows_without_a_baseline_gives_no_ratio() -> None:
    rows = median_rows([_r("eos", 900, 55)], "alo", ["eos"])
    assert math.isnan(rows[0]["tx_vs_base"]) and math.isnan(rows[0]["cpu_vs_base"])
    assert "| - | 55.0 | - | 0.05 |" in drain_table(rows)


def test_step_inputs_keeps_the_live_step_only() -> None:
    inputs = {"history": 1_000, "warm": 5_000, "step-first": 7_000, "step": 9_000}
    assert step_inputs(inputs, 7_000) == {"step-first": 7_000, "step": 9_000}


def test_latency_table() -> None:
    pct = {"n": 5000, "p50": 12.4, "p95": 40.0, "p99": 80.6, "max": 100.0, "mean": 20.0}
    row = {"setting": "eos", "offered": 5000.0, "achieved": 4990.2, "missing": 0, "appended": pct,
           "visible": {**pct, "p50": 612.0}}
    assert "| eos | 5,000 | 4,990 | 12 / 40 / 81 | 612 / 40 / 81 | 5,000 | 0 |" in latency_table([row])


def test_parser_defaults() -> None:
    a = build_parser().parse_args([])
    assert (a.brokers, a.drain, a.drain_runs, a.commit_intervals, a.latency_load) == (3, 60_000, 3, "1000,100", 0.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--brokers", "2"])
