"""What the demo shows of the model's life, from the topics: drift per event-time day and live metrics per
transaction day.

- ``day_drift``: the ``day`` windows the workers close in their latency-stats messages
  (``workers/drift.py``), one per worker and day, merged by adding their bin counts, and the PSI of each
  column recomputed on the sum against the bundle's reference (``schemas/drift.py``);
- ``tx_days``: the model monitor's ``tx_day`` records (``model-metrics``, compacted: the last record of a
  key is its word), one per model version and UTC day, at its latest stage;
- ``waiting_for``: the days whose monitor records should be in by now (what the demo waits for before
  it reads them back).

Days are numbered from the UTC midnight before the first history transaction (``origin_ms``), so that
the report's day numbers are ``--drift-from-day``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.drift import PSI_ALERT, PSI_WARN, Monitoring
from schemas.features import DAY_MS, FEEDBACK_DELAY_DAYS, HOUR_MS
from workers.drift import SCORE

# How far behind the end of the load the monitor's clock may be and the demo still waits for a window it
# closes: its lateness (1 h by default) and the time its slowest partition's last record lags the clock.
MONITOR_MARGIN_MS = 2 * HOUR_MS
LABELLED_STAGES = ("feedback", "final")


@dataclass(frozen=True)
class DayDrift:
    """One event-time day of every worker's drift windows, merged."""

    start: int                   # ms, UTC midnight
    rows: int
    flags: int
    psi: dict[str, float]        # column (monitored feature or "score") -> PSI against the reference
    workers: int                 # windows merged

    @property
    def alert_rate(self) -> float:
        return self.flags / self.rows if self.rows else float("nan")


def level(psi: float) -> str:
    """What the alert rules say of a PSI: ok, warn (> PSI_WARN) or alert (> PSI_ALERT)."""
    return "alert" if psi > PSI_ALERT else "warn" if psi > PSI_WARN else "ok"


def day_drift(stats: Iterable[Mapping[str, Any]], m: Monitoring) -> list[DayDrift]:
    """The closed ``day`` windows of the latency-stats messages ``stats``, merged per day, oldest first."""
    bins = {**m.features, SCORE: m.score}
    counts: dict[int, dict[str, np.ndarray]] = {}
    totals: dict[int, list[int]] = {}  # day start -> [rows, flags, windows]
    for s in stats:
        for w in (s.get("drift") or {}).get("closed", ()):
            if w["window"] != "day":
                continue
            day = counts.setdefault(int(w["start"]), {})
            for name, c in w["counts"].items():
                day[name] = day.get(name, 0) + np.asarray(c, dtype=np.int64)
            t = totals.setdefault(int(w["start"]), [0, 0, 0])
            t[0], t[1], t[2] = t[0] + int(w["rows"]), t[1] + int(w["flags"]), t[2] + 1
    out = []
    for start in sorted(counts):
        rows, flags, windows = totals[start]
        if rows:
            psi = {n: bins[n].psi(c) for n, c in counts[start].items() if n in bins}
            out.append(DayDrift(start, rows, flags, psi, windows))
    return out


def drift_losses(stats: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """What the workers' drift windows could not count (their stats say): late rows per kind, windows
    dropped, windows closed before the watermark passed them (forced)."""
    out = {"late_rows_hour": 0, "late_rows_day": 0, "dropped_windows": 0, "forced_windows": 0}
    for s in stats:
        d = s.get("drift") or {}
        late = d.get("late_rows") or {}
        out["late_rows_hour"] += int(late.get("hour", 0))
        out["late_rows_day"] += int(late.get("day", 0))
        out["dropped_windows"] += int(d.get("dropped_windows", 0))
        out["forced_windows"] += sum(1 for w in d.get("closed", ()) if w.get("forced"))
    return out


def tx_days(records: Iterable[tuple[bytes | None, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The monitor's ``tx_day`` records (key, value) in topic order: the last of each key, by day then version."""
    last: dict[bytes | None, Mapping[str, Any]] = {}
    for key, value in records:
        if value.get("kind") == "tx_day":
            last[key] = value
    return sorted((dict(v) for v in last.values()), key=lambda v: (v["window_start"], v["model_version"]))


def waiting_for(days: Iterable[Mapping[str, Any]], first_ms: int, clock_ms: int) -> list[tuple[int, str]]:
    """(day start, stage) the monitor should have published by the time its clock is near ``clock_ms`` and
    has not: ``provisional`` for every day that ended before it, ``feedback`` for those that ended the
    feedback delay before. ``first_ms``: the first transaction's event time."""
    have = {int(d["window_start"]): str(d["stage"]) for d in days}
    missing = []
    start = first_ms // DAY_MS * DAY_MS
    while start + DAY_MS + MONITOR_MARGIN_MS <= clock_ms:
        need = "feedback" if start + DAY_MS + FEEDBACK_DELAY_DAYS * DAY_MS + MONITOR_MARGIN_MS <= clock_ms \
            else "provisional"
        got = have.get(start)
        if got is None or (need == "feedback" and got not in LABELLED_STAGES):
            missing.append((start, need))
        start += DAY_MS
    return missing


def day_number(ms: int, origin_ms: int) -> float:
    """``ms`` in days since ``origin_ms`` (the UTC midnight before the first history transaction)."""
    return (ms - origin_ms) / DAY_MS


def first_alert(drift: Iterable[DayDrift], after_ms: int) -> DayDrift | None:
    """The first day starting at or after ``after_ms``'s day whose score or any feature PSI passes PSI_ALERT."""
    day0 = after_ms // DAY_MS * DAY_MS
    return next((d for d in drift if d.start >= day0 and max(d.psi.values()) > PSI_ALERT), None)
