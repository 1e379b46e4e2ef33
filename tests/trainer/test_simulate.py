"""The simulator: reproducible, and with the handbook's statistics."""

from __future__ import annotations

import time

import numpy as np
import pytest

from trainer.simulate import (
    DAY_MS,
    FRAUD_AMOUNT_CENTS,
    History,
    SimConfig,
    _daily_picks,
    _in_windows,
    _neighbours,
    _scenario3,
    labels_of,
    simulate,
    tx_ids,
)

SMALL = SimConfig(customers=500, terminals=1000, days=60, seed=7)


@pytest.fixture(scope="module")
def small() -> History:
    return simulate(SMALL)


def _same(a: History, b: History) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in History.__dataclass_fields__)


def test_same_seed_same_arrays_other_seed_differs(small: History) -> None:
    again = simulate(SMALL)
    assert _same(small, again)
    for field in History.__dataclass_fields__:
        assert getattr(small, field).dtype == getattr(again, field).dtype
    other = simulate(SimConfig(customers=500, terminals=1000, days=60, seed=8))
    assert not np.array_equal(small.amount_cents[:1000], other.amount_cents[:1000])
    assert len(small) != len(other) or not _same(small, other)


def test_volume_and_fraud_rate(small: History) -> None:
    per_customer_day = len(small) / (SMALL.customers * SMALL.days)
    assert 1.7 <= per_customer_day <= 2.3
    # 2 terminals a day for 28 days over 1 000 terminals and 3 customers a day for 14 days over 500
    # customers make this small world far more compromised than the book's (0.84 %).
    assert 0.02 <= small.is_fraud.mean() <= 0.15
    counts = np.bincount(small.scenario, minlength=4)
    assert (counts[1:] > 0).all(), counts  # every scenario present
    assert np.array_equal(small.is_fraud, (small.scenario > 0).astype(np.int8))


