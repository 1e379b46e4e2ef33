"""The feature vector: one definition, an offline (vectorised) path and an online path.

Both paths compute every feature in float64 from exact integers (amounts in cents, counts),
with the *same* arithmetic expression, and cast to float32 last, so that they agree to the bit.

Definitions (Le Borgne et al., *Reproducible ML for Credit Card Fraud Detection*, ch. 3, with
whole-day terminal buckets):

- ``TX_AMOUNT``: cents / 100.
- ``TX_DURING_WEEKEND``: 1 when the UTC weekday of ``ts`` is Saturday or Sunday.
- ``TX_DURING_NIGHT``: 1 when the UTC hour of ``ts`` is <= 6.
- ``CUSTOMER_ID_NB_TX_{W}_WINDOW`` / ``CUSTOMER_ID_AVG_AMOUNT_{W}_WINDOW`` for W in 1HOUR (ours,
  velocity), 1DAY, 7DAY, 30DAY: the customer's transactions with ``ts`` in ``(ts - W, ts]`` that come
  at or before this one in the canonical order ``(ts, tx_id)`` — the current transaction included.
  Mean = sum of cents / (100 * count).
- ``CUSTOMER_AMOUNT_RATIO_30DAY`` (ours, beyond the handbook): amount / the 30-day mean above,
  i.e. ``cents * count / sum_cents`` — a transaction far above the card's habit.
- ``CUSTOMER_TERMINAL_NB_TX_30DAY_WINDOW`` (ours): the card's transactions at this terminal with ``ts``
  in ``(ts - 30 days, ts]``, at or before this one in the canonical order (so at least 1): a terminal
  the card never used (a card test, an account takeover) reads 1.
- ``TERMINAL_ID_NB_TX_{N}DAY_WINDOW`` / ``TERMINAL_ID_RISK_{N}DAY_WINDOW``: with ``d`` the UTC
  day of the transaction and ``D`` the feedback delay (7 days), the terminal's transactions in the
  whole days ``[d - D - N, d - D - 1]``, and those of them that are frauds *as reported before the
  cut-off of day d*. Risk = frauds / count, 0 when count is 0.

Labels by report time (feature set fs2). A label carries ``reported_at``, the event time at
which the feedback became known; labels arrive in any order of transaction time, are duplicated,
change their minds (1, then 0) and come weeks late. The cut-off of day ``d`` is
``d * DAY - LABEL_CUTOFF_MARGIN_MS`` (one hour before midnight), and a transaction on day ``d``
counts a labelled transaction as a fraud when its *latest* label reported before that cut-off
says fraud ("latest" = the largest ``(reported_at, is_fraud)``, so ties are decided the same way
on both paths). Equivalently a label counts from its *report slot*
``(reported_at + margin) // DAY + 1`` on: the first day whose cut-off it precedes. The rule
does not depend on arrival order, and a live stream decides it without waiting at midnight: the
cut-off is final an hour before the day begins. A label reported later than the feedback delay
(a chargeback weeks later) is counted from its report slot on, never dropped; a label of a day
that no window reaches any more changes nothing.
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
from typing import Any

import numpy as np
import numpy.typing as npt

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
FEEDBACK_DELAY_DAYS = 7
# Customer windows in ms: the handbook's 1, 7 and 30 days, and one hour (velocity: a burst of card tests).
CUSTOMER_WINDOWS_MS = (HOUR_MS, DAY_MS, 7 * DAY_MS, 30 * DAY_MS)
TERMINAL_WINDOWS_DAYS = (1, 7, 30)
# State horizon: customers keep 30 days; terminals need days back to d - D - 30.
CUSTOMER_HORIZON_MS = max(CUSTOMER_WINDOWS_MS)
RATIO_WINDOW = CUSTOMER_WINDOWS_MS.index(30 * DAY_MS)  # the amount ratio's window
FAMILIAR_MS = 30 * DAY_MS  # the window of the card's transactions at the same terminal
TERMINAL_HORIZON_DAYS = FEEDBACK_DELAY_DAYS + max(TERMINAL_WINDOWS_DAYS)
# Labels count from the first day whose cut-off (this long before its midnight) they precede.
LABEL_CUTOFF_MARGIN_MS = 3_600_000


def _names() -> tuple[str, ...]:
    names = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
    for w in CUSTOMER_WINDOWS_MS:
        span = f"{w // HOUR_MS}HOUR" if w < DAY_MS else f"{w // DAY_MS}DAY"
        names += [f"CUSTOMER_ID_NB_TX_{span}_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{span}_WINDOW"]
    for n in TERMINAL_WINDOWS_DAYS:
        names += [f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW", f"TERMINAL_ID_RISK_{n}DAY_WINDOW"]
    names += ["CUSTOMER_AMOUNT_RATIO_30DAY", "CUSTOMER_TERMINAL_NB_TX_30DAY_WINDOW"]
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
N_FEATURES = len(FEATURE_NAMES)
RATIO_COL = FEATURE_NAMES.index("CUSTOMER_AMOUNT_RATIO_30DAY")
FAMILIAR_COL = FEATURE_NAMES.index("CUSTOMER_TERMINAL_NB_TX_30DAY_WINDOW")
FEATURE_DTYPE = "float32"
_SPEC = (f"{FEATURE_NAMES}|delay={FEEDBACK_DELAY_DAYS}|order=ts,tx_id|terminal=day-buckets"
         f"|labels=report-time,cutoff-margin={LABEL_CUTOFF_MARGIN_MS},latest=(reported_at,is_fraud)")
FEATURE_VERSION = f"fs2-{hashlib.sha256(_SPEC.encode()).hexdigest()[:12]}"

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def day_of(ts_ms: int) -> int:
    return ts_ms // DAY_MS


def report_slot(reported_at_ms: int) -> int:
    """The first transaction day whose terminal features count a label reported at this time."""
    return (reported_at_ms + LABEL_CUTOFF_MARGIN_MS) // DAY_MS + 1


def slots_closed_through(report_watermark_ms: int) -> int:
    """The last report slot complete once every label reported before ``report_watermark_ms`` is known
    (slot k holds the reports in ``[(k-1) * DAY - margin, k * DAY - margin)``)."""
    return (report_watermark_ms + LABEL_CUTOFF_MARGIN_MS) // DAY_MS


def _calendar(ts_ms: int) -> tuple[float, float]:
    day = ts_ms // DAY_MS
    weekend = 1.0 if (day + 3) % 7 >= 5 else 0.0  # 1970-01-01 was a Thursday (Monday = 0)
    night = 1.0 if (ts_ms - day * DAY_MS) // HOUR_MS <= 6 else 0.0
    return weekend, night


# --------------------------------------------------------------------------------------------
# Offline: vectorised over a whole history.
# --------------------------------------------------------------------------------------------


def _dense(ids: npt.NDArray[Any]) -> I64:
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
    label_tx_id: npt.NDArray[np.str_],
    label_terminal_id: npt.NDArray[np.str_],
    label_ts: I64,
    label_reported_at: I64,
    label_is_fraud: npt.NDArray[np.integer],
) -> F32:
    """Feature rows (float32, ``FEATURE_NAMES`` order) for every transaction, in input order.

    Labels are events (several per ``tx_id`` when a label changes its mind), given with the
    transaction's terminal and ``ts``; duplicate transactions (the same ``tx_id``) must be removed
    by the caller (the data-quality checks do).
    """
    n = len(ts)
    ts = ts.astype(np.int64)
    cents = amount_cents.astype(np.int64)
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    out[:, :3] = calendar_columns(ts, cents)
    day = ts // DAY_MS
    _customer_columns(out, tx_id, ts, customer_id, cents)
    _familiar_column(out, tx_id, ts, customer_id, terminal_id)
    _terminal_columns(out, terminal_id, day, label_deltas(label_tx_id, label_terminal_id, label_ts,
                                                           label_reported_at, label_is_fraud))
    return out.astype(np.float32)


def _customer_columns(out: npt.NDArray[np.float64], tx_id: npt.NDArray[np.str_], ts: I64,
                      customer_id: npt.NDArray[np.str_], cents: I64) -> None:
    """Customers: sort by (customer, ts, tx_id); a window is a contiguous run ending at the row."""
    n = len(ts)
    cust = _dense(customer_id)
    order = np.lexsort((tx_id, ts, cust))
    t0 = int(ts.min()) if n else 0
    span = int(ts.max()) - t0 + CUSTOMER_HORIZON_MS + 1 if n else 1
    key = _composite(cust[order], ts[order] - t0, span)
    prefix = np.concatenate(([0], np.cumsum(cents[order])))
    idx = np.arange(n)
    counts, totals = [], []
    for w in CUSTOMER_WINDOWS_MS:
        start = np.searchsorted(key, key - w, side="right")
        counts.append(idx - start + 1)
        totals.append(prefix[idx + 1] - prefix[start])
    cols, ratio = customer_columns(counts, totals, cents[order])
    out[order, 3:3 + 2 * len(CUSTOMER_WINDOWS_MS)] = cols
    out[order, RATIO_COL] = ratio


def _familiar_column(out: npt.NDArray[np.float64], tx_id: npt.NDArray[np.str_], ts: I64,
                     customer_id: npt.NDArray[np.str_], terminal_id: npt.NDArray[np.str_]) -> None:
    """The card's transactions at the same terminal within ``FAMILIAR_MS``, at or before the row in the
    canonical order: a contiguous run of the rows sorted by (customer, terminal, ts, tx_id)."""
    n = len(ts)
    if not n:
        return
    cust, term = _dense(customer_id), _dense(terminal_id)
    pair = _dense(_composite(cust, term, int(term.max()) + 1))
    order = np.lexsort((tx_id, ts, pair))
    t0 = int(ts.min())
    key = _composite(pair[order], ts[order] - t0, int(ts.max()) - t0 + FAMILIAR_MS + 1)
    start = np.searchsorted(key, key - FAMILIAR_MS, side="right")
    out[order, FAMILIAR_COL] = familiar_column(np.arange(n) - start + 1)


def familiar_column(counts: I64) -> npt.NDArray[np.float64]:
    """``CUSTOMER_TERMINAL_NB_TX_30DAY_WINDOW`` from its counts (both paths)."""
    return counts.astype(np.float64)


# The feature values from exact integers, one definition for both paths: the trainer's offline
# features and the worker's batches call these, so their arithmetic is the same by construction.


def calendar_columns(ts: I64, cents: I64) -> npt.NDArray[np.float64]:
    """[n, 3]: TX_AMOUNT, TX_DURING_WEEKEND, TX_DURING_NIGHT."""
    out = np.empty((len(ts), 3), dtype=np.float64)
    out[:, 0] = cents / 100.0
    day = ts // DAY_MS
    out[:, 1] = ((day + 3) % 7 >= 5).astype(np.float64)  # 1970-01-01 was a Thursday (Monday = 0)
    out[:, 2] = ((ts - day * DAY_MS) // HOUR_MS <= 6).astype(np.float64)
    return out


def customer_columns(counts: Sequence[I64], totals: Sequence[I64],
                     cents: I64) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """From the count and sum of cents of each customer window: [n, 2 * windows] (count, mean amount)
    and the 30-day amount ratio."""
    cols = np.empty((len(cents), 2 * len(CUSTOMER_WINDOWS_MS)), dtype=np.float64)
    for k, (count, total) in enumerate(zip(counts, totals, strict=True)):
        cols[:, 2 * k] = count
        cols[:, 2 * k + 1] = total / (100.0 * count)
    return cols, (cents * counts[RATIO_WINDOW]) / totals[RATIO_WINDOW]


def terminal_columns(counts: I64, frauds: I64) -> npt.NDArray[np.float64]:
    """From [n, windows] transactions and frauds of each terminal window: [n, 2 * windows] (count, risk)."""
    cols = np.empty((len(counts), 2 * len(TERMINAL_WINDOWS_DAYS)), dtype=np.float64)
    cols[:, 0::2] = counts
    cols[:, 1::2] = np.where(counts > 0, frauds / np.maximum(counts, 1), 0.0)
    return cols


@dataclass(frozen=True)
class LabelDeltas:
    """Changes of a terminal-day's fraud count: ``delta`` frauds on (``terminal``, ``day``) from ``slot`` on."""

    terminal: npt.NDArray[np.str_]
    day: I64
    slot: I64
    delta: I64


