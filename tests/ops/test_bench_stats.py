"""The benchmark's pure helpers: percentiles, the join by tx_id, rates, the ratio table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ops.bench.stats import drain_rate, join_latency, markdown_table, percentiles, throughput_rows, timeline
from ops.loadgen.schedule import Schedule, Step, parse_steps


def test_percentiles_of_a_known_sample() -> None:
    p = percentiles(list(range(1, 101)))
    assert p["n"] == 100 and p["max"] == 100.0
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01)
    assert percentiles([])["n"] == 0


def test_join_by_tx_id_takes_the_first_output_and_counts_the_missing() -> None:
    inputs = {"a": 1000, "b": 1000, "c": 2000}
    outputs = [("a", 1010), ("b", 1050), ("a", 1005), ("zz", 5), ("b", 1100)]
    lat, missing = join_latency(inputs, outputs)
    assert lat == {"a": 5, "b": 50}
    assert missing == 1


def test_drain_rate_is_first_to_last_output_and_not_fooled_by_bursts() -> None:
    ts = np.concatenate([np.linspace(0, 9_000, 100), np.full(900, 10_000)])  # 100 spread, then a burst of 900
    assert drain_rate(ts) == pytest.approx(999 / 10, rel=0.01)
    assert drain_rate(10_000 + np.arange(1000), trim=0.05) == pytest.approx(1000, rel=0.01)
    assert drain_rate([5]) == 0.0
    t, rate = timeline(np.arange(0, 2000, 1), bucket_s=0.5)
    assert t[:2] == [0.0, 0.5] and rate[0] == pytest.approx(1000)


def test_ratio_table_and_markdown() -> None:
    rows = throughput_rows(10_000.0, 1_000.0, {1: 8_000.0, 2: 12_000.0})
    by = {r["what"]: r for r in rows}
    assert by["c. fraudstream worker x1"]["vs_a"] == pytest.approx(0.8)
    assert by["c. fraudstream worker x2"]["vs_b"] == pytest.approx(12.0)
    nan_rows = throughput_rows(10_000.0, 0.0, {})
    assert math.isnan(float(str(nan_rows[0]["vs_b"])))
    md = markdown_table(rows, [("what", "m", ""), ("tx_per_s", "tx/s", ",.0f"), ("vs_b", "÷b", ".1f")])
    assert "| c. fraudstream worker x1 | 8,000 | 8.0 |" in md
    assert "| a. ceiling: pass-through, no model | 10,000 | 10.0 |" in md


def test_schedules() -> None:
    assert Schedule().unpaced and Schedule().due(10**6) == 0.0
    assert Schedule(rate=100).due(250) == pytest.approx(2.5)
    s = Schedule(steps=parse_steps("100:2,200:1"))
    assert s.total == 400 and s.duration == 3
    assert s.due(0) == 0 and s.due(199) == pytest.approx(1.99)
    assert s.due(200) == pytest.approx(2.0) and s.due(300) == pytest.approx(2.5)
    assert s.due(400) is None
    assert s.step_of(0.5) == 0 and s.step_of(2.1) == 1 and s.step_of(-1) == 0
    assert parse_steps("1000:10") == [Step(1000.0, 10.0)]
    for bad in ("1000", "0:5", "10:-1"):
        with pytest.raises(ValueError):
            parse_steps(bad)
    with pytest.raises(ValueError):
        Schedule(rate=5, steps=[Step(1, 1)])


def test_stage_latencies_split_each_transaction_into_three_stages_that_add_up() -> None:
    from ops.bench.run import stage_latencies

    scores = [(1_150, {"tx_id": "a", "timing": {"input_ts": 1_000, "consumed_at": 1_010, "scored_at": 1_140}}),
              (2_009, {"tx_id": "b", "timing": {"input_ts": 2_000, "consumed_at": 2_003, "scored_at": 2_004}})]
    st = stage_latencies(scores)
    assert st == {"to_worker": {"a": 10, "b": 3}, "in_worker": {"a": 130, "b": 1}, "publish": {"a": 10, "b": 5}}
    for (ts, m) in scores:
        assert sum(st[k][m["tx_id"]] for k in st) == ts - m["timing"]["input_ts"]
