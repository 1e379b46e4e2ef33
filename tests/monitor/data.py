"""A synthetic stream for the monitor's tests: the simulator's transactions, scored by a made-up model
(fraud scores higher, so the metrics mean something), and their labels as they really arrive.

Score messages as a worker writes them (schemas/messages.py ``Score``): one model version scores
everything but a few transactions (dead-lettered by the worker, say: their labels stay unmatched), a
shadow version a share of them, some scores are redelivered. Labels: one per transaction from the
simulator's report delays, plus early reviews later overturned and ties at the same reported_at.

``events()`` is the order a live system publishes them in: a score at its ts, a label at its
reported_at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.simulate import SimConfig, labels_of, simulate

MAIN, SHADOW = "v-main", "v-shadow"
THRESHOLD = 0.5
HOUR_MS = 3_600_000


@dataclass
class Stream:
    scores: list[dict[str, Any]]
    labels: list[dict[str, Any]]

    def events(self) -> list[tuple[int, str, dict[str, Any]]]:
        """(publish time, "score" | "label", message), in publish order (ties: scores first, then input order)."""
        out = [(s["ts"], 0, i, "score", s) for i, s in enumerate(self.scores)]
        out += [(lab["reported_at"], 1, i, "label", lab) for i, lab in enumerate(self.labels)]
        out.sort(key=lambda e: e[:3])
        return [(t, kind, msg) for t, _, _, kind, msg in out]


def synth(days: int = 14, customers: int = 60, terminals: int = 120, seed: int = 1, main: str = MAIN,
          label_until_days: float | None = None) -> Stream:
    h = simulate(SimConfig(customers=customers, terminals=terminals, days=days, seed=seed))
    lab = labels_of(h, seed=seed)
    rng = np.random.default_rng(seed)
    raw = rng.normal(-1.5, 1.2, len(h)) + 3.0 * h.is_fraud
    score = (1 / (1 + np.exp(-raw))).astype(np.float32).astype(float)
    score[rng.random(len(h)) < 0.05] = 0.25  # tied scores, as a tree model gives
    scored = rng.random(len(h)) >= 0.02
    shadow = rng.random(len(h)) < 0.3
    redelivered = rng.random(len(h)) < 0.02
    scores: list[dict[str, Any]] = []
    for i in np.flatnonzero(scored).tolist():
        versions = [main, SHADOW] if shadow[i] else [main]
        for v in versions:
            s = float(score[i]) if v == main else float(np.float32(score[i] * 0.9))
            scores += [_score(h, i, s, v)] * (2 if redelivered[i] and v == main else 1)
    labels = [_label(lab, j, int(lab.is_fraud[j]), int(lab.reported_at[j])) for j in range(len(lab))]
    for j in np.flatnonzero(rng.random(len(lab)) < 0.04).tolist():  # an early review, overturned later
        gap = int(lab.reported_at[j] - lab.ts[j])
        labels.append(_label(lab, j, 1 - int(lab.is_fraud[j]), int(lab.ts[j]) + gap // 3))
    for j in np.flatnonzero(rng.random(len(lab)) < 0.01).tolist():  # a tie: fraud must win
        labels.append(_label(lab, j, 1 - int(lab.is_fraud[j]), int(lab.reported_at[j])))
    if label_until_days is not None:  # the observation ends: later reports never come
        end = SimConfig().start_ms + int(label_until_days * 24 * HOUR_MS)
        labels = [x for x in labels if x["reported_at"] < end]
    return Stream(scores, labels)


def _score(h: Any, i: int, score: float, version: str) -> dict[str, Any]:
    ts = int(h.ts[i])
    return {"schema_version": 1, "tx_id": str(h.tx_id[i]), "customer_id": str(h.customer_id[i]),
            "terminal_id": str(h.terminal_id[i]), "ts": ts, "amount": int(h.amount_cents[i]) / 100,
            "score": score, "threshold": THRESHOLD, "flag": score >= THRESHOLD, "model_version": version,
            "worker_id": "w-test", "timing": {"input_ts": ts, "consumed_at": ts, "scored_at": ts},
            "source": {"partition": i % 4, "offset": i // 4}}


def _label(lab: Any, j: int, fraud: int, reported_at: int) -> dict[str, Any]:
    return {"tx_id": str(lab.tx_id[j]), "customer_id": str(lab.customer_id[j]), "terminal_id": str(lab.terminal_id[j]),
            "ts": int(lab.ts[j]), "is_fraud": fraud, "reported_at": reported_at}