def label_deltas(label_tx_id: npt.NDArray[np.str_], label_terminal_id: npt.NDArray[np.str_], label_ts: I64,
                 label_reported_at: I64, label_is_fraud: npt.NDArray[np.integer]) -> LabelDeltas:
    """Label events -> per (transaction, report slot) the last word in that slot, and the change it
    makes to its terminal-day's fraud count against the transaction's previous slot."""
    rep = np.asarray(label_reported_at, dtype=np.int64)
    slot = (rep + LABEL_CUTOFF_MARGIN_MS) // DAY_MS + 1
    fraud = (np.asarray(label_is_fraud) != 0).astype(np.int64)
    tx = _dense(np.asarray(label_tx_id))
    order = np.lexsort((fraud, rep, slot, tx))  # per tx, per slot, the latest (reported_at, is_fraud) last
    tx, slot, fraud = tx[order], slot[order], fraud[order]
    last = np.ones(len(tx), dtype=bool)
    if len(tx):
        last[:-1] = (tx[1:] != tx[:-1]) | (slot[1:] != slot[:-1])
    tx, slot, value = tx[last], slot[last], fraud[last]
    prev = np.zeros(len(tx), dtype=np.int64)
    if len(tx):
        same = tx[1:] == tx[:-1]
        prev[1:] = np.where(same, value[:-1], 0)
    delta = value - prev
    keep = delta != 0
    rows = order[last][keep]
    return LabelDeltas(np.asarray(label_terminal_id)[rows], np.asarray(label_ts, dtype=np.int64)[rows] // DAY_MS,
                       slot[keep], delta[keep])


