"""The metrics of one window's rows (``schemas/monitoring.py`` says what each field means).

The ranking metrics are the trainer's own (``trainer.evaluate``: ``roc_auc``, ``average_precision``,
``card_precision_at_k``), never reimplemented, so that a live AUC means what the bundle report's
does; their NaN (one class, no fraud, no rows) becomes null. Unlabelled rows (y = -1) count in
the scored figures and never in the labelled ones.

Every number is a function of the rows as a multiset, not of their order: the trainer's metrics
group tied scores, counts are integers, and means are exactly rounded (``math.fsum``). So a window
rebuilt after a restart, whose rows come back in another order, gives the same bits.
"""

from __future__ import annotations

import math

import numpy as np

from schemas.drift import Calibration
from schemas.monitoring import METRIC_FIELDS
from trainer.evaluate import average_precision, card_precision_at_k, roc_auc
from workers.monitor.join import F64, DayBucket, Rows

Metric = float | int | None
CARD_K = 100


def _mean(x: F64) -> float | None:
    return math.fsum(x.tolist()) / len(x) if len(x) else None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _defined(x: float) -> float | None:
    return None if math.isnan(x) else x


def window_metrics(rows: Rows, calibration: Calibration | None, *, scored: bool, labelled: bool,
                   card_day: int | None = None) -> dict[str, Metric]:
    """``scored``: the rows are every scored transaction of the window (tx_day), so the per-score figures
    apply; ``labelled``: labels count (not in a provisional stage); ``card_day``: the UTC day index for
    card precision@100 (tx_day windows only)."""
    out: dict[str, Metric] = dict.fromkeys(METRIC_FIELDS)
    flag = rows.flag
    alerts = int(flag.sum())
    out["alerts"] = alerts
    if calibration is not None:
        out["estimated_precision"] = _mean(calibration(rows.score[flag]))
    if scored:
        out["n_scored"] = len(rows)
        out["alert_rate"] = _ratio(alerts, len(rows))
        out["mean_score"] = _mean(rows.score)
    if labelled:
        out |= _labelled(rows, scored, card_day)
    return out


def flag_agreement(bucket: DayBucket, version: str) -> dict[str, dict[str, Metric]]:
    """How ``version``'s flags compare with every other version's on the transactions both scored (a champion
    and its shadow): the rows, the share with the same flag, and the flags only one of them raised."""
    mine = bucket.versions[version]
    t = mine.t[:mine.n]
    out: dict[str, dict[str, Metric]] = {}
    for other, theirs in sorted(bucket.versions.items()):
        if other == version:
            continue
        at = theirs.row_of_t[t]
        both = at >= 0
        if not both.any():
            continue
        here, there = mine.flag[:mine.n][both], theirs.flag[at[both]]
        out[other] = {"rows": int(both.sum()), "same_flag": float((here == there).mean()),
                      "flagged_only_here": int((here & ~there).sum()), "flagged_only_there": int((there & ~here).sum())}
    return out


def _labelled(rows: Rows, scored: bool, card_day: int | None) -> dict[str, Metric]:
    has = rows.y >= 0
    y, score, flag = rows.y[has], rows.score[has], rows.flag[has]
    n, frauds = len(y), int(y.sum())
    flagged, hits = int(flag.sum()), int((flag & (y == 1)).sum())
    out: dict[str, Metric] = {
        "n_labelled": n, "n_fraud": frauds, "fraud_rate": _ratio(frauds, n),
        "precision": _ratio(hits, flagged), "recall": _ratio(hits, frauds),
        "auc": _defined(roc_auc(y, score)), "average_precision": _defined(average_precision(y, score)),
    }
    if scored:
        out["label_coverage"] = _ratio(n, len(rows))
    if card_day is not None:
        day = np.full(n, card_day, np.int64)
        out["card_precision_at_100"] = _defined(card_precision_at_k(day, rows.card[has], y, score, k=CARD_K))
    return out
