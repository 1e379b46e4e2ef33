"""One feature definition, two paths: the online replay equals the offline rows to the bit.

The history is the simulator's (50 days of a small population), so every 30-day customer
window and every delayed terminal window fills and evicts.
"""

from __future__ import annotations

import heapq

import numpy as np
import numpy.typing as npt
import pytest

from schemas.features import (
    DAY_MS,
    FEATURE_NAMES,
    FEEDBACK_DELAY_DAYS,
    N_FEATURES,
    OnlineState,
    offline_features,
)
from trainer.simulate import History, Labels, SimConfig, labels_of, simulate

F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def history() -> tuple[History, Labels]:
    h = simulate(SimConfig(customers=300, terminals=600, days=50, seed=7))
    return h, labels_of(h, FEEDBACK_DELAY_DAYS)


def _offline(h: History, lab: Labels, is_fraud: npt.NDArray[np.int8] | None = None) -> F32:
    return offline_features(h.tx_id, h.ts, h.customer_id, h.terminal_id, h.amount_cents,
                            lab.terminal_id, lab.ts, lab.is_fraud if is_fraud is None else is_fraud)


def _replay(h: History, lab: Labels, feed_twice: frozenset[int] = frozenset()) -> F32:
    """The online path: events in event time, each label published at ``available_at``."""
    events: list[tuple[int, int, int]] = [(int(t), 1, i) for i, t in enumerate(h.ts)]
    events += [(int(t), 0, j) for j, t in enumerate(lab.available_at)]  # labels first on ties
    heapq.heapify(events)
    state = OnlineState()
    rows = np.zeros((len(h), N_FEATURES), dtype=np.float32)
    while events:
        _, kind, i = heapq.heappop(events)
        if kind == 0:
            state.label(str(lab.terminal_id[i]), int(lab.ts[i]), str(lab.tx_id[i]), bool(lab.is_fraud[i]))
            continue
        args = (str(h.tx_id[i]), int(h.ts[i]), str(h.customer_id[i]), str(h.terminal_id[i]), int(h.amount_cents[i]))
        row = state.transaction(*args)
        if i in feed_twice:
            again = state.transaction(*args)
            assert again == row, "a redelivered transaction must get the same row"
        rows[i] = np.asarray(row, dtype=np.float32)
    return rows


def test_online_replay_equals_offline_to_the_bit(history: tuple[History, Labels]) -> None:
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


def test_no_label_is_used_before_it_would_have_arrived(history: tuple[History, Labels]) -> None:
    h, lab = history
    base = _offline(h, lab)
    cutoff = int(h.ts.min()) + 30 * DAY_MS
    # Flip every label that had not arrived by the cutoff: rows up to the cutoff must not move.
    not_arrived = lab.available_at > cutoff
    flipped = np.where(not_arrived, 1 - lab.is_fraud, lab.is_fraud).astype(np.int8)
    moved = _offline(h, lab, flipped)
    before = h.ts <= cutoff
    assert np.array_equal(base[before], moved[before])
    # The test can fail: flipping labels that HAD arrived does change rows before the cutoff.
    arrived = np.where(~not_arrived, 1 - lab.is_fraud, lab.is_fraud).astype(np.int8)
    assert not np.array_equal(base[before], _offline(h, lab, arrived)[before])
    # And rows after the cutoff do see the late labels eventually.
    assert not np.array_equal(base[~before], moved[~before])


def test_feeding_a_transaction_twice_changes_no_row(history: tuple[History, Labels]) -> None:
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