def _terminal_columns(out: npt.NDArray[np.float64], terminal_id: npt.NDArray[np.str_], day: I64,
                      lab: LabelDeltas) -> None:
    """Terminals: day buckets of transactions, prefix sums per terminal over sorted bucket keys; frauds
    as the label deltas whose slot a transaction's day has reached, summed over the same key ranges."""
    n = len(day)
    term = _dense(np.concatenate((terminal_id, lab.terminal)))
    tx_term, lab_term = term[:n], term[n:]
    d0 = int(min(day.min() if n else 0, lab.day.min() if len(lab.day) else 0)) - TERMINAL_HORIZON_DAYS - 1
    dspan = int(max(day.max() if n else 0, lab.day.max() if len(lab.day) else 0)) - d0 + 2
    tx_keys = _composite(tx_term, day - d0, dspan)
    # Sorted queries into a sorted array: each search starts near the last one (random ones miss the cache).
    order = np.argsort(tx_keys, kind="stable")
    tx_sorted = tx_keys[order]
    frauds = _fraud_windows(tx_keys, day, _composite(lab_term, lab.day - d0, dspan), lab.slot, lab.delta)
    counts = np.empty_like(frauds)
    for i, w in enumerate(TERMINAL_WINDOWS_DAYS):
        hi = tx_sorted - FEEDBACK_DELAY_DAYS - 1
        lo = tx_sorted - FEEDBACK_DELAY_DAYS - w
        counts[order, i] = np.searchsorted(tx_sorted, hi, side="right") - np.searchsorted(tx_sorted, lo, side="left")
    col = 3 + 2 * len(CUSTOMER_WINDOWS_MS)
    out[:, col:col + 2 * len(TERMINAL_WINDOWS_DAYS)] = terminal_columns(counts, frauds)


