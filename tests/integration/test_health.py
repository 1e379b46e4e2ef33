"""Health, readiness and metrics of a real worker subprocess on the real broker, and a real stall.

The worker scores the first half of a history; /readyz is 200 and /metrics holds every metric
the dashboard queries, with the counts the topics show. Then one transactions partition is paused
through the test hook (FRAUDSTREAM_TEST_HOOKS=1) and the second half is produced: the partition's
lag grows while its processed position stands still, so after --stall-after-s the watchdog
reports it — /readyz and /healthz turn 503 naming it — and once it is resumed both return to 200
and every transaction is scored.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.loadgen.replay import events, produce
from schemas.bundle import Bundle
from tests.integration.harness import Run, consume_all, output_count, stop, wait_for_scores
from trainer.simulate import History, Labels
from workers.metrics import NAMES

pytestmark = pytest.mark.integration

PAUSED = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    status, body = http(port, path)
    return status, orjson.loads(body)


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def until(what: str, check: Any, timeout_s: float, proc: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the worker exited with {proc.returncode} while waiting for {what}"
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_probes_metrics_and_a_stalled_partition(run: Run, history: tuple[History, Labels], bundle: Bundle) -> None:
    h, lab = history
    half = len(h) // 2
    port = run.metrics_port = free_port()
    run.extra = ["--metrics-host", "127.0.0.1", "--stall-after-s", "2", "--watchdog-interval-s", "0.5"]
    worker = run.start("w1", env={"FRAUDSTREAM_TEST_HOOKS": "1"})
    try:
        # Cold start: anything but 200 before ready must be 503 "bootstrapping".
        def ready_yet() -> bool:
            try:
                status, body = probe(port, "/readyz")
            except OSError:
                return False
            assert status in (200, 503), (status, body)
            assert status == 200 or "bootstrapping" in body["reason"], body
            return status == 200

        until("/readyz 200 after the bootstrap", ready_yet, 120, worker)
        assert probe(port, "/healthz")[0] == 200

        # Phase 1: half the history and one malformed record.
        n_tx, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, 0, half),
                          extra=[(run.topics["transactions"], b"c0", b"{not json")])
        wait_for_scores(run, n_tx, worker)
        assert len(consume_all(run.bootstrap, run.topics["dlq"], 1, 30)) == 1
        m = until("lag 0 on every partition", lambda: (lambda m: m if all(
            m.get(("fraudstream_consumer_lag", (("partition", str(p)),))) == 0 for p in range(4)) else None)(
            metrics(port)), 30, worker)
        exposed = {k[0] for k in m}
        for name in NAMES:  # every name the dashboard queries has samples (histograms: _bucket, _sum, _count)
            assert name in exposed or f"{name}_count" in exposed, name
        scored = output_count(run, "scores")
        assert scored == n_tx
        assert m[("fraudstream_scored_total", ())] == scored
        assert m[("fraudstream_records_consumed_total", ())] == n_tx + 1
        assert m[("fraudstream_dead_letters_total", (("reason", "bad_json"),))] == 1
        assert m[("fraudstream_flagged_total", ())] == output_count(run, "flags")
        assert m[("fraudstream_latency_seconds_count", ())] == scored
        assert m[("fraudstream_latency_seconds_sum", ())] > 0
        assert m[("fraudstream_batch_size_sum", ())] == scored  # no retries: one ORT call per batch
        assert 1 <= m[("fraudstream_batch_size_count", ())] == m[("fraudstream_inference_seconds_count", ())]
        assert m[("fraudstream_assigned_partitions", ())] == 4
        assert m[("fraudstream_stalled_partitions", ())] == 0
        assert m[("fraudstream_ready", ())] == 1
        (info,) = [dict(k[1]) for k in m if k[0] == "fraudstream_model_info"]
        assert info["model_version"] == bundle.model_version
        assert info["feature_version"] == bundle.manifest["feature_set"]["version"]
        assert f"provider {info['provider']}," in run.log("w1")
        assert info["graph"]
        status, body = probe(port, "/readyz")
        assert status == 200 and body["assigned"] == [0, 1, 2, 3], body

        # Phase 2: partition PAUSED stops fetching; the rest of the history arrives.
        assert http(port, f"/debug/pause?partition={PAUSED}", "POST")[0] == 200
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], events(h, lab, half, None))

        def stalled() -> dict[str, Any] | None:
            status, body = probe(port, "/readyz")
            return body if status == 503 else None

        body = until(f"/readyz 503 naming partition {PAUSED}", stalled, 30, worker)
        assert set(body["stalled"]) == {str(PAUSED)}, body
        assert body["stalled"][str(PAUSED)]["lag"] > 0 and str(PAUSED) in body["reason"]
        status, live = probe(port, "/healthz")
        assert status == 503 and str(PAUSED) in live["stalled"], live
        m = metrics(port)
        assert m[("fraudstream_stalled_partitions", ())] == 1 and m[("fraudstream_ready", ())] == 0
        assert m[("fraudstream_consumer_lag", (("partition", str(PAUSED)),))] > 0
        assert f"partition {PAUSED} stalled: lag" in run.log("w1")

        # Resume: ready and live again, and everything scored.
        assert http(port, f"/debug/resume?partition={PAUSED}", "POST")[0] == 200
        until("/readyz 200 after the resume", lambda: probe(port, "/readyz")[0] == 200, 30, worker)
        assert probe(port, "/healthz")[0] == 200
        scores = wait_for_scores(run, len(h), worker, distinct=True)
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    assert {str(s["tx_id"]) for s in scores} == set(h.tx_id.tolist())
    assert f"partition {PAUSED} progressing again" in run.log("w1")
