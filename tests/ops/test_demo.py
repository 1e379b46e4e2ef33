"""``python -m ops.demo`` for real, against the session broker: the report says what the topics say,
and nothing the demo started outlives it (also when it gets SIGINT, or SIGKILL, mid-run).

The demo runs as a subprocess with ``KAFKA_BOOTSTRAP`` set to the session broker and the session's
quick bundle (``--bundle``: no training), a short warm-up, 10 s at 300 tx/s.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaAdminClient

from ops.bench.kafka_io import delete_topics, read_topic
from ops.demo.report import Output, exactly_once, flag_quality, summarize, top_flags, why_flags
from ops.demo.run import REPORT_FILES, SIZES
from ops.loadgen.drift import inject
from schemas.bundle import Bundle
from schemas.drift import PSI_ALERT, PSI_WARN
from schemas.features import DAY_MS
from trainer.simulate import History, SimConfig, simulate


def _demo(bundle: Bundle, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ops.demo", "--bundle", str(bundle.path), "--out", str(out), "--metrics-port", "off",
            "--rate", "300", *args]


def _env(kafka_bootstrap: str) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "PYTHONUNBUFFERED": "1"}


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (every worker's argv holds the demo's --out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _topics_with_prefix(admin: KafkaAdminClient, prefix: str, timeout_s: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [t for t in admin.list_topics() if t.startswith(prefix)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


# ---- the pure part -------------------------------------------------------------------------------


def test_precision_recall_and_exactly_once_on_a_known_case() -> None:
    truth = {"a": True, "b": True, "c": False, "d": False, "e": True}
    q = flag_quality(["a", "b", "c", "d", "e"], ["a", "c", "zz"], truth)
    assert (q["flags"], q["frauds"], q["tp"], q["fp"], q["fn"]) == (2, 3, 1, 1, 2)
    assert q["precision"] == 0.5 and q["recall"] == pytest.approx(1 / 3)
    assert math.isnan(flag_quality(["c"], [], truth)["precision"])
    outs = [Output("a", 10, 0.9, True), Output("a", 12, 0.9, True), Output("b", 11, 0.2, False),
            Output("b", 13, 0.3, False), Output("zz", 1, 0.1, False)]
    once = exactly_once(["a", "b", "c"], outs)
    assert once == {"sent": 3, "scored": 2, "records": 4, "duplicates": 2, "duplicates_with_another_score": 1,
                    "missing": 1}
    s = summarize({"a": 5, "b": 5, "c": 5}, outs, [Output("a", 10, 0.9, True)], truth)
    assert s["latency_ms"]["n"] == 2 and s["latency_ms"]["max"] == 6.0  # first output of each: 10-5, 11-5
    assert s["tp"] == 1 and s["flags"] == 1 and s["flags_match_scores"]


def test_the_top_flags_show_their_reasons() -> None:
    why = {"raw_score": 2.5, "bias": -3.0, "reasons": [
        {"feature": "TERMINAL_ID_RISK_7DAY_WINDOW", "value": 0.5, "contribution": 4.25},
        {"feature": "TX_AMOUNT", "value": 1234.5, "contribution": 1.0}]}
    flags = [{"tx_id": "a", "score": 0.7}, {"tx_id": "b", "score": 0.92, "explanation": why},
             {"tx_id": "b", "score": 0.92, "explanation": why}, {"tx_id": "c", "score": 0.5}]
    top = top_flags(flags, {"a": False, "b": True}, n=2)
    assert [(f["tx_id"], f["fraud"]) for f in top] == [("b", True), ("a", False)]
    assert top_flags([*flags, {"tx_id": "z", "score": 0.99}], {}, n=1)[0]["tx_id"] == "b", "explained ones first"
    text = "\n".join(why_flags(top))
    assert "| b | 0.9200 | yes | TERMINAL_ID_RISK_7DAY_WINDOW = 0.5 (+4.25); TX_AMOUNT = 1,234.5 (+1.00); " \
           "bias -3.00, raw score 2.50 |" in text
    assert "| a | 0.7000 | no | none (the worker ran with --reasons 0) |" in text
    assert why_flags([]) == []


def test_sizes_are_the_trainers() -> None:
    from trainer.cli import QUICK

    assert SIZES["quick"] == QUICK and SIZES["book"] == SimConfig()


# ---- for real ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_demo_reports_what_the_topics_hold_and_leaves_nothing_running(
        kafka_bootstrap: str, kafka_admin: KafkaAdminClient, bundle: Bundle, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(_demo(bundle, out, "--duration", "10", "--warmup-days", "12", "--drift-from-day", "6",
                                "--keep-topics"),
                          env=_env(kafka_bootstrap), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    r = json.loads((out / "report.json").read_text())
    prefix = r["topics"]["prefix"]
    try:
        for name in REPORT_FILES:
            assert (out / name).stat().st_size > 0, name
        assert "| precision |" in done.stdout and "| latency p50 / p95 / p99 / max |" in done.stdout
        assert str(out / "logs") in done.stderr, "says where the logs are"
        assert r["worker_pids"] and len(r["worker_pids"]) == 2
        assert not _processes_mentioning(str(out)), "a worker outlived the demo"

        # The load phase, independently: the same simulated history, the topics read back.
        assert r["config"]["drift"] == {"kind": "amount", "from_day": 6, "factor": 2.0}
        plain = simulate(SimConfig(**r["config"]["replay"]))
        h = inject(plain, "amount", 6, 2.0, r["config"]["seed"])
        warm_n, n = r["warmup"]["transactions"], r["sent"]["transactions"]
        assert warm_n > 0 and n >= 0.8 * 300 * 10
        load = {str(t): bool(f) for t, f in zip(h.tx_id[warm_n:warm_n + n], h.is_fraud[warm_n:warm_n + n],
                                                strict=True)}
        sent = {orjson.loads(v)["tx_id"] for _, _, v in read_topic(kafka_bootstrap, r["topics"]["transactions"])}
        assert set(load) <= sent and len(sent) == warm_n + n
        scores: dict[str, set[float]] = defaultdict(set)
        flagged_by_score = set()
        for _, _, v in read_topic(kafka_bootstrap, r["topics"]["scores"]):
            m = orjson.loads(v)
            if m["tx_id"] in load:
                scores[m["tx_id"]].add(m["score"])
                if m["flag"]:
                    flagged_by_score.add(m["tx_id"])
        assert set(scores) == set(load), "every transaction of the load phase was scored"
        assert all(len(s) == 1 for s in scores.values()), "a redelivered transaction kept its score"
        flags = {orjson.loads(v)["tx_id"] for _, _, v in read_topic(kafka_bootstrap, r["topics"]["flags"])} & set(load)
        assert flags == flagged_by_score
        tp = sum(1 for t in flags if load[t])
        frauds = sum(load.values())
        rl = r["load"]
        assert (rl["sent"], rl["scored"], rl["missing"]) == (n, n, 0)
        assert (rl["flags"], rl["tp"], rl["fp"], rl["frauds"]) == (len(flags), tp, len(flags) - tp, frauds)
        assert rl["flags"] == rl["tp"] + rl["fp"] and rl["frauds"] == rl["tp"] + rl["fn"]
        assert flags and frauds, "10 s of the quick population hold frauds and flags"
        assert rl["precision"] == pytest.approx(tp / len(flags))
        assert rl["recall"] == pytest.approx(tp / frauds)
        lat = rl["latency_ms"]
        assert lat["n"] == n and 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert rl["scored_per_s"] > 0
        assert r["top_flags"] and all(f["tx_id"] in flags and f["explanation"]["reasons"] for f in r["top_flags"])
        assert "Why the top flags" in (out / "report.md").read_text()
        assert r["dead_letters"]["count"] == 0 and r["dead_letters"]["reasons"] == {}
        assert r["workers"]["providers"] and r["workers"]["model_versions"] == [bundle.model_version]
        assert r["broker"] == {"bootstrap": kafka_bootstrap, "kind": "reused"}
        _check_the_model_live(r, h, plain, out)
    finally:
        delete_topics(kafka_bootstrap, prefix)


def _check_the_model_live(r: dict[str, Any], h: History, plain: History, out: Path) -> None:
    """Drift per day and the monitor's days, against the history the demo sent: every warm-up transaction
    counted in its day by the workers and by the monitor (none late), the amount drift seen from its day."""
    w, warm_n = r["watch"], r["warmup"]["transactions"]
    shifted = h.ts[:warm_n].astype(np.int64) + int(r["warmup"]["shift_ms"])
    per_day = Counter((shifted // DAY_MS * DAY_MS).tolist())
    done = [d for d in r["drift_days"] if d["start"] + DAY_MS <= r["warmup"]["history_end_ms"]]
    assert len(done) >= 10 and all(d["rows"] == per_day[d["start"]] for d in done), "a row lost or counted twice"
    start = w["drift_start_ms"]
    first = int(np.flatnonzero(h.amount_cents[:warm_n] != plain.amount_cents[:warm_n])[0])
    assert shifted[first - 1] < start <= shifted[first], "the report's drift start is the first drifted transaction's"
    before = [d["psi"]["TX_AMOUNT"] for d in done if d["start"] + DAY_MS <= start and d["rows"] >= 1000]
    after = [d["psi"]["TX_AMOUNT"] for d in done if d["start"] >= start]
    assert before and max(before) < PSI_WARN, before
    assert after and min(after) > PSI_ALERT, after
    assert w["first_alert_ms"] is not None and w["first_alert_ms"] <= start
    days = {d["window_start"]: d for d in r["tx_days"]}
    assert w["monitor_missing"] == 0 and days, "the monitor published the days it should have"
    assert all(days[s]["n_scored"] == n for s, n in per_day.items() if s in days and s + DAY_MS <= shifted[-1]), \
        "the monitor counted every score of its day (none late for the workers' backlog)"
    labelled = [d for d in days.values() if d["stage"] == "feedback"]
    assert labelled and all(0 < d["n_labelled"] <= d["n_scored"] and d["precision"] is not None for d in labelled)
    for name in ("drift_psi.png", "live_precision.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert "## The model, live" in md and "DriftCritical fires on day 6" in md, md


def _wait_gone(texts: list[str], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for t in texts for pid in _processes_mentioning(t)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_signal_mid_run_leaves_no_process_behind(
        kafka_bootstrap: str, kafka_admin: KafkaAdminClient, bundle: Bundle, tmp_path: Path, sig: int) -> None:
    """SIGINT: the demo stops the load generator, the workers and its topics, and exits 130. SIGKILL (no
    cleanup possible): the kernel sends its children SIGTERM (PR_SET_PDEATHSIG), so none outlives it."""
    out = tmp_path / "demo"
    proc = subprocess.Popen(_demo(bundle, out, "--duration", "120", "--warmup-days", "0"), env=_env(kafka_bootstrap),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    mentions = [str(out)]  # in every worker's argv (--data-dir); the load generator's names the topics
    try:
        deadline = time.monotonic() + 120
        while not any("[demo] load:" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the load phase never started:\n" + "".join(lines)
            time.sleep(0.2)
        prefix = re.search(r"topics (demo-[0-9a-f]+)-\*", "".join(lines))
        assert prefix, "".join(lines)
        mentions.append(f"{prefix.group(1)}-transactions")
        time.sleep(3)  # mid-load
        workers = _processes_mentioning(str(out))
        assert len(workers) >= 2, f"the workers should be running now: {workers}"
        assert _processes_mentioning(mentions[1]), "the load generator should be running now"
        proc.send_signal(sig)
        code = proc.wait(timeout=90)
        reader.join(timeout=10)
        text = "".join(lines)
        assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), text
        assert _wait_gone(mentions, 5 if sig == signal.SIGINT else 45) == [], "a process outlived the demo"
        if sig == signal.SIGINT:
            assert "SIGINT: stopping everything" in text and "exit 130" in text, text
            assert not (out / "report.json").exists()
            assert _topics_with_prefix(kafka_admin, prefix.group(1)) == [], "the run's topics were not deleted"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in [pid for t in mentions for pid in _processes_mentioning(t)]:  # never leave ours behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if len(mentions) > 1:
            delete_topics(kafka_bootstrap, mentions[1].removesuffix("-transactions"))
