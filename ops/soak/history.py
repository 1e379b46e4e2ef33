"""A year of history whose customers and terminals come and go: simulator cohorts, each with ids of
its own, that live a few months, one starting every ``every_days``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from trainer.simulate import History, SimConfig, simulate, tx_ids


@dataclass(frozen=True)
class Churn:
    days: int = 365
    cohort_days: int = 120     # how long a cohort of customers and terminals lives
    every_days: int = 30       # a new cohort starts this often
    customers: int = 60        # per cohort
    terminals: int = 120       # per cohort
    start: str = "2018-01-01"
    seed: int = 0


def year_history(c: Churn) -> History:
    """The cohorts' transactions, re-sorted by (ts, cohort order) and re-numbered. Cohort ``k`` starts on
    day ``k * every_days`` and ends ``cohort_days`` later (or at ``days``); its ids are ``k<k>c..`` and
    ``k<k>t..``, so none comes back after its cohort ends."""
    parts: list[History] = []
    first = dt.date.fromisoformat(c.start)
    for k, begin in enumerate(range(0, c.days, c.every_days)):
        span = min(c.cohort_days, c.days - begin)
        start = (first + dt.timedelta(days=begin)).isoformat()
        h = simulate(SimConfig(c.customers, c.terminals, span, start, c.seed * 1000 + k))
        parts.append(History(h.tx_id, h.ts, np.char.add(f"k{k}", h.customer_id), np.char.add(f"k{k}", h.terminal_id),
                             h.amount_cents, h.is_fraud, h.scenario))
    ts = np.concatenate([p.ts for p in parts])
    order = np.argsort(ts, kind="stable")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[order]

    return History(tx_ids(len(ts)), ts[order], cat("customer_id"), cat("terminal_id"), cat("amount_cents"),
                   cat("is_fraud"), cat("scenario"))