def _fraud_windows(tx_keys: I64, day: I64, lab_keys: I64, lab_slot: I64, lab_delta: I64) -> I64:
    """[n, windows] frauds: per transaction day, the deltas with slot <= that day, summed per window."""
    out = np.zeros((len(tx_keys), len(TERMINAL_WINDOWS_DAYS)), dtype=np.int64)
    by_slot = np.argsort(lab_slot, kind="stable")
    slots, keys, deltas = lab_slot[by_slot], lab_keys[by_slot], lab_delta[by_slot]
    tx_order = np.lexsort((tx_keys, day))  # by day, then key: each day's queries sorted
    days, starts = np.unique(day[tx_order], return_index=True)
    bounds = np.append(starts, len(tx_order))
    known = -1
    sorted_keys, prefix = np.zeros(0, np.int64), np.zeros(1, np.int64)
    for j, d in enumerate(days.tolist()):
        k = int(np.searchsorted(slots, d, side="right"))
        if k != known:  # the deltas a transaction on day d may count: slots <= d
            known = k
            o = np.argsort(keys[:k], kind="stable")
            sorted_keys, prefix = keys[:k][o], np.concatenate(([0], np.cumsum(deltas[:k][o])))
        rows = tx_order[bounds[j]:bounds[j + 1]]
        for i, w in enumerate(TERMINAL_WINDOWS_DAYS):
            hi = tx_keys[rows] - FEEDBACK_DELAY_DAYS - 1
            lo = tx_keys[rows] - FEEDBACK_DELAY_DAYS - w
            out[rows, i] = (prefix[np.searchsorted(sorted_keys, hi, side="right")]
                            - prefix[np.searchsorted(sorted_keys, lo, side="left")])
    return out