def test_amounts(small: History) -> None:
    assert small.amount_cents.dtype == np.int64
    assert (small.amount_cents > 0).all()
    assert (small.is_fraud[small.amount_cents > FRAUD_AMOUNT_CENTS] == 1).all()
    s3 = small.amount_cents[small.scenario == 3]
    assert (s3 % 5 == 0).all()  # amount x 5, in whole cents
    assert (s3 // 5 <= FRAUD_AMOUNT_CENTS).all()  # the original was not a scenario-1 amount
    genuine = small.amount_cents[small.scenario == 0]
    assert 40_00 <= genuine.mean() <= 65_00  # U(5, 100) means: about 52.50
    assert np.median(s3) > 3 * np.median(genuine)


def test_times_ids_and_order(small: History) -> None:
    start = SMALL.start_ms
    assert start == 1_522_540_800_000  # 2018-04-01T00:00:00Z
    assert small.ts.dtype == np.int64
    assert (small.ts >= start).all() and (small.ts < start + SMALL.days * DAY_MS).all()
    assert (small.ts % 1000 == 0).all()  # whole seconds, as in the handbook
    assert (np.diff(small.ts) >= 0).all()
    assert (small.tx_id[1:] > small.tx_id[:-1]).all()  # string order == index order
    assert np.array_equal(small.tx_id, tx_ids(len(small)))
    assert small.customer_id[0].startswith("c") and small.terminal_id[0].startswith("t")
    hours = (small.ts - start) % DAY_MS // 3_600_000
    assert abs(hours.mean() - 11.5) < 0.5  # N(12 h, 5.6 h), truncated to the day
    assert len(np.unique(small.customer_id)) > 0.9 * SMALL.customers


def test_labels_of(small: History) -> None:
    lab = labels_of(small, feedback_delay_days=7)
    assert len(lab) == len(small)
    assert np.array_equal(lab.reported_at, lab.ts + 7 * DAY_MS)
    assert (np.diff(lab.reported_at) >= 0).all()
    assert np.array_equal(lab.tx_id, small.tx_id)  # constant delay keeps the (ts, tx_id) order
    assert int(lab.is_fraud.sum()) == int(small.is_fraud.sum())


def test_labels_of_realistic_delays(small: History) -> None:
    lab = labels_of(small)
    assert sorted(lab.tx_id.tolist()) == sorted(small.tx_id.tolist())
    assert (np.diff(lab.reported_at) >= 0).all()
    delay = (lab.reported_at - lab.ts) / DAY_MS
    assert delay.min() >= 1.0 and delay.max() <= 60.0
    within = (delay <= 7.0).mean()
    assert 0.83 < within < 0.87
    assert (delay > 21.0).mean() > 0.01  # a long tail of chargebacks weeks late
    inversions = (np.diff(lab.ts) < 0).mean()
    assert inversions > 0.3  # report order is not transaction order
    assert np.array_equal(labels_of(small).reported_at, lab.reported_at)  # seeded
    assert not np.array_equal(labels_of(small, seed=1).reported_at, lab.reported_at)


def test_tx_ids_zero_padded() -> None:
    assert tx_ids(3).tolist() == ["tx000000000", "tx000000001", "tx000000002"]
    assert tx_ids(0).shape == (0,)
    assert tx_ids(12).dtype == np.dtype("<U11")


def test_neighbours_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    cust, term = rng.uniform(0, 100, (300, 2)), rng.uniform(0, 100, (2000, 2))
    indptr, reach = _neighbours(cust, term, 5.0)
    for c in range(len(cust)):
        near = np.flatnonzero(((term - cust[c]) ** 2).sum(axis=1) < 25.0)
        assert reach[indptr[c] : indptr[c + 1]].tolist() == near.tolist()


def test_daily_picks_distinct() -> None:
    picks = _daily_picks(np.random.default_rng(0), 5, 3, 2000)
    assert picks.shape == (2000, 3)
    assert all(len(set(row)) == 3 for row in picks.tolist())
    assert np.bincount(picks.ravel(), minlength=5).min() > 1000  # every id gets picked
    assert _daily_picks(np.random.default_rng(0), 2, 3, 4).shape == (4, 2)


def test_in_windows_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    days, length = 40, 6
    picks = _daily_picks(rng, 20, 2, days)
    who, day = rng.integers(0, 20, 5000), rng.integers(0, days, 5000)
    got = _in_windows(who, day, picks, days, length)
    expected = [any(w in picks[p] for p in range(max(0, d - length + 1), d + 1)) for w, d in zip(who, day, strict=True)]
    assert got.tolist() == expected


def test_scenario3_takes_a_third_of_each_window() -> None:
    rng = np.random.default_rng(2)
    days = 30
    cust = np.repeat(np.arange(4), 90)  # 3 transactions a day each, in (customer, day) order
    day = np.tile(np.repeat(np.arange(days), 3), 4)
    picks = np.full((days, 1), 3)  # customer 3 picked daily ...
    picks[0, 0] = 1  # ... except day 0: customer 1
    chosen = _scenario3(rng, cust, day, picks, days)
    assert chosen[cust == 0].sum() == 0 and chosen[cust == 2].sum() == 0
    assert chosen[cust == 1].sum() == 14  # 42 transactions in days 0..13, a third
    assert not chosen[(cust == 1) & (day >= 14)].any()
    assert chosen[cust == 3].sum() >= 14  # overlapping windows: each takes its own third


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="customers"):
        SimConfig(customers=0)
    with pytest.raises(ValueError, match="radius"):
        SimConfig(radius=0)
    with pytest.raises(ValueError):
        SimConfig(start="2018-13-01")


def test_book_size_run() -> None:
    began = time.perf_counter()
    h = simulate(SimConfig())
    elapsed = time.perf_counter() - began
    print(f"book run: {len(h)} transactions, {h.is_fraud.mean():.4%} fraud, {elapsed:.2f} s")
    assert 1_700_000 <= len(h) <= 1_850_000  # the book: 1 754 155
    assert 0.007 <= h.is_fraud.mean() <= 0.010  # the book: 0.84 %
    assert np.bincount(h.scenario, minlength=4).min() > 0
