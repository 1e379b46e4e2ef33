"""The demo report's part on the model: drift per day and the monitor's live metrics, as tables and plots.

Input: the report dict's ``watch``, ``drift_days`` (``watch.day_drift``) and ``tx_days`` (the monitor's
``tx_day`` records). Days are numbered from the first history day (``watch.origin_ms``), as
``--drift-from-day`` counts them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ops.bench import plots
from ops.bench.stats import markdown_table
from ops.demo.watch import LABELLED_STAGES, day_number, level
from schemas.drift import PSI_ALERT, PSI_WARN
from workers.drift import SCORE

DRIFT_PLOT, PRECISION_PLOT = "drift_psi.png", "live_precision.png"


def _date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None or x != x else format(x, spec)


def _worst(psi: Mapping[str, float]) -> tuple[str, float]:
    name = max((n for n in psi if n != SCORE), key=lambda n: psi[n])
    return name, psi[name]


def drift_rows(r: Mapping[str, Any]) -> list[dict[str, object]]:
    """One row per event-time day: rows, alert rate, the score's PSI, the worst feature's, what the rules say."""
    w = r["watch"]
    start = w.get("drift_start_ms")
    out = []
    for d in r.get("drift_days", []):
        name, worst = _worst(d["psi"])
        top = max(worst, d["psi"][SCORE])
        drifted = start is not None and d["start"] + 86_400_000 > start
        out.append({"day": f"{day_number(d['start'], w['origin_ms']):.0f} ({_date(d['start'])})"
                           + (" *" if drifted else ""),
                    "rows": d["rows"], "alert_rate": f"{_f(d['alert_rate'], '.2%')}",
                    "score": d["psi"][SCORE], "worst": f"{name} {worst:.3f}",
                    "rule": {"ok": "-", "warn": "DriftWarning", "alert": "DriftCritical"}[level(top)]
                    + (" (cold start)" if d["start"] < w.get("warm_from_ms", 0) and level(top) != "ok" else "")})
    return out


def live_rows(r: Mapping[str, Any]) -> list[dict[str, object]]:
    """One row per transaction day and model version: the monitor's latest stage of it."""
    origin = r["watch"]["origin_ms"]
    return [{"day": f"{day_number(d['window_start'], origin):.0f} ({_date(d['window_start'])})",
             "stage": d["stage"], "scored": d["n_scored"], "coverage": _f(d["label_coverage"], ".0%"),
             "alerts": d["alerts"], "precision": _f(d["precision"], ".3f"),
             "estimated": _f(d["estimated_precision"], ".3f"), "recall": _f(d["recall"], ".3f"),
             "auc": _f(d["auc"], ".3f"), "cp100": _f(d["card_precision_at_100"], ".3f")}
            for d in r.get("tx_days", [])]


def headline(r: Mapping[str, Any]) -> list[str]:
    """What a newcomer should see: the drift, when the alert fired, what the precision did."""
    w, drift = r["watch"], r["config"].get("drift", {})
    lines = []
    if drift.get("kind", "none") == "none":
        lines.append("No drift injected (`--drift none`).")
    else:
        what = {"amount": f"amounts x{drift['factor']:g}",
                "fraud": f"a wave of compromised terminals (x{drift['factor']:g})"}[drift["kind"]]
        start = w.get("drift_start_ms")
        when = f"day {day_number(start, w['origin_ms']):.2f}" if start is not None else "the load phase"
        lines.append(f"Drift injected: {what} from {when} (`--drift {drift['kind']} --drift-from-day "
                     f"{drift['from_day']}`).")
        alert = w.get("first_alert_ms")
        if alert is not None:
            day = next(d for d in r["drift_days"] if d["start"] == alert)
            name, worst = _worst(day["psi"])
            lines.append(f"**DriftCritical fires on day {day_number(alert, w['origin_ms']):.0f}**: {name} PSI "
                         f"{worst:.3f}, score PSI {day['psi'][SCORE]:.3f} (> {PSI_ALERT}).")
        elif "drift_days" in r:
            lines.append("No day after the drift passed PSI 0.25 on the score or a feature.")
    lines += _precision_line(r)
    return lines


def _precision_line(r: Mapping[str, Any]) -> list[str]:
    start = r["watch"].get("drift_start_ms")
    labelled = [d for d in r.get("tx_days", []) if d["stage"] in LABELLED_STAGES and d["precision"] is not None]
    if not labelled:
        return []

    def mean(key: str, rows: Sequence[Mapping[str, Any]]) -> str:
        vals = [float(d[key]) for d in rows if d[key] is not None]
        return _f(sum(vals) / len(vals) if vals else None, ".3f")

    parts = [f"the bundle's estimate at training {_f(r['watch'].get('expected_precision'), '.3f')}"]
    warm = r["watch"].get("warm_from_ms", 0)
    spans = [("before the drift", [d for d in labelled if d["window_start"] >= warm
                                   and (start is None or d["window_end"] <= start)]),
             ("after", [d for d in labelled if start is not None and d["window_end"] > start])]
    for label, rows in spans:
        if rows:
            parts.append(f"{label} (days {len(rows)}) realised {mean('precision', rows)}, estimated "
                         f"{mean('estimated_precision', rows)}")
    return [f"Live precision at the threshold, mean over the days with 7 days of labels (after the cold start): "
            f"{'; '.join(parts)}. The estimate comes from the scores alone: it trusts the model, so it cannot see "
            "a model that is confidently wrong on shifted inputs; the PSI can."]


