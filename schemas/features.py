"""The feature vector: one definition, an offline (vectorised) path and an online path.

Both paths compute every feature in float64 from exact integers (amounts in cents, counts),
with the *same* arithmetic expression, and cast to float32 last, so that they agree to the bit.

Definitions (Le Borgne et al., *Reproducible ML for Credit Card Fraud Detection*, ch. 3, with
whole-day terminal buckets):

- ``TX_AMOUNT``: cents / 100.
- ``TX_DURING_WEEKEND``: 1 when the UTC weekday of ``ts`` is Saturday or Sunday.
- ``TX_DURING_NIGHT``: 1 when the UTC hour of ``ts`` is <= 6.
- ``CUSTOMER_ID_NB_TX_{N}DAY_WINDOW`` / ``CUSTOMER_ID_AVG_AMOUNT_{N}DAY_WINDOW`` for N in 1, 7,
  30: the customer's transactions with ``ts`` in ``(ts - N days, ts]`` that come at or before
  this one in the canonical order ``(ts, tx_id)`` — the current transaction included. Mean =
  sum of cents / (100 * count).
- ``CUSTOMER_AMOUNT_RATIO_30DAY`` (ours, beyond the handbook): amount / the 30-day mean above,
  i.e. ``cents * count / sum_cents`` — a transaction far above the card's habit.
- ``TERMINAL_ID_NB_TX_{N}DAY_WINDOW`` / ``TERMINAL_ID_RISK_{N}DAY_WINDOW``: with ``d`` the UTC
  day of the transaction and ``D`` the feedback delay (7 days), the terminal's transactions
  and labelled frauds in the whole days ``[d - D - N, d - D - 1]``. Risk = frauds / count, 0
  when count is 0. A label of a transaction on day ``d - D - 1`` or earlier arrives (at
  ``ts + D``) before day ``d`` begins, so no label is used before it would have arrived.

Canonical order and lateness: the online path is exact when each customer's transactions
arrive in non-decreasing ``ts``; a transaction that arrives late still sees exactly the
transactions at or before it, but those already scored after it are not re-scored (the worker
bounds lateness and dead-letters what is later).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
FEEDBACK_DELAY_DAYS = 7
CUSTOMER_WINDOWS_DAYS = (1, 7, 30)
TERMINAL_WINDOWS_DAYS = (1, 7, 30)
# State horizon: customers keep 30 days; terminals need days back to d - D - 30.
CUSTOMER_HORIZON_MS = max(CUSTOMER_WINDOWS_DAYS) * DAY_MS
TERMINAL_HORIZON_DAYS = FEEDBACK_DELAY_DAYS + max(TERMINAL_WINDOWS_DAYS)


def _names() -> tuple[str, ...]:
    names = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
    for n in CUSTOMER_WINDOWS_DAYS:
        names += [f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"]
    for n in TERMINAL_WINDOWS_DAYS:
        names += [f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW", f"TERMINAL_ID_RISK_{n}DAY_WINDOW"]
    names.append("CUSTOMER_AMOUNT_RATIO_30DAY")
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
N_FEATURES = len(FEATURE_NAMES)
FEATURE_DTYPE = "float32"
_SPEC = f"{FEATURE_NAMES}|delay={FEEDBACK_DELAY_DAYS}|order=ts,tx_id|terminal=day-buckets"
FEATURE_VERSION = f"fs1-{hashlib.sha256(_SPEC.encode()).hexdigest()[:12]}"

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def day_of(ts_ms: int) -> int:
    return ts_ms // DAY_MS


def _calendar(ts_ms: int) -> tuple[float, float]:
    day = ts_ms // DAY_MS
    weekend = 1.0 if (day + 3) % 7 >= 5 else 0.0  # 1970-01-01 was a Thursday (Monday = 0)
    night = 1.0 if (ts_ms - day * DAY_MS) // HOUR_MS <= 6 else 0.0
    return weekend, night


# --------------------------------------------------------------------------------------------
# Offline: vectorised over a whole history.
# --------------------------------------------------------------------------------------------


def _dense(ids: npt.NDArray[np.str_]) -> I64:
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.astype(np.int64)


def _composite(group: I64, value: I64, span: int) -> I64:
    """``group * span + value`` with an overflow check (value in [0, span))."""
    if len(group) and int(group.max()) + 1 > np.iinfo(np.int64).max // max(span, 1):
        raise ValueError("history too large for int64 composite keys; split it by customer")
    return group * np.int64(span) + value


def offline_features(
    tx_id: npt.NDArray[np.str_],
    ts: I64,
    customer_id: npt.NDArray[np.str_],
    terminal_id: npt.NDArray[np.str_],
    amount_cents: I64,
    label_terminal_id: npt.NDArray[np.str_],
    label_ts: I64,
    label_is_fraud: npt.NDArray[np.integer],
) -> F32:
    """Feature rows (float32, ``FEATURE_NAMES`` order) for every transaction, in input order.

    Labels are given with the transaction's terminal and ``ts``; duplicate transactions
    (the same ``tx_id``) must be removed by the caller (the data-quality checks do).
    """
    n = len(ts)
    ts = ts.astype(np.int64)
    cents = amount_cents.astype(np.int64)
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    out[:, 0] = cents / 100.0
    day = ts // DAY_MS
    out[:, 1] = ((day + 3) % 7 >= 5).astype(np.float64)
    out[:, 2] = ((ts - day * DAY_MS) // HOUR_MS <= 6).astype(np.float64)

    # Customers: sort by (customer, ts, tx_id); a window is a contiguous run ending at the row.
    cust = _dense(customer_id)
    order = np.lexsort((tx_id, ts, cust))
    t0 = int(ts.min()) if n else 0
    span = int(ts.max()) - t0 + CUSTOMER_HORIZON_MS + 1 if n else 1
    key = _composite(cust[order], ts[order] - t0, span)
    prefix = np.concatenate(([0], np.cumsum(cents[order])))
    idx = np.arange(n)
    col = 3
    counts30 = sums30 = np.zeros(0, dtype=np.int64)
    for w in CUSTOMER_WINDOWS_DAYS:
        start = np.searchsorted(key, key - w * DAY_MS, side="right")
        count = idx - start + 1
        total = prefix[idx + 1] - prefix[start]
        out[order, col] = count
        out[order, col + 1] = total / (100.0 * count)
        col += 2
        if w == 30:
            counts30, sums30 = count, total
    ratio_col = N_FEATURES - 1
    out[order, ratio_col] = (cents[order] * counts30) / sums30

    # Terminals: day buckets of (count, frauds), prefix sums per terminal over sorted bucket keys.
    all_terms = np.concatenate((terminal_id, label_terminal_id))
    term = _dense(all_terms)
    tx_term, lab_term = term[:n], term[n:]
    lab_day = label_ts.astype(np.int64) // DAY_MS
    d0 = int(min(day.min() if n else 0, lab_day.min() if len(lab_day) else 0)) - TERMINAL_HORIZON_DAYS - 1
    dspan = int(max(day.max() if n else 0, lab_day.max() if len(lab_day) else 0)) - d0 + 2
    tx_keys = _composite(tx_term, day - d0, dspan)
    fraud = label_is_fraud.astype(np.int64) != 0
    lab_keys = _composite(lab_term[fraud], lab_day[fraud] - d0, dspan)
    tx_sorted = np.sort(tx_keys)
    lab_sorted = np.sort(lab_keys)

    def between(sorted_keys: I64, lo: I64, hi: I64) -> I64:
        """Number of keys in [lo, hi]."""
        res: I64 = np.searchsorted(sorted_keys, hi, side="right") - np.searchsorted(sorted_keys, lo, side="left")
        return res

    for w in TERMINAL_WINDOWS_DAYS:
        hi = tx_keys - FEEDBACK_DELAY_DAYS - 1
        lo = tx_keys - FEEDBACK_DELAY_DAYS - w
        count = between(tx_sorted, lo, hi)
        frauds = between(lab_sorted, lo, hi)
        out[:, col] = count
        safe = np.maximum(count, 1)
        out[:, col + 1] = np.where(count > 0, frauds / safe, 0.0)
        col += 2
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Online: one event at a time, from state.
# --------------------------------------------------------------------------------------------


@dataclass
class CustomerHistory:
    """One customer's transactions within the horizon, sorted by (ts, tx_id), with prefix sums."""

    keys: list[tuple[int, str]] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    prefix: list[int] = field(default_factory=lambda: [0])

    def add(self, ts: int, tx_id: str, cents: int) -> bool:
        """Add a transaction; False (and no change) when (ts, tx_id) is already in state."""
        k = (ts, tx_id)
        if not self.keys or k > self.keys[-1]:  # the common case: in order
            self.keys.append(k)
            self.ts.append(ts)
            self.prefix.append(self.prefix[-1] + cents)
            return True
        i = bisect.bisect_left(self.keys, k)
        if i < len(self.keys) and self.keys[i] == k:
            return False
        amounts = [self.prefix[j + 1] - self.prefix[j] for j in range(len(self.keys))]
        self.keys.insert(i, k)
        self.ts.insert(i, ts)
        amounts.insert(i, cents)
        self.prefix = [0]
        for a in amounts:
            self.prefix.append(self.prefix[-1] + a)
        return True

    def evict_before(self, ts_min: int) -> None:
        i = bisect.bisect_left(self.ts, ts_min)
        if i:
            base = self.prefix[i]
            del self.keys[:i], self.ts[:i]
            self.prefix = [p - base for p in self.prefix[i:]]

    def windows(self, ts: int, tx_id: str) -> list[tuple[int, int]]:
        """(count, sum of cents) per customer window, for the transaction (ts, tx_id) in state."""
        end = bisect.bisect_right(self.keys, (ts, tx_id))
        out = []
        for w in CUSTOMER_WINDOWS_DAYS:
            start = bisect.bisect_right(self.ts, ts - w * DAY_MS, 0, end)
            out.append((end - start, self.prefix[end] - self.prefix[start]))
        return out


