"""The demo's view of the model: drift windows merged across workers, the monitor's days, what to wait for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ops.demo.report_model import drift_rows, headline, live_rows, plot_files
from ops.demo.watch import day_drift, first_alert, level, tx_days, waiting_for
from schemas.drift import PSI_ALERT, PSI_WARN, Bins, Calibration, Monitoring, psi
from schemas.features import DAY_MS, HOUR_MS

D0 = 20_000 * DAY_MS


def _monitoring() -> Monitoring:
    even = Bins(np.array([1.0, 2.0]), np.array([0.25, 0.5, 0.25]))
    return Monitoring(features={"A": even}, score=Bins(np.array([0.5]), np.array([0.9, 0.1])), excluded=(),
                      calibration=Calibration("isotonic", np.array([0.0, 1.0]), np.array([0.0, 1.0])),
                      expected_alert_rate=0.1, expected_precision=0.5, rows=100)


def _window(start: int, a: list[int], score: list[int], flags: int, kind: str = "day") -> dict[str, Any]:
    return {"window": kind, "start": start, "end": start + DAY_MS, "rows": sum(a), "flags": flags,
            "counts": {"A": a, "score": score}}


def test_day_windows_merge_across_workers_by_adding_counts() -> None:
    stats = [{"drift": {"closed": [_window(D0, [1, 2, 1], [3, 1], 1), _window(D0, [0, 0, 0], [0, 0], 0, "hour")]}},
             {"drift": {"enabled": False, "reason": "off"}},
             {"drift": {"closed": [_window(D0, [3, 6, 3], [10, 2], 2), _window(D0 + DAY_MS, [5, 0, 0], [5, 0], 0)]}}]
    days = day_drift(stats, _monitoring())
    assert [(d.start, d.rows, d.flags, d.workers) for d in days] == [(D0, 16, 3, 2), (D0 + DAY_MS, 5, 0, 1)]
    assert days[0].psi["A"] == pytest.approx(psi([0.25, 0.5, 0.25], [4, 8, 4]))
    assert days[0].psi["score"] == pytest.approx(psi([0.9, 0.1], [13, 3]))
    assert days[0].alert_rate == pytest.approx(3 / 16)
    assert days[0].psi["A"] < PSI_ALERT < days[1].psi["A"]
    assert first_alert(days, D0 + 3 * HOUR_MS) == days[1], "the first day past the bound from the drift's day on"
    assert first_alert(days, D0 + 2 * DAY_MS) is None


def test_levels_follow_the_alert_rules() -> None:
    assert [level(x) for x in (0.0, PSI_WARN, PSI_WARN + 1e-9, PSI_ALERT, PSI_ALERT + 1e-9)] == \
        ["ok", "ok", "warn", "warn", "alert"]


def _day(start: int, stage: str, version: str = "v1", **metrics: Any) -> dict[str, Any]:
    base = {"kind": "tx_day", "stage": stage, "model_version": version, "window_start": start,
            "window_end": start + DAY_MS, "n_scored": 10, "label_coverage": None, "alerts": 2, "precision": None,
            "estimated_precision": 0.4, "recall": None, "auc": None, "card_precision_at_100": None}
    return {**base, **metrics}


def test_the_last_record_of_each_key_is_the_days_word() -> None:
    recs = [(b"v1|tx_day|a", _day(D0, "provisional")), (b"v1|arrival_1h|x", {"kind": "arrival_1h"}),
            (b"v1|tx_day|b", _day(D0 + DAY_MS, "provisional")), (b"v1|tx_day|a", _day(D0, "feedback", precision=0.5))]
    days = tx_days(recs)
    assert [(d["window_start"], d["stage"]) for d in days] == [(D0, "feedback"), (D0 + DAY_MS, "provisional")]


def test_the_demo_waits_for_the_stages_the_monitors_clock_has_passed() -> None:
    first = D0 + 5 * HOUR_MS
    clock = D0 + 8 * DAY_MS + 3 * HOUR_MS  # day 0 has had its 7 days of labels (and the margin); day 7 ended
    want = waiting_for([], first, clock)
    assert want == [(D0, "feedback")] + [(D0 + i * DAY_MS, "provisional") for i in range(1, 8)]
    have = [_day(D0 + i * DAY_MS, "provisional") for i in range(8)]
    assert waiting_for(have, first, clock) == [(D0, "feedback")]
    assert waiting_for([_day(D0, "final"), *have[1:]], first, clock) == []
    assert waiting_for(have[:7], first, clock) == [(D0, "feedback"), (D0 + 7 * DAY_MS, "provisional")]
    assert waiting_for([], first, clock - 2 * HOUR_MS)[0] == (D0, "provisional"), "within the margin: not yet"


def _report(drift_kind: str = "amount") -> dict[str, Any]:
    def psi_of(a: float, s: float) -> dict[str, float]:
        return {"A": a, "B": a / 2, "score": s}
    return {
        "config": {"drift": {"kind": drift_kind, "from_day": 2, "factor": 2.0}},
        "watch": {"origin_ms": D0, "warm_from_ms": D0 + DAY_MS // 2, "drift_start_ms": D0 + 2 * DAY_MS + 6 * HOUR_MS,
                  "expected_precision": 0.5,
                  "expected_alert_rate": 0.05, "first_alert_ms": D0 + 2 * DAY_MS},
        "drift_days": [{"start": D0 + i * DAY_MS, "rows": 100, "flags": 5, "workers": 2, "alert_rate": 0.05,
                        "psi": psi_of(*p)} for i, p in enumerate([(0.01, 0.02), (0.15, 0.05), (0.9, 0.3)])],
        "tx_days": [_day(D0, "feedback", precision=0.6, estimated_precision=0.5),
                    _day(D0 + 2 * DAY_MS, "feedback", precision=0.1, estimated_precision=0.7),
                    _day(D0 + 3 * DAY_MS, "provisional")],
    }


def test_the_report_says_when_the_alert_fired_and_what_precision_did() -> None:
    r = _report()
    rows = drift_rows(r)
    assert [(x["day"].split(" ")[0], x["rule"]) for x in rows] == [("0", "-"), ("1", "DriftWarning"),
                                                                    ("2", "DriftCritical")]
    assert rows[2]["day"].endswith("*") and not rows[1]["day"].endswith("*"), "the drifted day is marked"
    cold = {**r, "watch": {**r["watch"], "warm_from_ms": D0 + 2 * DAY_MS}}
    assert [x["rule"] for x in drift_rows(cold)] == ["-", "DriftWarning (cold start)", "DriftCritical"]
    text = "\n".join(headline(r))
    assert "amounts x2 from day 2.25" in text
    assert "DriftCritical fires on day 2**: A PSI 0.900, score PSI 0.300" in text
    assert "before the drift (days 1) realised 0.600" not in text, "day 0 is a cold start"
    r["watch"]["warm_from_ms"] = D0
    text = "\n".join(headline(r))
    assert "before the drift (days 1) realised 0.600, estimated 0.500" in text
    assert "after (days 1) realised 0.100, estimated 0.700" in text
    assert [x["stage"] for x in live_rows(r)] == ["feedback", "feedback", "provisional"]
    assert plot_files(r) == ["drift_psi.png", "live_precision.png"]
    none = _report("none")
    assert "No drift injected" in "\n".join(headline(none))
