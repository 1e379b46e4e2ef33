"""The handbook's transaction simulator, written fresh: vectorised numpy, one seeded generator.

Facts from Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud Detection*,
chapter 3.2 (restated in DESIGN.md, "The simulator"):

* customers at (x, y) ~ U(0, 100)², mean amount ~ U(5, 100), std = mean / 2, mean transactions a
  day ~ U(0, 4); terminals at (x, y) ~ U(0, 100)²;
* a customer uses the terminals strictly within ``radius`` (Euclidean), uniformly; a customer with
  no terminal in reach makes no transactions;
* each day a customer makes Poisson(mean a day) transactions, at second ⌊N(43 200, 20 000)⌋ of the
  day (draws outside [0, 86 400) are dropped), amount N(mean, std) (a negative draw is replaced by
  U(0, 2·mean)), rounded to cents; an amount that rounds to 0 cents becomes 1 cent;
* frauds: (1) an amount over 220; (2) each day 2 distinct random terminals are compromised for 28
  days: all their transactions in that window are fraud; (3) each day 3 distinct random customers
  are compromised for 14 days: a random third (⌊n / 3⌋ of the n transactions in the window) get
  amount x 5 and are fraud.

Compromise windows follow the handbook: a terminal or customer picked on day ``d`` is compromised
on days ``d .. d + 27`` (resp. ``d .. d + 13``), *including* the day it is picked. Picks happen on
every simulated day (the handbook's loop skips the last one). Two deliberate simplifications: the
third of scenario 3 is drawn per (customer, pick) rather than jointly over the day's three
customers, and a transaction picked by two overlapping windows of the same customer is multiplied
by 5 once, not 25 times. Scenario 1 is judged on the amount before the x 5, as in the handbook.
When several scenarios apply, ``scenario`` holds the lowest number.

Times are whole seconds (as in the handbook), stored as epoch milliseconds. Everything is drawn
from one ``numpy.random.Generator(PCG64(seed))`` in a fixed order, so a seed gives the same arrays
bit for bit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DAY_S = 86_400
DAY_MS = DAY_S * 1000
FRAUD_AMOUNT_CENTS = 22_000  # scenario 1: amount > 220.00
TERMINAL_PICKS_A_DAY = 2
TERMINAL_COMPROMISE_DAYS = 28
CUSTOMER_PICKS_A_DAY = 3
CUSTOMER_COMPROMISE_DAYS = 14
SCENARIO3_FACTOR = 5
TX_ID_PREFIX = "tx"
TX_ID_MIN_WIDTH = 9
REPORT_WITHIN_SHARE = 0.85
REPORT_TAIL_MEAN_DAYS = 10.0
REPORT_MAX_DAYS = 60

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Strs = npt.NDArray[np.str_]
Flags = npt.NDArray[np.int8]


@dataclass(frozen=True)
class SimConfig:
    """Size and seed of a simulated history; the defaults are the handbook's run."""

    customers: int = 5000
    terminals: int = 10000
    days: int = 183
    start: str = "2018-04-01"  # UTC date of day 0
    seed: int = 0
    radius: float = 5.0

    def __post_init__(self) -> None:
        for name in ("customers", "terminals", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.radius > 0:
            raise ValueError(f"SimConfig.radius must be > 0, got {self.radius}")
        start_ms(self.start)  # raises ValueError on a bad date

    @property
    def start_ms(self) -> int:
        """Epoch milliseconds of the first day's midnight, UTC."""
        return start_ms(self.start)


@dataclass(frozen=True)
class History:
    """Columnar transactions + ground truth, sorted by (ts, tx_id); index order is that order.

    ``scenario`` is 0 for genuine transactions, 1/2/3 for the simulator's scenario that made it
    fraud, and -1 for a fraud of unknown scenario (user data without a scenario column).
    """

    tx_id: Strs  # "tx000000123": zero-padded, so string order == numeric order
    ts: Ints  # event time, epoch milliseconds UTC
    customer_id: Strs  # "c<n>"
    terminal_id: Strs  # "t<n>"
    amount_cents: Ints  # > 0
    is_fraud: Flags  # 0/1
    scenario: Flags

    def __post_init__(self) -> None:
        n = len(self.tx_id)
        for name in ("ts", "customer_id", "terminal_id", "amount_cents", "is_fraud", "scenario"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"History.{name} has {len(getattr(self, name))} rows, tx_id has {n}")

    def __len__(self) -> int:
        return len(self.tx_id)


@dataclass(frozen=True)
class Labels:
    """Investigation outcomes (genuine ones too), sorted by (reported_at, tx_id).

    ``ts`` is the transaction's event time; ``reported_at`` is when the outcome became known. A
    transaction may have several labels (a review, then a chargeback that overturns it): the
    latest ``reported_at`` is its final word, fraud winning a tie (``schemas.features``'s rule).
    """

    tx_id: Strs
    customer_id: Strs
    terminal_id: Strs
    ts: Ints
    is_fraud: Flags
    reported_at: Ints

    def __len__(self) -> int:
        return len(self.tx_id)


def start_ms(date: str) -> int:
    """Epoch milliseconds of midnight UTC of an ISO date such as ``2018-04-01``."""
    day = dt.date.fromisoformat(date)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1000


def simulate(cfg: SimConfig) -> History:
    """Simulate ``cfg.days`` days of transactions with the handbook's three fraud scenarios."""
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    c, t, d = cfg.customers, cfg.terminals, cfg.days

    # Profiles.
    cust_xy = rng.uniform(0.0, 100.0, size=(c, 2))
    mean_amount = rng.uniform(5.0, 100.0, size=c)
    std_amount = mean_amount / 2.0
    mean_tx_a_day = rng.uniform(0.0, 4.0, size=c)
    term_xy = rng.uniform(0.0, 100.0, size=(t, 2))
    indptr, reach = _neighbours(cust_xy, term_xy, cfg.radius)
    degree = np.diff(indptr)

    # Transactions, generated in (customer, day) order.
    counts = rng.poisson(np.repeat(mean_tx_a_day, d).reshape(c, d)) * (degree > 0)[:, None]
    counts_flat = counts.ravel()
    cust = np.repeat(np.repeat(np.arange(c, dtype=np.int64), d), counts_flat)
    day = np.repeat(np.tile(np.arange(d, dtype=np.int64), c), counts_flat)
    second = np.floor(rng.normal(DAY_S / 2, 20_000.0, size=len(cust)))
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    replacement = rng.uniform(0.0, 2.0 * mean_amount[cust])
    amount = np.where(amount < 0, replacement, amount)
    keep = (second >= 0) & (second < DAY_S)
    cust, day, second, amount = cust[keep], day[keep], second[keep].astype(np.int64), amount[keep]
    cents = np.maximum(np.round(amount * 100.0).astype(np.int64), 1)
    term = reach[indptr[cust] + rng.integers(0, degree[cust])]

    # Frauds.
    scenario = np.zeros(len(cust), dtype=np.int8)
    s1 = cents > FRAUD_AMOUNT_CENTS
    s2 = _in_windows(term, day, _daily_picks(rng, t, TERMINAL_PICKS_A_DAY, d), d, TERMINAL_COMPROMISE_DAYS)
    s3 = _scenario3(rng, cust, day, _daily_picks(rng, c, CUSTOMER_PICKS_A_DAY, d), d)
    cents[s3] *= SCENARIO3_FACTOR
    for number, hit in ((3, s3), (2, s2), (1, s1)):
        scenario[hit] = number

    # Event-time order; generation order breaks ties, then ids follow the final order.
    ts = cfg.start_ms + day * DAY_MS + second * 1000
    order = np.argsort(ts, kind="stable")
    scenario = scenario[order]
    return History(
        tx_id=tx_ids(len(order)),
        ts=ts[order],
        customer_id=_names("c", c)[cust[order]],
        terminal_id=_names("t", t)[term[order]],
        amount_cents=cents[order],
        is_fraud=(scenario > 0).astype(np.int8),
        scenario=scenario,
    )


def report_delays(n: int, seed: int = 0) -> Ints:
    """``n`` label report delays in milliseconds, drawn like feedback really arrives.

    Most outcomes (``REPORT_WITHIN_SHARE``, 85 %) are reported uniformly between 1 and 7 days after
    the transaction (analyst reviews, customer calls); the rest come after the 7-day feedback delay,
    7 days plus an exponential tail of mean ``REPORT_TAIL_MEAN_DAYS`` (10) days capped at
    ``REPORT_MAX_DAYS`` (60) days in all (chargebacks). Seeded on its own generator, so the
    history's draws do not move when the delays change.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    within = rng.uniform(1.0, 7.0, size=n)
    tail = np.minimum(7.0 + rng.exponential(REPORT_TAIL_MEAN_DAYS, size=n), float(REPORT_MAX_DAYS))
    late = rng.random(n) >= REPORT_WITHIN_SHARE
    delay: Ints = np.floor(np.where(late, tail, within) * DAY_MS).astype(np.int64)
    return delay


def labels_of(h: History, feedback_delay_days: int | None = None, *, seed: int = 0) -> Labels:
    """One label per transaction, reported after :func:`report_delays` (seeded by ``seed``), or
    exactly ``feedback_delay_days`` after its transaction when that is given (the handbook's rule)."""
    if feedback_delay_days is None:
        reported_at = h.ts + report_delays(len(h), seed)
    else:
        reported_at = h.ts + np.int64(feedback_delay_days) * DAY_MS
    # History's index order is its (ts, tx_id) order, so it breaks ties in reported_at as tx_id would.
    order = np.argsort(reported_at, kind="stable")
    return Labels(
        tx_id=h.tx_id[order],
        customer_id=h.customer_id[order],
        terminal_id=h.terminal_id[order],
        ts=h.ts[order],
        is_fraud=(h.is_fraud[order] != 0).astype(np.int8),
        reported_at=reported_at[order],
    )


def history_features(h: History, lab: Labels) -> npt.NDArray[np.float32]:
    """``schemas.features.offline_features`` of every transaction of ``h``, with every label event of ``lab``."""
    from schemas.features import offline_features

    return offline_features(h.tx_id, h.ts, h.customer_id, h.terminal_id, h.amount_cents, lab.tx_id, lab.terminal_id,
                            lab.ts, lab.reported_at, lab.is_fraud)


def tx_ids(n: int) -> Strs:
    """``tx000000000`` .. : zero-padded to one width, so string order == numeric order."""
    width = max(TX_ID_MIN_WIDTH, len(str(max(n - 1, 0))))
    prefix = TX_ID_PREFIX.encode()
    buf = np.empty((n, len(prefix) + width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    rest = np.arange(n, dtype=np.int64)
    for col in range(len(prefix) + width - 1, len(prefix) - 1, -1):
        buf[:, col] = rest % 10 + ord("0")
        rest //= 10
    return buf.view(f"S{buf.shape[1]}").ravel().astype(f"U{buf.shape[1]}")


def _names(prefix: str, n: int) -> Strs:
    return np.array([f"{prefix}{i}" for i in range(n)], dtype=np.str_)


def _neighbours(cust_xy: Floats, term_xy: Floats, radius: float) -> tuple[Ints, Ints]:
    """CSR lists of the terminals strictly within ``radius`` of each customer, ascending ids.

    Sweeps customers in x order, chunk by chunk, against the terminals whose x is in reach.
    """
    by_x = np.argsort(term_xy[:, 0], kind="stable")
    tx_sorted = term_xy[by_x, 0]
    cust_order = np.argsort(cust_xy[:, 0], kind="stable")
    r2 = radius * radius
    rows: list[Ints] = []
    cols: list[Ints] = []
    chunk = 256
    for lo in range(0, len(cust_order), chunk):
        who = cust_order[lo : lo + chunk]
        xy = cust_xy[who]
        a = int(np.searchsorted(tx_sorted, xy[:, 0].min() - radius, side="left"))
        b = int(np.searchsorted(tx_sorted, xy[:, 0].max() + radius, side="right"))
        cand = by_x[a:b]
        d2 = (xy[:, 0:1] - term_xy[cand, 0]) ** 2 + (xy[:, 1:2] - term_xy[cand, 1]) ** 2
        i, j = np.nonzero(d2 < r2)
        rows.append(who[i])
        cols.append(cand[j])
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    order = np.lexsort((col, row))
    indptr = np.zeros(len(cust_xy) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=len(cust_xy)), out=indptr[1:])
    return indptr, col[order].astype(np.int64)


def _daily_picks(rng: np.random.Generator, n: int, k: int, days: int) -> Ints:
    """``(days, min(k, n))`` array: each day, distinct ids drawn uniformly from ``range(n)``."""
    k = min(k, n)
    out = np.zeros((days, k), dtype=np.int64)
    for j in range(k):
        v = rng.integers(0, n - j, size=days)
        for taken in np.sort(out[:, :j], axis=1).T:  # skip ids already taken, smallest first
            v += v >= taken
        out[:, j] = v
    return out


def _in_windows(who: Ints, day: Ints, picks: Ints, days: int, length: int) -> npt.NDArray[np.bool_]:
    """Whether each (who, day) falls in a window [pick day, pick day + length) of a pick of ``who``."""
    pick_day = np.repeat(np.arange(days, dtype=np.int64), picks.shape[1])
    keys = np.sort(picks.ravel() * days + pick_day)
    at = np.searchsorted(keys, who * days + day, side="right") - 1  # the latest pick at or before
    hit = at >= 0
    latest = keys[np.maximum(at, 0)]
    inside: npt.NDArray[np.bool_] = hit & (latest // days == who) & (day - latest % days < length)
    return inside


def _scenario3(rng: np.random.Generator, cust: Ints, day: Ints, picks: Ints, days: int) -> npt.NDArray[np.bool_]:
    """Scenario 3: per pick, a random ⌊n/3⌋ of the customer's n transactions in its 14-day window.

    ``cust``/``day`` must be in (customer, day) order, as generated.
    """
    key = cust * days + day
    pick_day = np.repeat(np.arange(days, dtype=np.int64), picks.shape[1])
    pick_cust = picks.ravel()
    lo = np.searchsorted(key, pick_cust * days + pick_day, side="left")
    hi = np.searchsorted(key, pick_cust * days + np.minimum(pick_day + CUSTOMER_COMPROMISE_DAYS, days), side="left")
    n = hi - lo
    total = int(n.sum())
    event = np.repeat(np.arange(len(n)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    tx = np.arange(total, dtype=np.int64) - first + np.repeat(lo, n)
    order = np.lexsort((rng.random(total), event))  # shuffle inside each pick's group
    rank = np.arange(total, dtype=np.int64) - first
    chosen = tx[order][rank < np.repeat(n // 3, n)]
    out = np.zeros(len(cust), dtype=np.bool_)
    out[chosen] = True
    return out
