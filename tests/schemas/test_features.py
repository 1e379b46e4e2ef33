"""One feature definition, two paths: the online replay equals the offline rows to the bit.

The history is the simulator's (50 days of a small population), so every 30-day customer
window and every delayed terminal window fills and evicts.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from schemas.features import (
    DAY_MS,
    FEATURE_NAMES,
    FEEDBACK_DELAY_DAYS,
    HOUR_MS,
    LABEL_CUTOFF_MARGIN_MS,
    N_FEATURES,
    OnlineState,
    offline_features,
    report_slot,
)
from trainer.simulate import History, SimConfig, simulate

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Events:
    """Label events as a live stream sees them: delays spread over 1-7 days (out of transaction-time
    order), some weeks late, duplicates, and labels that change their minds."""

    tx_id: npt.NDArray[np.str_]
    terminal_id: npt.NDArray[np.str_]
    ts: npt.NDArray[np.int64]
    reported_at: npt.NDArray[np.int64]
    is_fraud: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.tx_id)

    def with_fraud(self, is_fraud: npt.NDArray[np.int8]) -> Events:
        return Events(self.tx_id, self.terminal_id, self.ts, self.reported_at, is_fraud)


def label_events(h: History, seed: int = 3) -> Events:
    rng = np.random.default_rng(seed)
    n = len(h)
    delay = rng.integers(DAY_MS, 7 * DAY_MS, size=n)
    late = rng.random(n) < 0.05
    delay[late] = rng.integers(8 * DAY_MS, 40 * DAY_MS, size=int(late.sum()))  # chargebacks weeks later
    idx = np.arange(n)
    fraud = h.is_fraud.astype(np.int8)
    # Flips: a first word (the opposite) a few days before the final one.
    flip = rng.random(n) < 0.03
    fi = idx[flip]
    fdelay = np.maximum(delay[flip] - rng.integers(HOUR_MS, 3 * DAY_MS, size=len(fi)), 0)
    dup = idx[rng.random(n) < 0.05]
    rows = np.concatenate((idx, fi, dup))
    rep = np.concatenate((h.ts + delay, h.ts[fi] + fdelay, h.ts[dup] + delay[dup]))
    is_fraud = np.concatenate((fraud, 1 - fraud[fi], fraud[dup])).astype(np.int8)
    order = np.argsort(rep, kind="stable")
    rows, rep, is_fraud = rows[order], rep[order], is_fraud[order]
    return Events(h.tx_id[rows], h.terminal_id[rows], h.ts[rows], rep, is_fraud)


@pytest.fixture(scope="module")
def history() -> tuple[History, Events]:
    h = simulate(SimConfig(customers=300, terminals=600, days=60, seed=7))
    return h, label_events(h)


def _offline(h: History, lab: Events) -> F32:
    return offline_features(h.tx_id, h.ts, h.customer_id, h.terminal_id, h.amount_cents,
                            lab.tx_id, lab.terminal_id, lab.ts, lab.reported_at, lab.is_fraud)


def _replay(h: History, lab: Events, feed_twice: frozenset[int] = frozenset()) -> F32:
    """The online path: events in event time, each label published at its ``reported_at``."""
    events: list[tuple[int, int, int]] = [(int(t), 1, i) for i, t in enumerate(h.ts)]
    events += [(int(t), 0, j) for j, t in enumerate(lab.reported_at)]  # labels first on ties
    heapq.heapify(events)
    state = OnlineState()
    rows = np.zeros((len(h), N_FEATURES), dtype=np.float32)
    while events:
        _, kind, i = heapq.heappop(events)
        if kind == 0:
            state.label(str(lab.terminal_id[i]), int(lab.ts[i]), str(lab.tx_id[i]), bool(lab.is_fraud[i]),
                        int(lab.reported_at[i]))
            continue
        args = (str(h.tx_id[i]), int(h.ts[i]), str(h.customer_id[i]), str(h.terminal_id[i]), int(h.amount_cents[i]))
        row = state.transaction(*args)
        if i in feed_twice:
            again = state.transaction(*args)
            assert again == row, "a redelivered transaction must get the same row"
        rows[i] = np.asarray(row, dtype=np.float32)
    return rows


def test_labels_arrive_out_of_transaction_order(history: tuple[History, Events]) -> None:
    _, lab = history
    day = lab.ts // DAY_MS
    assert (np.diff(day) < 0).sum() > len(lab) // 10, "the stream must reorder labels by transaction time"
    assert ((lab.reported_at - lab.ts) > 7 * DAY_MS).any()
    _, counts = np.unique(lab.tx_id, return_counts=True)
    assert (counts > 1).any()


def test_online_replay_equals_offline_to_the_bit(history: tuple[History, Events]) -> None:
    h, lab = history
    assert (h.ts.max() - h.ts.min()) / DAY_MS >= 45
    offline = _offline(h, lab)
    online = _replay(h, lab)
    assert offline.dtype == np.float32 and offline.shape == (len(h), N_FEATURES)
    mismatch = np.argwhere(offline.view(np.uint32) != online.view(np.uint32))
    assert len(mismatch) == 0, f"first mismatches (row, feature): {[(r, FEATURE_NAMES[c]) for r, c in mismatch[:5]]}"
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    # Every window fills: terminal counts and risks are not all zero, 30-day windows evict.
    for n in (1, 7, 30):
        assert offline[:, col[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"]].max() > 0
        assert offline[:, col[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"]].max() > 0
    last = h.ts >= h.ts.min() + 40 * DAY_MS
    per_customer = {c: int((h.customer_id == c).sum()) for c in np.unique(h.customer_id[last])}
    nb30 = offline[last, col["CUSTOMER_ID_NB_TX_30DAY_WINDOW"]]
    evicted = nb30 < np.array([per_customer[c] for c in h.customer_id[last]])
    assert evicted.mean() > 0.9, "30-day windows must have evicted older transactions by day 40"
    # The first week has no terminal history at all (it lies behind the feedback delay).
    first = h.ts < h.ts.min() + (FEEDBACK_DELAY_DAYS) * DAY_MS
    assert offline[first, col["TERMINAL_ID_NB_TX_30DAY_WINDOW"]].max() == 0


def test_arrival_order_and_duplicates_change_nothing(history: tuple[History, Events]) -> None:
    h, lab = history
    base = _offline(h, lab)
    perm = np.random.default_rng(1).permutation(len(lab))
    shuffled = Events(lab.tx_id[perm], lab.terminal_id[perm], lab.ts[perm], lab.reported_at[perm], lab.is_fraud[perm])
    assert np.array_equal(base, _offline(h, shuffled))
    twice = np.concatenate((np.arange(len(lab)), np.arange(0, len(lab), 3)))
    doubled = Events(lab.tx_id[twice], lab.terminal_id[twice], lab.ts[twice], lab.reported_at[twice],
                     lab.is_fraud[twice])
    assert np.array_equal(base, _offline(h, doubled))


def test_a_label_that_changes_its_mind_counts_by_its_latest_word() -> None:
    t = 1_600_000_000_000 - 1_600_000_000_000 % DAY_MS  # a midnight
    d0 = t // DAY_MS
    state = OnlineState()
    state.transaction("x", t + 1000, "c1", "T", 500)
    state.label("T", t + 1000, "x", True, t + 2 * DAY_MS)             # fraud, counted from day d0 + 3
    state.label("T", t + 1000, "x", False, t + 5 * DAY_MS)            # retracted, from day d0 + 6
    risk1 = FEATURE_NAMES.index("TERMINAL_ID_RISK_30DAY_WINDOW")

    def risk_on(day: int) -> float:
        return state.transaction(f"y{day}", day * DAY_MS + 10 * HOUR_MS, f"c{day}", "T", 100)[risk1]

    assert risk_on(d0 + 8) == 0.0 + 0.0  # x's day is in the window, but the retraction came first
    assert report_slot(t + 2 * DAY_MS) == d0 + 3 and report_slot(d0 * DAY_MS + DAY_MS - HOUR_MS) == d0 + 2
    s2 = OnlineState()
    s2.transaction("x", t + 1000, "c1", "T", 500)
    s2.label("T", t + 1000, "x", True, t + 2 * DAY_MS)
    assert s2.transaction("z", (d0 + 8) * DAY_MS + HOUR_MS, "c2", "T", 100)[risk1] == 1.0


def test_no_label_is_used_before_its_cutoff(history: tuple[History, Events]) -> None:
    h, lab = history
    base = _offline(h, lab)
    day = int(h.ts.min()) // DAY_MS + 30
    cutoff = day * DAY_MS - LABEL_CUTOFF_MARGIN_MS
    # Flip every label reported at or after the cut-off of `day`: rows up to that day must not move.
    after = lab.reported_at >= cutoff
    moved = _offline(h, lab.with_fraud(np.where(after, 1 - lab.is_fraud, lab.is_fraud).astype(np.int8)))
    before = h.ts // DAY_MS <= day
    assert np.array_equal(base[before], moved[before])
    # The test can fail: flipping labels reported before the cut-off does change rows of that day.
    earlier = lab.with_fraud(np.where(~after, 1 - lab.is_fraud, lab.is_fraud).astype(np.int8))
    assert not np.array_equal(base[before], _offline(h, earlier)[before])
    # And rows after the cut-off do see the later labels eventually.
    assert not np.array_equal(base[~before], moved[~before])


def test_feeding_a_transaction_twice_changes_no_row(history: tuple[History, Events]) -> None:
    h, lab = history
    twice = frozenset(range(0, len(h), 7))
    assert np.array_equal(_replay(h, lab, feed_twice=twice), _offline(h, lab))


def test_late_transaction_sees_exactly_what_precedes_it() -> None:
    state = OnlineState(lateness_ms=DAY_MS)
    t = 1_600_000_000_000
    state.transaction("a", t, "c", "t", 1000)
    state.transaction("c", t + 2000, "c", "t", 3000)
    late = state.transaction("b", t + 1000, "c", "t", 2000)
    # 1-day window of "b": a and b (c is after it), mean (10 + 20) / 2.
    assert late[3:5] == [2.0, 15.0]
