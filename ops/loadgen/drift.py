"""Drift injected into a history from a given day on: what the worker's drift monitor must see.

Pure functions of a ``History`` (the arrays are copied, never changed in place), so that a test
applies exactly what ``python -m ops.loadgen --drift-from-day N`` sends, offline. The labels follow
the drifted history: make them afterwards (``trainer.simulate.labels_of``).

Kinds:

- ``amount``: every amount from day N on multiplied by ``factor`` (default 2.0), rounded to whole
  cents, at least a cent and at most ``AMOUNT_MAX``: a currency change, or a new merchant mix. The
  ground truth does not move (a genuine purchase that costs more is still genuine), so the model's
  inputs shift while fraud does not: the amount features' PSI should alarm, and the score's may.
- ``fraud``: a new wave of terminal compromises (the simulator's scenario 2) from day N on: each day
  ``round((factor - 1) * 2)`` more terminals than the simulator's 2 are compromised for 28 days, and
  every transaction at one of them in its window becomes a fraud. The population's spending does not
  move; the terminal risk features, the score and the alert rate do, once labels come in.

``from_day`` counts UTC days from the history's first day, as ``--history-days`` does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from schemas.messages import AMOUNT_MAX
from trainer.simulate import DAY_MS, TERMINAL_COMPROMISE_DAYS, TERMINAL_PICKS_A_DAY, History

KINDS = ("amount", "fraud")
MAX_CENTS = int(AMOUNT_MAX * 100)
SCENARIO_TERMINAL = 2


def first_day(h: History) -> int:
    """The UTC day number (since the epoch) of the history's first transaction."""
    return int(h.ts[0]) // DAY_MS if len(h) else 0


def inject(h: History, kind: str, from_day: int, factor: float = 2.0, seed: int = 0) -> History:
    """``h`` with drift of ``kind`` from its ``from_day``-th day on (see the module's docstring)."""
    if kind not in KINDS:
        raise ValueError(f"drift kind {kind!r}: choose one of {', '.join(KINDS)}")
    if not factor > 0:
        raise ValueError(f"drift factor must be > 0, got {factor}")
    if from_day < 0:
        raise ValueError(f"drift from day must be >= 0, got {from_day}")
    after = h.ts // DAY_MS >= first_day(h) + from_day
    if kind == "amount":
        return scale_amounts(h, after, factor)
    return compromise_terminals(h, after, round((factor - 1) * TERMINAL_PICKS_A_DAY), seed)


def scale_amounts(h: History, rows: np.ndarray, factor: float) -> History:
    cents = h.amount_cents.copy()
    cents[rows] = np.clip(np.round(cents[rows] * factor), 1, MAX_CENTS).astype(np.int64)
    return replace(h, amount_cents=cents)


def compromise_terminals(h: History, rows: np.ndarray, picks_a_day: int, seed: int) -> History:
    """``picks_a_day`` random terminals (among those of the history) compromised on each day of ``rows``
    for ``TERMINAL_COMPROMISE_DAYS`` days from their pick: their transactions in the window become frauds."""
    if picks_a_day <= 0 or not rows.any():
        return h
    rng = np.random.Generator(np.random.PCG64(seed))
    terminals = np.unique(h.terminal_id)
    day = h.ts // DAY_MS
    days = np.arange(int(day[rows].min()), int(day.max()) + 1)
    picked = np.zeros(len(h), dtype=bool)
    for d in days.tolist():
        chosen = rng.choice(terminals, size=min(picks_a_day, len(terminals)), replace=False)
        picked |= np.isin(h.terminal_id, chosen) & (day >= d) & (day < d + TERMINAL_COMPROMISE_DAYS)
    hit = picked & rows
    scenario = h.scenario.copy()
    scenario[hit & (scenario == 0)] = SCENARIO_TERMINAL
    scenario[hit & (scenario > SCENARIO_TERMINAL)] = SCENARIO_TERMINAL  # the lowest number, as the simulator's
    is_fraud = h.is_fraud.copy()
    is_fraud[hit] = 1
    return replace(h, is_fraud=is_fraud, scenario=scenario)