# --------------------------------------------------------------------------------------------
# Online: one event at a time, from state.
# --------------------------------------------------------------------------------------------


@dataclass
class CustomerHistory:
    """One customer's transactions within the horizon, sorted by (ts, tx_id), with prefix sums."""

    keys: list[tuple[int, str]] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    prefix: list[int] = field(default_factory=lambda: [0])
    terminals: list[str] = field(default_factory=list)

    def add(self, ts: int, tx_id: str, cents: int, terminal_id: str = "") -> bool:
        """Add a transaction; False (and no change) when (ts, tx_id) is already in state."""
        k = (ts, tx_id)
        if not self.keys or k > self.keys[-1]:  # the common case: in order
            self.keys.append(k)
            self.ts.append(ts)
            self.prefix.append(self.prefix[-1] + cents)
            self.terminals.append(terminal_id)
            return True
        i = bisect.bisect_left(self.keys, k)
        if i < len(self.keys) and self.keys[i] == k:
            return False
        amounts = [self.prefix[j + 1] - self.prefix[j] for j in range(len(self.keys))]
        self.keys.insert(i, k)
        self.ts.insert(i, ts)
        self.terminals.insert(i, terminal_id)
        amounts.insert(i, cents)
        self.prefix = [0]
        for a in amounts:
            self.prefix.append(self.prefix[-1] + a)
        return True

    def evict_before(self, ts_min: int) -> None:
        i = bisect.bisect_left(self.ts, ts_min)
        if i:
            base = self.prefix[i]
            del self.keys[:i], self.ts[:i], self.terminals[:i]
            self.prefix = [p - base for p in self.prefix[i:]]

    def windows(self, ts: int, tx_id: str) -> list[tuple[int, int]]:
        """(count, sum of cents) per customer window, for the transaction (ts, tx_id) in state."""
        end = bisect.bisect_right(self.keys, (ts, tx_id))
        out = []
        for w in CUSTOMER_WINDOWS_MS:
            start = bisect.bisect_right(self.ts, ts - w, 0, end)
            out.append((end - start, self.prefix[end] - self.prefix[start]))
        return out

    def familiar(self, ts: int, tx_id: str, terminal_id: str) -> int:
        """The entries at ``terminal_id`` within ``FAMILIAR_MS``, at or before (ts, tx_id)."""
        end = bisect.bisect_right(self.keys, (ts, tx_id))
        start = bisect.bisect_right(self.ts, ts - FAMILIAR_MS, 0, end)
        return self.terminals[start:end].count(terminal_id)


# (count, frauds) of a terminal for a transaction on day d, for each w of TERMINAL_WINDOWS_DAYS.
TerminalWindows = Callable[[str, int], Sequence[tuple[int, int]]]
# A terminal-day: [transactions, {report slot: change of its fraud count from that slot on} or None].
Cell = list[Any]


def frauds_at(deltas: Mapping[int, int] | None, d: int) -> int:
    """A terminal-day's fraud count as a transaction on day ``d`` sees it."""
    if not deltas:
        return 0
    return sum(v for s, v in deltas.items() if s <= d)