# (count, frauds) of a terminal over the whole days (hi - w, hi], for each w of TERMINAL_WINDOWS_DAYS.
TerminalWindows = Callable[[str, int], Sequence[tuple[int, int]]]


def nested_windows(days: Mapping[int, Sequence[int]] | None, hi: int) -> list[tuple[int, int]]:
    """The terminal windows from per-day (count, frauds) in one backward pass: the windows share their
    last day and nest (TERMINAL_WINDOWS_DAYS ascending), so 30 day lookups serve all three."""
    if not days:
        return [(0, 0)] * len(TERMINAL_WINDOWS_DAYS)
    out = []
    count = frauds = 0
    d = hi
    for w in TERMINAL_WINDOWS_DAYS:
        while d > hi - w:
            cell = days.get(d)
            if cell is not None:
                count += cell[0]
                frauds += cell[1]
            d -= 1
        out.append((count, frauds))
    return out


def online_row(ts: int, tx_id: str, cents: int, history: CustomerHistory, terminal_id: str,
               terminal: TerminalWindows) -> list[float]:
    """The float64 feature values of one transaction already added to ``history``.

    Cast with ``np.asarray(rows, dtype=np.float32)``; the arithmetic matches ``offline_features``.
    """
    weekend, night = _calendar(ts)
    row = [cents / 100.0, weekend, night]
    wins = history.windows(ts, tx_id)
    for count, total in wins:
        row += [float(count), total / (100.0 * count)]
    for count, frauds in terminal(terminal_id, ts // DAY_MS - FEEDBACK_DELAY_DAYS - 1):
        row += [float(count), frauds / count if count > 0 else 0.0]
    count30, sum30 = wins[CUSTOMER_WINDOWS_DAYS.index(30)]
    row.append((cents * count30) / sum30)
    return row


@dataclass
class TerminalDays:
    """Per (terminal, day): distinct transaction ids and distinct fraud ids; idempotent adds.

    The worker keeps this behind shared, final day buckets; tests and the replay use it directly.
    """

    tx: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    frauds: dict[tuple[str, int], set[str]] = field(default_factory=dict)

    def add_transaction(self, terminal_id: str, ts: int, tx_id: str) -> None:
        self.tx.setdefault((terminal_id, ts // DAY_MS), set()).add(tx_id)

    def add_label(self, terminal_id: str, ts: int, tx_id: str, is_fraud: bool) -> None:
        bucket = self.frauds.setdefault((terminal_id, ts // DAY_MS), set())
        if is_fraud:
            bucket.add(tx_id)
        else:
            bucket.discard(tx_id)

    def lookup(self, terminal_id: str, lo: int, hi: int) -> tuple[int, int]:
        count = frauds = 0
        for d in range(lo, hi + 1):
            count += len(self.tx.get((terminal_id, d), ()))
            frauds += len(self.frauds.get((terminal_id, d), ()))
        return count, frauds

    def windows(self, terminal_id: str, hi: int) -> list[tuple[int, int]]:
        """The reference: each window summed on its own (``nested_windows`` must agree)."""
        return [self.lookup(terminal_id, hi - w + 1, hi) for w in TERMINAL_WINDOWS_DAYS]

    def counts(self) -> Mapping[tuple[str, int], tuple[int, int]]:
        keys = set(self.tx) | set(self.frauds)
        return {k: (len(self.tx.get(k, ())), len(self.frauds.get(k, ()))) for k in keys}


class OnlineState:
    """Customer histories plus terminal day buckets: the online path in one object.

    ``transaction`` is idempotent: feeding the same transaction again returns the same row and
    changes nothing. ``lateness_ms`` is how far behind a customer's newest event a transaction may
    arrive and still be exact (state keeps 30 days plus that).
    """

    def __init__(self, lateness_ms: int = 0) -> None:
        self.customers: dict[str, CustomerHistory] = {}
        self.terminals = TerminalDays()
        self.lateness_ms = lateness_ms

    def transaction(self, tx_id: str, ts: int, customer_id: str, terminal_id: str, cents: int) -> list[float]:
        history = self.customers.get(customer_id)
        if history is None:
            history = self.customers[customer_id] = CustomerHistory()
        if history.add(ts, tx_id, cents):
            history.evict_before(history.ts[-1] - CUSTOMER_HORIZON_MS - self.lateness_ms)
            self.terminals.add_transaction(terminal_id, ts, tx_id)
        return online_row(ts, tx_id, cents, history, terminal_id, self.terminals.windows)

    def label(self, terminal_id: str, ts: int, tx_id: str, is_fraud: bool) -> None:
        self.terminals.add_label(terminal_id, ts, tx_id, is_fraud)
