"""The second generator: deterministic, valid by the worker's contract, unlike the handbook's; and the
evaluation's forward folds."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from schemas.validate import Tx, decode_transaction
from trainer.evaluate import handbook_split, utc_ms
from trainer.othersim import OtherConfig, simulate_other
from trainer.seeds import forward_splits
from trainer.simulate import DAY_MS, History, SimConfig, labels_of, simulate

SMALL = OtherConfig(customers=600, terminals=1200, days=60, seed=3)


@pytest.fixture(scope="module")
def other() -> History:
    return simulate_other(SMALL)


def test_a_seed_gives_the_same_history(other: History) -> None:
    again = simulate_other(SMALL)
    assert all(np.array_equal(getattr(other, f), getattr(again, f)) for f in History.__dataclass_fields__)
    assert not np.array_equal(simulate_other(SMALL, seed=4).amount_cents[:1000], other.amount_cents[:1000])


def test_sorted_valid_rows_and_a_plausible_fraud_mix(other: History) -> None:
    assert (np.diff(other.ts) >= 0).all() and len(set(other.tx_id.tolist())) == len(other)
    assert 0.002 < other.is_fraud.mean() < 0.08  # fixed victims a day: a small population has a higher rate
    assert set(np.unique(other.scenario).tolist()) == {0, 1, 2, 3}
    assert ((other.scenario != 0) == (other.is_fraud == 1)).all()
    now = int(other.ts.max()) + DAY_MS
    for i in np.linspace(0, len(other) - 1, 500).astype(int).tolist():
        row = {"tx_id": str(other.tx_id[i]), "ts": int(other.ts[i]), "customer_id": str(other.customer_id[i]),
               "terminal_id": str(other.terminal_id[i]), "amount": int(other.amount_cents[i]) / 100}
        assert isinstance(decode_transaction(orjson.dumps(row), now), Tx), row


def test_unlike_the_handbook(other: History) -> None:
    book = simulate(SimConfig(customers=600, terminals=1200, days=60, seed=3))
    # Log-normal spending in towns, card tests of a few units: amounts and hours spread differently.
    assert abs(np.median(other.amount_cents) - np.median(book.amount_cents)) > 500
    tests = other.amount_cents[other.scenario == 1]
    assert (tests <= 300).mean() > 0.5, "card testing: mostly small amounts"
    hours = (other.ts % DAY_MS) // 3_600_000
    assert np.bincount(hours, minlength=24).argmax() in (18, 19, 20)


def test_forward_folds_are_the_handbooks_moved_a_week_each() -> None:
    h = simulate(SimConfig(customers=50, terminals=100, days=183, seed=0))
    folds = forward_splits(h, 4, 7)
    assert folds[0] == handbook_split()
    assert [f.test.start_ms for f in folds] == [utc_ms(2018, 8, 8) + 7 * k * DAY_MS for k in range(4)]
    longer = forward_splits(h, 1, 28)[0]
    assert longer.train.end_ms == handbook_split().train.end_ms
    assert longer.train.start_ms == handbook_split().train.end_ms - 28 * DAY_MS
    assert longer.validation.end_ms == longer.train.start_ms


def test_the_training_window_is_four_weeks_shortened_by_weeks_on_short_histories() -> None:
    from trainer.fit import TRAIN_DAYS
    from trainer.pipeline import default_split

    book = default_split(simulate(SimConfig(customers=50, terminals=100, days=183, seed=0)))
    assert (book.train.end_ms, book.test) == (handbook_split().train.end_ms, handbook_split().test)
    assert book.train.end_ms - book.train.start_ms == TRAIN_DAYS * DAY_MS == 28 * DAY_MS
    quick = default_split(simulate(SimConfig(customers=50, terminals=100, days=84, seed=0)))
    assert quick.train.end_ms - quick.train.start_ms == 21 * DAY_MS  # 37 days of look-back before it
    short = default_split(simulate(SimConfig(customers=50, terminals=100, days=35, seed=0)))
    assert short.train.end_ms - short.train.start_ms == 7 * DAY_MS  # then refused for too little history


def test_the_test_rows_do_not_move_with_the_training_window() -> None:
    from trainer.pipeline import Dataset, test_mask

    h = simulate(SimConfig(customers=300, terminals=600, days=183, seed=1))
    ds = Dataset(h, labels_of(h), np.zeros((len(h), 1), np.float32), h.ts // DAY_MS)
    week, month = forward_splits(h, 1, 7)[0], forward_splits(h, 1, 28)[0]
    assert week.test == month.test
    assert np.array_equal(test_mask(ds, week), test_mask(ds, month))
