"""Metrics, probes and the HTTP server without Kafka: the runner's counters, the vectorised histogram
against prometheus_client's own, readiness/liveness answers, the test hooks' absence, a taken port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from schemas.errors import ConfigError
from tests.workers.test_runner import D0, FakeScorer, finalize, make_runner, rec
from workers.health import Health, bind, make_app
from workers.metrics import LATENCY_BUCKETS, NAMES, BatchHistogram, Metrics
from workers.watchdog import Sample, Watchdog


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_batch_histogram_matches_prometheus_client_value_by_value() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.exponential(0.2, 5000), np.array(LATENCY_BUCKETS), [0.0, 1e9]])
    ours = BatchHistogram("x_seconds", "x", LATENCY_BUCKETS)
    for chunk in np.array_split(values, 7):
        ours.observe_many(chunk)
    ref_registry = CollectorRegistry()
    ref = Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=ref_registry)
    for v in values.tolist():
        ref.observe(v)
    (mine,) = ours.collect()
    theirs = {s.name + str(s.labels): s.value for s in next(iter(ref_registry.collect())).samples
              if not s.name.endswith("_created")}
    got = {s.name + str(s.labels): s.value for s in mine.samples}
    assert got.keys() == theirs.keys()
    for k, v in theirs.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k


def test_the_runner_counts_consumed_scored_flagged_dead_letters_and_processed_positions(tmp_path: Path) -> None:
    runner, table, _ = make_runner(tmp_path, FakeScorer())  # FakeScorer scores 0.75 >= threshold 0.5
    m = runner.metrics
    finalize(table, 10**6)
    batch = [rec(0, 0, D0, "a"), rec(0, 1, D0 + 1, "b", b"{broken"), rec(1, 0, D0 + 2, "c"),
             rec(1, 1, D0 + 3, "d", b'{"tx_id": "e"}')]

    async def go() -> None:
        await runner.admit(batch)
        assert runner.processed == {0: 0, 1: 0}  # the first offset seen: nothing processed yet
        await runner.flush()

    asyncio.run(go())
    got = samples(m)
    assert got[("fraudstream_records_consumed_total", ())] == 4
    assert got[("fraudstream_scored_total", ())] == 2
    assert got[("fraudstream_flagged_total", ())] == 2
    assert got[("fraudstream_dead_letters_total", (("reason", "bad_json"),))] == 1
    assert got[("fraudstream_dead_letters_total", (("reason", "missing_field"),))] == 1
    assert got[("fraudstream_batch_size_count", ())] == 1 and got[("fraudstream_batch_size_sum", ())] == 2
    assert got[("fraudstream_inference_seconds_count", ())] == 1
    assert got[("fraudstream_latency_seconds_count", ())] == 2
    assert runner.processed == {0: 2, 1: 2}
    runner.drop_partitions({1})
    assert runner.processed == {0: 2}


def test_waiting_is_true_only_for_a_head_record_held_for_finality_within_the_bound(tmp_path: Path) -> None:
    runner, table, _ = make_runner(tmp_path, FakeScorer())

    async def go() -> None:
        await runner.admit([rec(0, 0, D0, "a")])

    asyncio.run(go())
    assert runner.waiting(0) and not runner.waiting(1)
    runner.pending[0][0].since -= runner.s.terminal_wait_s + 1  # the bound has passed: no longer a legal wait
    assert not runner.waiting(0)
    runner.pending[0][0].since += runner.s.terminal_wait_s + 1
    finalize(table, 10**6)
    assert not runner.waiting(0)


def _health(ready: bool = True) -> tuple[Health, Watchdog]:
    dog = Watchdog(1.0, clock=lambda: 0.0)
    return Health(dog, ready=ready, assigned=lambda: {0, 1}), dog


def test_readiness_and_liveness_say_why() -> None:
    h, dog = _health(ready=False)
    ok, body = h.readiness()
    assert not ok and "bootstrapping" in body["reason"]
    assert h.liveness()[0]
    h.ready = True
    dog.observe({0: Sample(10, 10), 1: Sample(10, 4)})
    ok, body = h.readiness()
    assert ok and body["lag"] == {"0": 0, "1": 6} and body["assigned"] == [0, 1]
    dog.clock = lambda: 5.0
    dog.observe({0: Sample(10, 10), 1: Sample(10, 4)})
    ok, body = h.readiness()
    assert not ok and "1" in body["stalled"] and "stalled partitions: 1" in body["reason"]
    ok, body = h.liveness()
    assert not ok and body["stalled"]["1"]["lag"] == 6
    dog.observe({0: Sample(10, 10), 1: Sample(10, 5)})
    assert h.readiness()[0] and h.liveness()[0]
    h.draining = True
    assert not h.readiness()[0] and h.liveness()[0]
    h.fatal = "processing a batch"
    assert not h.liveness()[0] and "fatal" in h.liveness()[1]["reason"]


def _serve(app: Any, calls: list[tuple[str, str]]) -> list[tuple[int, str]]:
    async def go() -> list[tuple[int, str]]:
        out = []
        async with TestClient(TestServer(app)) as client:
            for method, path in calls:
                r = await client.request(method, path)
                out.append((r.status, await r.text()))
        return out

    return asyncio.run(go())


def test_the_server_answers_probes_and_metrics_and_has_no_hooks_unless_asked() -> None:
    h, _ = _health()
    m = Metrics()
    m.set_model("m1", "fs1", "CPUExecutionProvider", "tree")
    m.set_ready_function(h.is_ready)
    (hz, rz, metrics, pause, resume) = _serve(make_app(h, m), [
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("POST", "/debug/pause?partition=1"),
        ("POST", "/debug/resume?partition=1")])
    assert hz[0] == 200 and rz[0] == 200
    assert metrics[0] == 200
    for name in NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in metrics[1], name
    assert "fraudstream_ready 1.0" in metrics[1]
    assert pause[0] == 404 and resume[0] == 404


def test_the_hooks_pause_and_resume_through_the_callbacks() -> None:
    h, _ = _health()
    seen: list[tuple[str, int]] = []
    app = make_app(h, Metrics(), {"pause": lambda p: seen.append(("pause", p)),
                                  "resume": lambda p: seen.append(("resume", p))})
    got = _serve(app, [("POST", "/debug/pause?partition=1"), ("POST", "/debug/resume?partition=1"),
                       ("POST", "/debug/pause?partition=x"), ("GET", "/debug/pause?partition=1")])
    assert [s for s, _ in got] == [200, 200, 400, 405]
    assert seen == [("pause", 1), ("resume", 1)]


def test_bind_refuses_a_port_in_use_and_port_zero_means_no_server() -> None:
    assert bind("127.0.0.1", 0) is None
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(ConfigError, match=r"--metrics-port \d+ on 127.0.0.1 is already in use"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    sock = bind("127.0.0.1", _free_port())
    assert sock is not None
    sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
