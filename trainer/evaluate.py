"""Evaluation: the handbook's metrics, its train / delay / test protocol, known-compromised cards.

Follows *Reproducible Machine Learning for Credit Card Fraud Detection* (Le Borgne et al.),
chapters 3.4 and 5, over plain numpy arrays.

Split layout
------------
Every split is four half-open windows ``[start_ms, end_ms)`` in epoch milliseconds UTC::

    valid_start      train_start          delay_start             test_start          test_end
        |── validation ──|────── train ───────|─────── delay ────────|─────── test ───────|
          valid_days         train_days            delay_days              test_days

- **train**: the rows the model is fitted on.
- **validation**: the ``valid_days`` immediately *before* train; early stopping and any tuning
  look at it (and at :func:`model_selection_folds`), never at the test window.
- **delay**: the feedback gap. A model deployed at ``test_start`` cannot know labels of recent
  transactions, so nothing used in fitting or early stopping lies in the delay window: both
  train and validation end at ``delay_start``, whose labels have all arrived by ``test_start``
  when the feedback delay is at most ``delay_days``.
- **test**: touched once, for the final numbers.

Why validation sits before train rather than after it: a window after train would fall in the
delay gap (labels not yet arrived at test time) or push train back, away from the handbook's
exact windows. The handbook's book split (:func:`handbook_split`) is therefore::

    validation 2018-07-18..24 | train 2018-07-25..31 | delay 2018-08-01..07 | test 2018-08-08..14

Prequential folds repeat that geometry shifted by a week (:func:`protocol_splits` forward from a
start, :func:`prequential_folds` backward from a test start); :func:`model_selection_folds` gives
the handbook's validation folds for a split, all of whose windows end by the split's delay start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, roc_auc_score

DAY_MS = 86_400_000
"""One day in milliseconds."""

BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- input checks


def _labels(y: npt.ArrayLike) -> npt.NDArray[np.int8]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return arr.astype(np.int8)


def _scores(score: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(score, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("scores contain NaN")
    return arr


def _same_length(**arrays: npt.NDArray[np.generic]) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()), 0)


def day_index(ts_ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """UTC day index (days since the epoch) of epoch-millisecond timestamps."""
    return np.asarray(ts_ms, dtype=np.int64) // DAY_MS


def utc_ms(year: int, month: int, day: int) -> int:
    """Epoch milliseconds of midnight UTC on the given date."""
    return int(dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp()) * 1000


# --------------------------------------------------------------------------- metrics


def roc_auc(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """ROC AUC; NaN when ``y`` holds a single class (the metric is undefined there)."""
    yy, s = _labels(y), _scores(score)
    _same_length(y=yy, score=s)
    if yy.size == 0 or yy.min() == yy.max():
        return float("nan")
    return float(roc_auc_score(yy, s))


def average_precision(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Average precision (sklearn's step-wise definition, as the handbook); NaN without frauds."""
    yy, s = _labels(y), _scores(score)
    _same_length(y=yy, score=s)
    if not yy.any():
        return float("nan")
    return float(average_precision_score(yy, s))


def card_precision_at_k(
    day: npt.ArrayLike, customer_id: npt.ArrayLike, y: npt.ArrayLike, score: npt.ArrayLike, k: int = 100,
    *, remove_detected: bool = False,
) -> float:
    """Card precision@k, averaged over the days present in ``day``.

    Per day, each card (customer) gets its highest score of the day and counts as compromised
    when any of its transactions that day is a fraud. Cards are ranked by that score (ties:
    customer id ascending, so the result is deterministic), and the day's precision is the number
    of compromised cards among the top ``k`` divided by ``k`` -- also on days with fewer than
    ``k`` cards, as the handbook does. Returns NaN for empty input.

    ``remove_detected``: the handbook's ``card_precision_top_k`` (its default): a compromised card
    that made a day's top ``k`` is left out of the later days, as investigators would have blocked
    it. Cards stay compromised for days (the handbook's frauds last 14 or 28 days), so this lowers
    the metric on every day but the first.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    d = np.asarray(day, dtype=np.int64)
    cards = np.asarray(customer_id).astype(str)
    yy, s = _labels(y), _scores(score)
    if _same_length(day=d, customer_id=cards, y=yy, score=s) == 0:
        return float("nan")

    days, day_pos = np.unique(d, return_inverse=True)
    card_names, card_pos = np.unique(cards, return_inverse=True)
    n_cards = len(card_names)
    keys, row_key = np.unique(day_pos.astype(np.int64) * n_cards + card_pos, return_inverse=True)
    max_score = np.full(len(keys), -np.inf)
    np.maximum.at(max_score, row_key, s)
    fraud = np.zeros(len(keys), dtype=np.int64)
    np.maximum.at(fraud, row_key, yy.astype(np.int64))

    key_day, key_card = keys // n_cards, keys % n_cards
    if remove_detected:
        return _cp_removing_detected(key_day, key_card, max_score, fraud, len(days), k)
    order = np.lexsort((key_card, -max_score, key_day))  # by day, score desc, card id asc
    sorted_day = key_day[order]
    first_of_day = np.searchsorted(sorted_day, np.arange(len(days)))
    rank = np.arange(len(order)) - first_of_day[sorted_day]
    top = rank < k
    hits = np.bincount(sorted_day[top], weights=fraud[order][top], minlength=len(days))
    return float(np.mean(hits / k))


def _cp_removing_detected(key_day: npt.NDArray[np.int64], key_card: npt.NDArray[np.int64],
                          max_score: npt.NDArray[np.float64], fraud: npt.NDArray[np.int64], n_days: int,
                          k: int) -> float:
    """Card precision@k over (day, card) keys, day by day, dropping the compromised cards found so far."""
    detected = np.zeros(int(key_card.max()) + 1, dtype=np.bool_)
    per_day = np.zeros(n_days)
    for d in range(n_days):
        on = np.flatnonzero((key_day == d) & ~detected[key_card])
        top = on[np.lexsort((key_card[on], -max_score[on]))[:k]]
        found = top[fraud[top] == 1]
        per_day[d] = len(found) / k
        detected[key_card[found]] = True
    return float(per_day.mean())


@dataclass(frozen=True)
class Metrics:
    """The handbook's three metrics on one set of transactions, with its size; CP@100 both without and
    with the handbook's removal of the cards already detected on earlier days."""

    auc: float
    ap: float
    cp100: float
    n: int
    n_fraud: int
    cp100_handbook: float = float("nan")  # card_precision_at_k(remove_detected=True): the handbook's own


