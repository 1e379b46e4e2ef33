"""The sizing model (ops/sizing.py): the measured slopes are sane and the plan scales as stated."""

from __future__ import annotations

import math

from ops.sizing import Measured, measure, plan


def test_the_measured_costs_are_per_transaction_and_per_terminal_slopes() -> None:
    m = measure(60, 180, 45)
    assert m.tx > 1000 and m.terminals > 200
    assert 50 < m.bytes_per_tx < 5000, m
    assert 100 < m.bytes_per_terminal < 50_000, m
    assert 0 < m.day_record_bytes_per_terminal < 100, m


def test_the_plan_scales_with_the_rate_and_says_when_memory_cannot_hold_it() -> None:
    m = Measured(bytes_per_tx=500, bytes_per_terminal=3000, day_record_bytes_per_terminal=5, tx=0, terminals=0)
    small, big = plan(0.1, m, 50, 100), plan(1000, m, 50, 100)
    assert math.isclose(big["held_gib"], 10_000 * small["held_gib"])
    assert small["workers_cpu"] == 1 and big["workers_cpu"] == 1  # 1 000 tx/s x 50 µs = 5 % of a core
    assert small["workers_memory"] == 1 and big["workers_memory"] > 10
    assert plan(1e6, m, 50, 100)["workers_memory"] == math.inf  # the terminal table alone fills a worker
    assert plan(1e6, m, 50, 100)["workers_cpu"] == 100
