"""The monitor's windows computed offline, the plain way, from the whole stream at once.

Independent of workers/monitor: it reads the rules of schemas/monitoring.py and the monitor's
docstring and applies them to complete lists of scores and labels — every window by a filter over
every label — with the trainer's metric functions and exactly rounded means. Nothing is late here:
the stream is assumed on time, as the tests publish it.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas.drift import Calibration
from trainer.evaluate import average_precision, card_precision_at_k, roc_auc

HOUR = 3_600_000
DAY = 24 * HOUR
ARRIVALS = {"arrival_1h": HOUR, "arrival_1d": DAY, "arrival_7d": 7 * DAY}
Truth = dict[tuple[str, str], dict[str, Any]]  # (key, stage) -> record


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mean(x: Any) -> float | None:
    x = list(x)
    return math.fsum(x) / len(x) if x else None


def _nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def truth(scores: list[dict[str, Any]], labels: list[dict[str, Any]], horizon_days: int, clock: int,
          calibration: Callable[[str], Calibration | None] = lambda _: None) -> Truth:
    """Every window closed once the monitor's clock (min watermark less the lateness) reached ``clock``."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in scores:  # a redelivered score: the first counts
        rows.setdefault((s["model_version"], s["tx_id"]), s)
    scored = {tx for _, tx in rows}
    horizon = horizon_days * DAY
    kept = [x for x in labels if x["tx_id"] in scored and x["reported_at"] < (x["ts"] // DAY + 1) * DAY + horizon]
    last = clock - clock % HOUR
    first = min([s["ts"] for s in scores] + [x["reported_at"] for x in labels])
    kept.sort(key=lambda x: x["reported_at"])
    reported = [x["reported_at"] for x in kept]
    by_tx: dict[str, list[dict[str, Any]]] = {}
    for x in kept:
        by_tx.setdefault(x["tx_id"], []).append(x)
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for (_, tx), r in rows.items():
        rows_of.setdefault(tx, []).append(r)
    out: Truth = {}
    for h in range(first - first % HOUR + HOUR, last + 1, HOUR):
        for kind, width in ARRIVALS.items():
            txs = {x["tx_id"] for x in kept[bisect_left(reported, h - width):bisect_left(reported, h)]}
            if txs:
                words = _words([x for tx in txs for x in by_tx[tx]], h)
                for v, rs in _by_version(r for tx in sorted(txs) for r in rows_of[tx]).items():
                    out[_key(v, kind, h - width), "closed"] = {**_record(
                        v, kind, "closed", h - width, h, h, rs, words, calibration(v), scored=False), "agreement": None}
    days = sorted({s["ts"] // DAY for s in rows.values()})
    for d in days:
        in_day = [r for r in rows.values() if r["ts"] // DAY == d]
        end = (d + 1) * DAY
        for stage, cutoff in (("provisional", end), ("feedback", end + 7 * DAY), ("final", end + horizon)):
            if cutoff > last:
                continue
            before = None if stage == "provisional" else cutoff
            words = {} if before is None else _words(kept, before)
            versions = _by_version(in_day)
            for v, rs in versions.items():
                out[_key(v, "tx_day", d * DAY), stage] = {**_record(
                    v, "tx_day", stage, d * DAY, end, before, rs, words, calibration(v), scored=True, day=d),
                    "agreement": _agreement(v, versions)}
    return out


def _agreement(version: str, versions: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """This version's flags against each other version's on the transactions both scored."""
    mine = {r["tx_id"]: r["flag"] for r in versions[version]}
    out = {}
    for other in sorted(versions):
        pairs = [(mine[r["tx_id"]], r["flag"]) for r in versions[other] if other != version and r["tx_id"] in mine]
        if pairs:
            out[other] = {"rows": len(pairs), "same_flag": sum(a == b for a, b in pairs) / len(pairs),
                          "flagged_only_here": sum(a and not b for a, b in pairs),
                          "flagged_only_there": sum(b and not a for a, b in pairs)}
    return out


def _words(labels: list[dict[str, Any]], before: int) -> dict[str, int]:
    """Each transaction's latest label reported before ``before``: the later report, fraud on a tie."""
    best: dict[str, tuple[int, int]] = {}
    for x in labels:
        if x["reported_at"] < before:
            word = (x["reported_at"], x["is_fraud"])
            best[x["tx_id"]] = max(best.get(x["tx_id"], word), word)
    return {tx: f for tx, (_, f) in best.items()}


def _by_version(rows: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["model_version"], []).append(r)
    return out


def _key(version: str, kind: str, start: int) -> str:
    return f"{version}|{kind}|{_iso(start)}"


def _record(version: str, kind: str, stage: str, start: int, end: int, before: int | None, rows: list[dict[str, Any]],
            words: dict[str, int], cal: Calibration | None, scored: bool, day: int | None = None) -> dict[str, Any]:
    score = np.array([r["score"] for r in rows], np.float64)
    flag = np.array([r["flag"] for r in rows], np.bool_)
    y = np.array([words.get(r["tx_id"], -1) for r in rows], np.int8)
    cards = np.array([r["customer_id"] for r in rows], object)
    alerts = int(flag.sum())
    rec: dict[str, Any] = {
        "schema_version": 1, "model_version": version, "kind": kind, "stage": stage, "window_start": start,
        "window_end": end, "labels_before": before, "alerts": alerts,
        "estimated_precision": None if cal is None or not alerts else _mean(cal(score[flag]).tolist()),
        "n_scored": len(rows) if scored else None,
        "alert_rate": alerts / len(rows) if scored else None,
        "mean_score": _mean(score.tolist()) if scored else None,
    }
    lab = y >= 0
    yl, sl, fl = y[lab], score[lab], flag[lab]
    n, frauds, hits = int(lab.sum()), int(yl.sum()), int((fl & (yl == 1)).sum())
    labelled = before is not None
    rec |= {
        "n_labelled": n if labelled else None,
        "label_coverage": n / len(rows) if labelled and scored else None,
        "n_fraud": frauds if labelled else None,
        "fraud_rate": frauds / n if labelled and n else None,
        "precision": hits / int(fl.sum()) if labelled and fl.any() else None,
        "recall": hits / frauds if labelled and frauds else None,
        "auc": _nan(roc_auc(yl, sl)) if labelled else None,
        "average_precision": _nan(average_precision(yl, sl)) if labelled else None,
        "card_precision_at_100": (_nan(card_precision_at_k(np.full(n, day), cards[lab], yl, sl, k=100))
                                  if labelled and day is not None else None),
    }
    return rec