def evaluate(y: npt.ArrayLike, score: npt.ArrayLike, day: npt.ArrayLike, customer_id: npt.ArrayLike) -> Metrics:
    """ROC AUC, average precision and card precision@100 of ``score`` against ``y``."""
    yy = _labels(y)
    return Metrics(
        auc=roc_auc(yy, score),
        ap=average_precision(yy, score),
        cp100=card_precision_at_k(day, customer_id, yy, score, k=100),
        n=int(yy.size),
        n_fraud=int(yy.sum()),
        cp100_handbook=card_precision_at_k(day, customer_id, yy, score, k=100, remove_detected=True),
    )


# --------------------------------------------------------------------------- known-compromised cards


def known_compromised(
    customer_id: npt.ArrayLike,
    ts: npt.ArrayLike,
    y: npt.ArrayLike,
    known_at: npt.ArrayLike,
    until_ms: int,
    *,
    since_ms: int | None = None,
) -> set[str]:
    """Cards known to be compromised at ``until_ms``.

    A card is known when it has a fraud (``y == 1``) with ``ts < until_ms`` whose label was
    published by then (``known_at <= until_ms``), and, when ``since_ms`` is given,
    ``ts >= since_ms``. With ``since_ms`` = train start and ``until_ms`` = test start this is
    "cards with a fraud in the train window, or in the delay window with its label already
    arrived". The handbook only looks from its train start on, hence ``since_ms``.
    """
    cards = np.asarray(customer_id).astype(str)
    t = np.asarray(ts, dtype=np.int64)
    yy = _labels(y)
    avail = np.asarray(known_at, dtype=np.int64)
    _same_length(customer_id=cards, ts=t, y=yy, known_at=avail)
    known = (yy == 1) & (t < until_ms) & (avail <= until_ms)
    if since_ms is not None:
        known &= t >= since_ms
    return {str(c) for c in np.unique(cards[known])}


def known_compromised_filter(
    test_customer_id: npt.ArrayLike,
    test_ts: npt.ArrayLike,
    customer_id: npt.ArrayLike,
    ts: npt.ArrayLike,
    y: npt.ArrayLike,
    known_at: npt.ArrayLike,
    *,
    since_ms: int | None = None,
) -> BoolArray:
    """Mask of test rows to keep: rows whose card was not known compromised when their day began.

    For each UTC day of the test rows, the known set is :func:`known_compromised` with
    ``until_ms`` = that day's midnight, over the history arrays (``customer_id``, ``ts``, ``y``,
    ``known_at``). With labels published ``delay`` after the transaction this is exactly the
    handbook's rule (train frauds, plus delay-window frauds from the days whose labels have come
    in before the test day). Passing one history that includes the test window is safe: test
    frauds only count once their labels have arrived, never on their own day.
    """
    cards = np.asarray(test_customer_id).astype(str)
    t = np.asarray(test_ts, dtype=np.int64)
    _same_length(test_customer_id=cards, test_ts=t)
    keep = np.ones(len(cards), dtype=np.bool_)
    days = t // DAY_MS
    for d in np.unique(days):
        known = known_compromised(customer_id, ts, y, known_at, int(d) * DAY_MS, since_ms=since_ms)
        on_day = days == d
        keep[on_day] = ~np.isin(cards[on_day], np.array(sorted(known), dtype=str))
    return keep


# --------------------------------------------------------------------------- splits


