"""The worker's drift monitor (workers/drift.py): vectorised counts, windows, lateness, bounded state, PSI,
the stats message and the gauges, and its hook in the runner."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from jsonschema import Draft202012Validator

from schemas.bundle import Bundle
from schemas.drift import Bins, Calibration, Monitoring, quantile_bins
from schemas.features import DAY_MS, FEATURE_NAMES, HOUR_MS
from schemas.messages import LATENCY_STATS
from tests.workers.test_runner import D0, FakePublisher, FakeScorer, finalize, rec
from trainer.monitoring import CLOCK_FEATURES
from workers import drift
from workers.config import parse
from workers.drift import DriftMonitor, Layout, drift_off, last_closed
from workers.metrics import Metrics
from workers.runner import Runner
from workers.state import TxPartition
from workers.stats import StatsWindow
from workers.terminals import TerminalTable

VALIDATOR = Draft202012Validator(LATENCY_STATS)
THRESHOLD = 0.5
F = len(FEATURE_NAMES)


def reference_rows(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    """Feature rows with ties (counts), zeros (risk) and continuous values, like the real columns."""
    x = rng.gamma(2.0, 20.0, size=(n, F))
    x[:, 3:9] = rng.poisson(2.0, size=(n, 6))
    x[:, 13] = np.where(rng.random(n) < 0.93, 0.0, rng.random(n))
    return x.astype(np.float32)


def monitoring(rng: np.random.Generator, n: int = 5000) -> Monitoring:
    x = reference_rows(rng, n)
    features = {name: quantile_bins(x[:, i]) for i, name in enumerate(FEATURE_NAMES) if name not in CLOCK_FEATURES}
    cal = Calibration("isotonic", np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    return Monitoring(features, quantile_bins(rng.beta(1, 8, n).astype(np.float32)), CLOCK_FEATURES, cal,
                      expected_alert_rate=0.02, expected_precision=0.5, rows=n)


@pytest.fixture
def mon() -> Monitoring:
    return monitoring(np.random.default_rng(0))


def batch(rng: np.random.Generator, n: int, ts0: int, span_ms: int
          ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    return (reference_rows(rng, n), rng.beta(1, 8, n).astype(np.float32),
            np.sort(ts0 + rng.integers(0, span_ms, n)).astype(np.int64))


def per_row(layout: Layout, x: npt.NDArray[np.float32], s: npt.NDArray[np.float32], ts: npt.NDArray[np.int64],
            key: int) -> dict[int, npt.NDArray[np.int64]]:
    """The reference: every row, one at a time, into its window's count vector (Bins.index of one value)."""
    out: dict[int, npt.NDArray[np.int64]] = {}
    for i in range(len(s)):
        counts = out.setdefault(int(ts[i]) // key, np.zeros(layout.width, np.int64))
        for name, col, off in zip(layout.names, (*layout.cols, -1), layout.offsets, strict=True):
            b = layout.bins[layout.names.index(name)]
            value = s[i] if name == "score" else x[i, col]
            counts[off + int(b.index([value])[0])] += 1
        counts[layout.flag_at + int(s[i] >= THRESHOLD)] += 1
    return out


@pytest.mark.parametrize("span_h", [1, 30, 2000])  # one hour, a compressed replay's batch, a sparse span
def test_vectorised_counts_equal_a_per_row_loop(mon: Monitoring, span_h: int, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    rng = np.random.default_rng(span_h)
    d = DriftMonitor(mon, THRESHOLD, 0)
    d.kinds["hour"].cap = d.kinds["day"].cap = 10**6  # nothing forced: compare every window
    monkeypatch.setattr(drift, "MAX_PENDING", {"hour": 10**6, "day": 10**6})
    x, s, ts = batch(rng, 3000, D0, span_h * HOUR_MS)
    x[::97, 0] = np.nan  # NaN falls in the last bin, as Bins.index puts it
    for part in np.array_split(np.arange(len(s)), 3):
        d.observe(x[part], s[part], ts[part], s[part] >= THRESHOLD)
    d.advance(int(ts.max()) + 2 * DAY_MS)
    msg = d.snapshot(1000)
    for kind, key in (("hour", HOUR_MS), ("day", DAY_MS)):
        want = per_row(d.layout, x, s, ts, key)
        got = {w["start"] // key: w for w in msg["closed"] if w["window"] == kind}
        assert sorted(got) == sorted(want)
        for k, counts in want.items():
            assert got[k]["counts"] == {n: c.tolist() for n, c in d.layout.split(counts).items()}
            assert got[k]["rows"] == counts[d.layout.flag_at:].sum()
    total = per_row(d.layout, x, s, ts, DAY_MS * 10**6)[D0 // (DAY_MS * 10**6)]  # one window: the interval
    assert msg["interval"]["counts"] == {n: c.tolist() for n, c in d.layout.split(total).items()}
    assert msg["interval"]["flags"] == int((s >= THRESHOLD).sum()) and msg["late_rows"] == {"hour": 0, "day": 0}


def test_float32_binning_is_bins_index_at_every_edge_and_refuses_other_dtypes() -> None:
    """Edges that float32 cannot hold (0.1, 0.7), values at, just below and above each edge, NaN and infinities:
    the slots are ``Bins.index``'s; and a float64 matrix is refused rather than rounded."""
    edges = np.array([0.1, 0.5, 0.7, 1 / 3, 2.0, 1e39])  # float32(0.7) < 0.7, float32(0.1) > 0.1
    edges.sort()
    b = Bins(edges, np.full(len(edges) + 1, 1 / (len(edges) + 1)))
    cal = Calibration("isotonic", np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    m = Monitoring({"TX_AMOUNT": b}, b, (), cal, 0.01, 0.5, 10)
    layout = Layout(m)
    e32 = edges[:-1].astype(np.float32)  # the values around the edges float32 holds
    v = np.concatenate([e32, np.nextafter(e32, np.float32(-np.inf)), np.nextafter(e32, np.float32(np.inf)),
                        np.array([np.nan, np.inf, -np.inf, 0, -1e30], np.float32)]).astype(np.float32)
    x = np.zeros((len(v), F), np.float32)
    x[:, 0] = v
    slots = layout.slots(x, v, np.zeros(len(v), bool))
    assert slots[0].tolist() == b.index(v).tolist()
    assert (slots[1] - layout.offsets[1]).tolist() == b.index(v).tolist()
    with pytest.raises(TypeError, match="float32"):
        layout.slots(x.astype(np.float64), v, np.zeros(len(v), bool))  # type: ignore[arg-type]


def test_windows_close_when_the_watermark_passes_their_end_and_late_rows_are_dropped(mon: Monitoring) -> None:
    rng = np.random.default_rng(1)
    d = DriftMonitor(mon, THRESHOLD, 0)
    x, s, ts = batch(rng, 400, D0, 4 * HOUR_MS)  # hours 0-3 of a day
    d.observe(x, s, ts, s >= THRESHOLD)
    d.advance(D0 + 2 * HOUR_MS + 1)
    first = d.snapshot(1)
    assert [(w["window"], w["start"]) for w in first["closed"]] == [("hour", D0), ("hour", D0 + HOUR_MS)]
    assert first["open"] == {"hour": 2, "day": 1}
    # A row of hour 1 (closed): dropped from the hours, still counted in its open day.
    x1, s1, _ = batch(rng, 1, D0, 1)
    d.observe(x1, s1, np.array([D0 + HOUR_MS + 5]), s1 >= THRESHOLD)
    d.advance(D0 + 2 * HOUR_MS)  # a watermark that goes back is ignored
    d.advance(D0 + DAY_MS)
    second = d.snapshot(2)
    assert second["late_rows"] == {"hour": 1, "day": 0}
    day = [w for w in second["closed"] if w["window"] == "day"]
    assert len(day) == 1 and day[0]["rows"] == 401 and not day[0]["forced"]
    assert second["interval"]["rows"] == 1 and second["open"] == {"hour": 0, "day": 0}
    # The day closed: a row of it now counts nowhere.
    d.observe(x1, s1, np.array([D0 + 5]), s1 >= THRESHOLD)
    assert d.snapshot(3)["late_rows"] == {"hour": 1, "day": 1}


def test_open_and_pending_windows_are_bounded(mon: Monitoring) -> None:
    rng = np.random.default_rng(2)
    d = DriftMonitor(mon, THRESHOLD, 0)
    hours = drift.MAX_OPEN_HOURS + 30
    x, s, _ = batch(rng, hours, D0, 1)
    ts = D0 + np.arange(hours, dtype=np.int64)[::-1] * HOUR_MS + 7  # newest first: a wide, unclosed span
    for i in range(hours):  # no watermark at all: only the bound closes windows
        d.observe(x[i:i + 1], s[i:i + 1], ts[i:i + 1], s[i:i + 1] >= THRESHOLD)
        assert len(d.kinds["hour"].open) <= drift.MAX_OPEN_HOURS and len(d.kinds["day"].open) <= drift.MAX_OPEN_DAYS
    msg = d.snapshot(1)
    # Newest first: once the bound is reached, each older row would be the oldest window: dropped, none forced.
    assert msg["late_rows"]["hour"] == hours - drift.MAX_OPEN_HOURS
    d2 = DriftMonitor(mon, THRESHOLD, 0)
    for i in range(hours)[::-1]:  # oldest first: each new hour beyond the bound forces the oldest out
        d2.observe(x[i:i + 1], s[i:i + 1], ts[i:i + 1], s[i:i + 1] >= THRESHOLD)
    hour = d2.kinds["hour"]
    assert [w.start for w in hour.closed] == [D0 + i * HOUR_MS for i in range(hours - drift.MAX_OPEN_HOURS)]
    assert all(w.forced for w in hour.closed) and hour.late_rows == 0 and len(hour.open) == drift.MAX_OPEN_HOURS
    # More closed in one interval than a message carries: the oldest are dropped, and counted.
    d2.advance(D0 + (hours // 24 + 1) * DAY_MS)
    msg2 = d2.snapshot(1)
    closed = [w for w in msg2["closed"] if w["window"] == "hour"]
    assert len(closed) == drift.MAX_PENDING["hour"] and closed[-1]["start"] == D0 + (hours - 1) * HOUR_MS
    assert msg2["dropped_windows"] == hours - drift.MAX_PENDING["hour"] and msg2["late_rows"] == {"hour": 0, "day": 0}


def test_psi_is_the_references_and_moves_with_a_shift(mon: Monitoring) -> None:
    rng = np.random.default_rng(3)
    d = DriftMonitor(mon, THRESHOLD, 0)
    x, s, ts = batch(rng, 20_000, D0, DAY_MS)
    x2, s2, ts2 = batch(rng, 20_000, D0 + DAY_MS, DAY_MS)
    x2[:, 0] *= 2  # the amounts double on the second day
    d.observe(x, s, ts, s >= THRESHOLD)
    d.observe(x2, s2, ts2, s2 >= THRESHOLD)
    d.advance(D0 + 2 * DAY_MS)
    same, shifted = [w for w in d.snapshot(1)["closed"] if w["window"] == "day"]
    layout = d.layout
    for name, b, col in zip(layout.names, layout.bins, (*layout.cols, -1), strict=True):  # the contract's PSI
        values = s if name == "score" else x[:, col]
        assert same["psi"][name] == pytest.approx(b.psi(b.counts(values)), rel=1e-12, abs=1e-15), name
    assert max(same["psi"].values()) < 0.01  # drawn like the reference
    assert shifted["psi"]["TX_AMOUNT"] > 0.25 and shifted["psi"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] < 0.01
    assert set(same["psi"]) == {*mon.features, "score"} and not set(CLOCK_FEATURES) & set(same["psi"])
    assert same["alert_rate"] == pytest.approx((s >= THRESHOLD).mean())


def test_the_stats_message_carries_drift_and_validates(mon: Monitoring) -> None:
    rng = np.random.default_rng(4)
    d = DriftMonitor(mon, THRESHOLD, 0)
    x, s, ts = batch(rng, 500, D0, 3 * HOUR_MS)
    d.observe(x, s, ts, s >= THRESHOLD)
    d.advance(D0 + 2 * HOUR_MS)
    report = d.snapshot(5000)
    msg = StatsWindow(0).snapshot("w-1", "CPUExecutionProvider", "v1", 5000, {}, report)
    VALIDATOR.validate(msg)
    assert msg["drift"]["expected_alert_rate"] == 0.02 and len(msg["drift"]["closed"]) == 2
    empty = d.snapshot(6000)  # an interval without rows: PSI and alert rate null
    VALIDATOR.validate(StatsWindow(0).snapshot("w-1", "CPUExecutionProvider", "v1", 6000, {}, empty))
    assert empty["interval"]["rows"] == 0 and empty["interval"]["alert_rate"] is None
    assert set(empty["interval"]["psi"].values()) == {None}
    off = StatsWindow(0).snapshot("w-1", "CPUExecutionProvider", "v1", 5000, {}, drift_off("no monitoring block"))
    VALIDATOR.validate(off)
    assert not VALIDATOR.is_valid({**msg, "drift": {"enabled": True, "reason": None}})

    m = Metrics()
    m.set_drift(report)
    text = m.exposition().decode()
    last_hour = last_closed(report)["hour"]
    assert last_hour["start"] == D0 + HOUR_MS
    psi = last_hour["psi"]["TX_AMOUNT"]
    assert f'fraudstream_drift_psi{{feature="TX_AMOUNT",window="hour"}} {psi!r}' in text
    assert f'fraudstream_drift_rows{{window="hour"}} {float(last_hour["rows"])!r}' in text
    assert 'fraudstream_alert_rate{window="interval"}' in text and 'window="day"' not in text


def make_runner(tmp_path: Path, manifest_extra: dict[str, object], *flags: str) -> tuple[Runner, TerminalTable]:
    s = parse(["--data-dir", str(tmp_path), *flags])
    table = TerminalTable(tx_partitions=2, label_partitions=1)
    bundle = Bundle(tmp_path, {"model_version": "m1", "threshold": {"value": 0.5}, **manifest_extra})
    runner = Runner(s, bundle, FakeScorer(), table, FakePublisher())
    for p in (0, 1):
        runner.states[p] = TxPartition(p, s.lateness_ms)
        runner.states[p].next_offset = 0
    return runner, table


def monitoring_json(m: Monitoring) -> dict[str, object]:
    return {"reference": {"rows": m.rows, "features": {n: b.to_json() for n, b in m.features.items()},
                          "score": m.score.to_json(), "excluded": list(m.excluded)},
            "calibration": m.calibration.to_json(), "expected_alert_rate": m.expected_alert_rate,
            "expected_precision": m.expected_precision}


def test_the_runner_feeds_scored_batches_and_closes_with_the_oldest_partition_clock(
        tmp_path: Path, mon: Monitoring) -> None:
    runner, table = make_runner(tmp_path, {"monitoring": monitoring_json(mon)})
    finalize(table, D0 // DAY_MS + 1)
    lateness = runner.s.lateness_ms
    ts0 = D0 + 3 * HOUR_MS

    async def go() -> None:
        await runner.admit([rec(0, 0, ts0, "a"), rec(1, 0, ts0 + 5, "b"), rec(0, 1, ts0 + 2 * HOUR_MS, "c")])
        await runner.flush()

    asyncio.run(go())
    # Partition 1's clock (ts0 + 5 - lateness) holds the hours back; partition 0 is two hours ahead.
    assert runner.drift_watermark() == ts0 + 5 - lateness
    msg = runner.stats_message()
    VALIDATOR.validate(msg)
    d = msg["drift"]
    assert isinstance(d, dict) and d["enabled"] and d["interval"]["rows"] == 3 and d["interval"]["flags"] == 3
    assert d["closed"] == [] and d["open"] == {"hour": 2, "day": 1}
    # Rows waiting for terminal finality bound the watermark, not the partitions' clocks beyond them.
    far = D0 + 2 * DAY_MS + HOUR_MS

    async def later() -> tuple[int, int | None, int]:
        await runner.admit([rec(0, 2, far, "d"), rec(0, 3, far + 2 * HOUR_MS, "e"), rec(1, 1, far + 4 * HOUR_MS, "f")])
        waited, watermark = len(await runner.flush()), runner.drift_watermark()
        finalize(table, far // DAY_MS)
        return waited, watermark, len(await runner.flush())

    assert asyncio.run(later()) == (0, far - lateness, 3)  # partition 0's first queued row, not its clock
    assert runner.drift_watermark() == far + 2 * HOUR_MS - lateness  # all scored: the oldest clock
    closed = runner.stats_message()["drift"]["closed"]  # type: ignore[index]
    assert [(w["window"], w["start"], w["rows"]) for w in closed] == [
        ("hour", ts0, 2), ("hour", ts0 + 2 * HOUR_MS, 1), ("day", D0, 3), ("hour", far, 1)]


@pytest.mark.parametrize(("extra", "flags", "reason"), [
    ({}, (), "the bundle carries no monitoring block"),
    (None, ("--drift", "false"), "off (--drift false)"),
])
def test_drift_off_says_why_once_and_scores_anyway(tmp_path: Path, mon: Monitoring, caplog: pytest.LogCaptureFixture,
                                                    extra: dict[str, object] | None, flags: tuple[str, ...],
                                                    reason: str) -> None:
    caplog.set_level(logging.INFO, "fraudstream.worker")
    runner, table = make_runner(tmp_path, {"monitoring": monitoring_json(mon)} if extra is None else extra, *flags)
    finalize(table, D0 // DAY_MS)

    async def go() -> int:
        await runner.admit([rec(0, 0, D0, "a")])
        return len(await runner.flush())

    assert asyncio.run(go()) == 1 and runner.drift is None
    msgs = [runner.stats_message() for _ in range(2)]
    assert all(m["drift"] == {"enabled": False, "reason": msgs[0]["drift"]["reason"]} for m in msgs)  # type: ignore[index]
    assert reason in str(msgs[0]["drift"]["reason"])  # type: ignore[index]
    assert [r.getMessage() for r in caplog.records].count(f"drift monitoring: {msgs[0]['drift']['reason']}") == 1  # type: ignore[index]
    VALIDATOR.validate(msgs[0])


def test_the_setting_defaults_on() -> None:
    assert parse([]).drift and parse(["--drift"]).drift and not parse(["--drift", "false"]).drift
