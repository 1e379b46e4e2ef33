"""Window metrics: the definitions by hand on small rows, undefined ones null, and order-free bits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.drift import Calibration
from trainer.evaluate import roc_auc
from workers.monitor.compute import window_metrics
from workers.monitor.join import Rows

CAL = Calibration("isotonic", np.array([0.0, 1.0]), np.array([0.0, 0.5]))


def rows(score: list[float], y: list[int], cards: list[str] | None = None) -> Rows:
    s = np.array(score)
    return Rows(s, s >= 0.5, np.array(y, np.int8), np.array(cards or [f"c{i}" for i in range(len(s))], object))


def test_a_tx_day_by_hand_with_unlabelled_rows_left_out_of_the_labelled_metrics() -> None:
    r = rows([0.9, 0.8, 0.6, 0.3, 0.2, 0.7], [1, 0, -1, 1, 0, -1])
    m = window_metrics(r, CAL, scored=True, labelled=True, card_day=100)
    assert (m["n_scored"], m["n_labelled"], m["n_fraud"], m["alerts"]) == (6, 4, 2, 4)
    assert (m["label_coverage"], m["fraud_rate"], m["alert_rate"]) == (4 / 6, 0.5, 4 / 6)
    assert (m["precision"], m["recall"]) == (0.5, 0.5)  # labelled flags: 0.9 fraud, 0.8 genuine
    assert m["mean_score"] == pytest.approx(3.5 / 6)
    assert m["estimated_precision"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.7) / 2 / 4)
    assert m["auc"] == roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.2]) == 0.75
    assert m["card_precision_at_100"] == 0.02  # two compromised cards among the top 100 (of 4)


def test_undefined_metrics_are_null_and_the_stage_decides_what_is_computed() -> None:
    genuine = rows([0.1, 0.2], [0, 0])
    m = window_metrics(genuine, None, scored=False, labelled=True)
    assert m["auc"] is m["average_precision"] is m["recall"] is m["precision"] is None
    assert m["estimated_precision"] is m["n_scored"] is m["card_precision_at_100"] is None
    assert m["fraud_rate"] == 0.0
    provisional = window_metrics(rows([0.9, 0.2], [1, 0]), CAL, scored=True, labelled=False, card_day=1)
    assert provisional["n_labelled"] is provisional["auc"] is provisional["card_precision_at_100"] is None
    assert provisional["n_scored"] == 2 and provisional["estimated_precision"] == 0.45


def test_the_same_rows_in_another_order_give_the_same_bits() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    score = rng.random(n) ** 3  # many tiny values: a naive sum depends on the order
    score[:500] = 0.25
    y = (rng.random(n) < 0.2).astype(int).tolist()
    cards = [f"c{i % 700}" for i in range(n)]
    base = window_metrics(rows(score.tolist(), y, cards), CAL, scored=True, labelled=True, card_day=3)
    for seed in range(3):
        p = np.random.default_rng(seed).permutation(n)
        again = window_metrics(rows(score[p].tolist(), [y[i] for i in p], [cards[i] for i in p]), CAL,
                               scored=True, labelled=True, card_day=3)
        assert again == base
    assert not any(isinstance(v, float) and math.isnan(v) for v in base.values())