class Window(NamedTuple):
    """A half-open time window ``[start_ms, end_ms)`` in epoch milliseconds UTC."""

    start_ms: int
    end_ms: int

    def contains(self, ts_ms: npt.ArrayLike) -> BoolArray:
        """Mask of timestamps inside the window."""
        t = np.asarray(ts_ms, dtype=np.int64)
        return (t >= self.start_ms) & (t < self.end_ms)

    @property
    def days(self) -> float:
        """Length in days."""
        return (self.end_ms - self.start_ms) / DAY_MS

    def label(self) -> str:
        """Human-readable span; day-aligned windows read as inclusive dates, ``2018-07-25..2018-07-31``."""
        if self.start_ms % DAY_MS == 0 and self.end_ms % DAY_MS == 0:
            return f"{_iso(self.start_ms)[:10]}..{_iso(self.end_ms - DAY_MS)[:10]}"
        return f"[{_iso(self.start_ms)}, {_iso(self.end_ms)})"


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Split:
    """One protocol split (see the module docstring for the layout).

    Checked on construction: every window is non-empty, no two windows overlap, train and
    validation both end by the delay start, and the delay window ends exactly where test begins.
    """

    train: Window
    validation: Window
    delay: Window
    test: Window

    def __post_init__(self) -> None:
        windows = {"train": self.train, "validation": self.validation, "delay": self.delay, "test": self.test}
        for name, w in windows.items():
            if w.end_ms <= w.start_ms:
                raise ValueError(f"{name} window is empty: {w}")
        items = list(windows.items())
        for i, (a_name, a) in enumerate(items):
            for b_name, b in items[i + 1 :]:
                if a.start_ms < b.end_ms and b.start_ms < a.end_ms:
                    raise ValueError(f"{a_name} {a} overlaps {b_name} {b}")
        if max(self.train.end_ms, self.validation.end_ms) > self.delay.start_ms:
            raise ValueError("train and validation must end by the start of the delay window")
        if self.delay.end_ms != self.test.start_ms:
            raise ValueError("the delay window must end where the test window begins")

    def windows(self) -> dict[str, Window]:
        """The four windows by name, in time order."""
        return {"validation": self.validation, "train": self.train, "delay": self.delay, "test": self.test}


def _split(train_start_ms: int, train_days: int, delay_days: int, test_days: int, valid_days: int) -> Split:
    train_end = train_start_ms + train_days * DAY_MS
    test_start = train_end + delay_days * DAY_MS
    return Split(
        train=Window(train_start_ms, train_end),
        validation=Window(train_start_ms - valid_days * DAY_MS, train_start_ms),
        delay=Window(train_end, test_start),
        test=Window(test_start, test_start + test_days * DAY_MS),
    )


def protocol_splits(
    start_ms: int,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    folds: int = 1,
    fold_step_days: int = 7,
    *,
    valid_days: int = 7,
) -> list[Split]:
    """``folds`` splits, the first with train starting at ``start_ms``, each next one shifted
    ``fold_step_days`` later (the handbook's prequential test folds start at its book split and
    move forward)."""
    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}")
    return [
        _split(start_ms + i * fold_step_days * DAY_MS, train_days, delay_days, test_days, valid_days)
        for i in range(folds)
    ]


def prequential_folds(
    test_start_ms: int,
    n_folds: int = 4,
    *,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    valid_days: int = 7,
    step_days: int = 7,
) -> list[Split]:
    """``n_folds`` splits, the first with its test window starting at ``test_start_ms``, each next
    one shifted ``step_days`` earlier (the handbook's prequential validation)."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be at least 1, got {n_folds}")
    return [
        _split(
            test_start_ms - i * step_days * DAY_MS - (delay_days + train_days) * DAY_MS,
            train_days,
            delay_days,
            test_days,
            valid_days,
        )
        for i in range(n_folds)
    ]


def model_selection_folds(split: Split, n_folds: int = 4, *, step_days: int = 7) -> list[Split]:
    """The handbook's validation folds for ``split``: same window lengths, the latest fold's test
    window ending at ``split.delay.start_ms``. Every window of every fold therefore ends by the
    split's delay start, so selecting on them never reads the delay or test windows (the latest
    fold's test window is the split's train window, as in the handbook)."""
    test_len = split.test.end_ms - split.test.start_ms
    return prequential_folds(
        split.delay.start_ms - test_len,
        n_folds,
        train_days=_whole_days(split.train),
        delay_days=_whole_days(split.delay),
        test_days=_whole_days(split.test),
        valid_days=_whole_days(split.validation),
        step_days=step_days,
    )


def _whole_days(w: Window) -> int:
    if (w.end_ms - w.start_ms) % DAY_MS:
        raise ValueError(f"window {w} is not a whole number of days")
    return (w.end_ms - w.start_ms) // DAY_MS


def handbook_split() -> Split:
    """The book's split: validation 2018-07-18..24, train 2018-07-25..31, delay 08-01..07, test 08-08..14."""
    return protocol_splits(utc_ms(2018, 7, 25))[0]