def _losses(loss: Mapping[str, int] | None) -> list[str]:
    if not loss or not any(loss.values()):
        return []
    return [f"What the workers' drift windows could not count: {loss['late_rows_day']:,} rows late for their day, "
            f"{loss['late_rows_hour']:,} for their hour; {loss['dropped_windows']:,} windows dropped (a backlog "
            f"closes more hours per stats message than it carries); {loss['forced_windows']:,} closed early.", ""]


def markdown(r: Mapping[str, Any]) -> list[str]:
    if "watch" not in r:
        return []
    out = ["## The model, live", "", *headline(r), ""]
    if r.get("drift_days"):
        out += [f"Drift per event-time day (the workers' `day` windows merged; PSI against the bundle's reference; "
                f"warn > {PSI_WARN}, alert > {PSI_ALERT}; `*` = drifted rows in the day; expected alert rate "
                f"{_f(r['watch'].get('expected_alert_rate'), '.2%')}). The first days show a cold start: the "
                "workers' customer and terminal windows fill up over the first 30 days, so their count features "
                "sit below the reference at first (marked cold start).", "",
                markdown_table(drift_rows(r), [("day", "day", ""), ("rows", "rows", ","),
                                               ("alert_rate", "alert rate", ""), ("score", "score PSI", ".3f"),
                                               ("worst", "worst feature PSI", ""), ("rule", "alert", "")]), ""]
        out += _losses(r["watch"].get("drift_losses"))
    if r.get("tx_days"):
        out += ["The model monitor's transaction days (`model-metrics`): provisional = scores only (the "
                "estimated precision from the calibrated scores), feedback = the labels of the 7 days after the "
                "day; precision, recall, AUC and card precision@100 on the labelled rows.", "",
                markdown_table(live_rows(r), [(k, k, "") for k in ("day", "stage", "scored", "coverage", "alerts",
                                                                   "precision", "estimated", "recall", "auc",
                                                                   "cp100")]), ""]
    elif "tx_days" in r:
        out += ["The model monitor published no transaction day (see its log).", ""]
    return out


def plot_files(r: Mapping[str, Any]) -> list[str]:
    """The plots ``write_plots`` draws for ``r``: each when it has something to draw."""
    return [name for name, key in ((DRIFT_PLOT, "drift_days"), (PRECISION_PLOT, "tx_days")) if r.get(key)]


def write_plots(r: Mapping[str, Any], out: Path) -> None:
    """drift_psi.png and live_precision.png under ``out`` (when there is something to draw)."""
    w = r.get("watch")
    if w is None:
        return
    start = w.get("drift_start_ms")
    vline = None if start is None else ("drift starts", day_number(start, w["origin_ms"]))
    warm = day_number(w.get("warm_from_ms", w["origin_ms"]), w["origin_ms"])
    cold = ("cold start (state filling)", 0.0, warm) if warm > 0 else None
    days = r.get("drift_days", [])
    if days:
        x = [day_number(d["start"], w["origin_ms"]) + 0.5 for d in days]
        plots.over_days({"score": (x, [d["psi"][SCORE] for d in days]),
                         "worst feature": (x, [_worst(d["psi"])[1] for d in days])},
                        out / DRIFT_PLOT, "PSI per event-time day against the training reference", "PSI",
                        {f"warn {PSI_WARN}": PSI_WARN, f"alert {PSI_ALERT}": PSI_ALERT}, vline, log_y=True,
                        span=cold)
    tx = r.get("tx_days", [])
    if tx:
        lab = [d for d in tx if d["stage"] in LABELLED_STAGES and d["precision"] is not None]
        est = [d for d in tx if d["estimated_precision"] is not None]
        def mid(ds: Sequence[Mapping[str, Any]]) -> list[float]:
            return [day_number(d["window_start"], w["origin_ms"]) + 0.5 for d in ds]

        ref = w.get("expected_precision")
        plots.over_days({"realised (7 days of labels)": (mid(lab), [d["precision"] for d in lab]),
                         "estimated (calibrated scores)": (mid(est), [d["estimated_precision"] for d in est])},
                        out / PRECISION_PLOT, "precision at the threshold per transaction day", "precision",
                        {"the bundle's estimate": ref} if ref is not None else None, vline, span=cold)