def nested_windows(days: Mapping[int, Cell] | None, d: int) -> list[tuple[int, int]]:
    """The terminal windows of a transaction on day ``d`` from per-day cells in one backward pass: the
    windows share their last day and nest (TERMINAL_WINDOWS_DAYS ascending), so 30 day lookups serve all three."""
    if not days:
        return [(0, 0)] * len(TERMINAL_WINDOWS_DAYS)
    out = []
    count = frauds = 0
    hi = d - FEEDBACK_DELAY_DAYS - 1
    day = hi
    for w in TERMINAL_WINDOWS_DAYS:
        while day > hi - w:
            cell = days.get(day)
            if cell is not None:
                count += cell[0]
                if cell[1]:
                    frauds += frauds_at(cell[1], d)
            day -= 1
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
    for count, frauds in terminal(terminal_id, ts // DAY_MS):
        row += [float(count), frauds / count if count > 0 else 0.0]
    count30, sum30 = wins[RATIO_WINDOW]
    row.append((cents * count30) / sum30)
    row.append(float(history.familiar(ts, tx_id, terminal_id)))
    return row


@dataclass
class TerminalDays:
    """The reference online terminal state: per (terminal, day) the distinct transaction ids, and every
    label event kept per transaction; idempotent adds. The worker keeps shared, final day cells
    instead (``workers.terminals``); tests and the replay use this directly."""

    tx: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    labelled: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    events: dict[str, set[tuple[int, int, int]]] = field(default_factory=dict)  # tx_id -> {(slot, reported_at, fraud)}

    def add_transaction(self, terminal_id: str, ts: int, tx_id: str) -> None:
        self.tx.setdefault((terminal_id, ts // DAY_MS), set()).add(tx_id)

    def add_label(self, terminal_id: str, ts: int, tx_id: str, is_fraud: bool, reported_at: int) -> None:
        self.labelled.setdefault((terminal_id, ts // DAY_MS), set()).add(tx_id)
        self.events.setdefault(tx_id, set()).add((report_slot(reported_at), reported_at, int(is_fraud)))

    def fraud_at(self, tx_id: str, d: int) -> int:
        seen = [(rep, fraud) for slot, rep, fraud in self.events[tx_id] if slot <= d]
        return max(seen)[1] if seen else 0

    def lookup(self, terminal_id: str, lo: int, hi: int, d: int) -> tuple[int, int]:
        count = frauds = 0
        for day in range(lo, hi + 1):
            count += len(self.tx.get((terminal_id, day), ()))
            frauds += sum(self.fraud_at(t, d) for t in self.labelled.get((terminal_id, day), ()))
        return count, frauds

    def windows(self, terminal_id: str, d: int) -> list[tuple[int, int]]:
        """The reference: each window summed on its own (``nested_windows`` must agree)."""
        hi = d - FEEDBACK_DELAY_DAYS - 1
        return [self.lookup(terminal_id, hi - w + 1, hi, d) for w in TERMINAL_WINDOWS_DAYS]


class OnlineState:
    """Customer histories plus terminal day buckets: the online path in one object.

    ``transaction`` is idempotent: feeding the same transaction again returns the same row and
    changes nothing. ``lateness_ms`` is how far behind a customer's newest event a transaction may
    arrive and still be exact (state keeps 30 days plus that). A label must be fed before the
    transactions of its report slot's day (a live stream publishes it at ``reported_at``).
    """

    def __init__(self, lateness_ms: int = 0) -> None:
        self.customers: dict[str, CustomerHistory] = {}
        self.terminals = TerminalDays()
        self.lateness_ms = lateness_ms

    def transaction(self, tx_id: str, ts: int, customer_id: str, terminal_id: str, cents: int) -> list[float]:
        history = self.customers.get(customer_id)
        if history is None:
            history = self.customers[customer_id] = CustomerHistory()
        if history.add(ts, tx_id, cents, terminal_id):
            history.evict_before(history.ts[-1] - CUSTOMER_HORIZON_MS - self.lateness_ms)
            self.terminals.add_transaction(terminal_id, ts, tx_id)
        return online_row(ts, tx_id, cents, history, terminal_id, self.terminals.windows)

    def label(self, terminal_id: str, ts: int, tx_id: str, is_fraud: bool, reported_at: int) -> None:
        self.terminals.add_label(terminal_id, ts, tx_id, is_fraud, reported_at)
