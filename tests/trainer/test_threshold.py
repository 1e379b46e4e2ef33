"""The daily-alert-budget threshold."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.threshold import Threshold, choose_threshold


def _alerts(score: np.ndarray, t: Threshold) -> int:
    return int(np.count_nonzero(np.asarray(score, dtype=np.float32) >= np.float32(t.value)))


def test_budget_is_respected_and_threshold_is_the_smallest() -> None:
    rng = np.random.default_rng(0)
    n_days, per_day, budget = 7, 500, 20
    day = np.repeat(np.arange(n_days), per_day)
    score = rng.random(n_days * per_day)
    t = choose_threshold(score, day, budget)
    flagged = _alerts(score, t)
    assert flagged <= budget * n_days
    assert t.expected_alerts_per_day == pytest.approx(flagged / n_days)
    assert t.expected_alerts_per_day <= budget
    # the next lower float32 score would break the budget
    s32 = np.unique(score.astype(np.float32))
    lower = s32[s32 < np.float32(t.value)].max()
    assert np.count_nonzero(score.astype(np.float32) >= lower) > budget * n_days
    assert t.budget_per_day == budget and t.n_days == n_days


def test_value_is_exact_in_float32_and_the_comparison_is_safe() -> None:
    # scores 1e-10 apart: distinct in float64, a few values in float32
    day = np.zeros(1000, dtype=np.int64)
    score = 0.3 + np.arange(1000) * 1e-10
    t = choose_threshold(score, day, budget_per_day=10)
    assert float(np.float32(t.value)) == t.value
    assert _alerts(score, t) <= 10
    # a float64 comparison never flags more than the float32 one
    assert int(np.count_nonzero(score >= t.value)) <= _alerts(score, t)
    assert t.flags(score).sum() == _alerts(score, t)


def test_float32_rounding_never_exceeds_the_budget_on_random_scores() -> None:
    rng = np.random.default_rng(1)
    for budget in (0, 1, 5, 37):
        day = rng.integers(0, 5, 2000)
        score = rng.random(2000) * 1e-3 + 0.5  # dense: many float64 scores share a float32
        t = choose_threshold(score, day, budget)
        assert _alerts(score, t) <= budget * len(np.unique(day))
        assert float(np.float32(t.value)) == t.value


def test_ties_at_the_boundary_are_all_excluded() -> None:
    t = choose_threshold([0.9, 0.5, 0.5, 0.1], [0, 0, 0, 0], budget_per_day=2)
    assert t.value == pytest.approx(0.9)
    assert t.expected_alerts_per_day == 1.0
    t3 = choose_threshold([0.9, 0.5, 0.5, 0.1], [0, 0, 0, 0], budget_per_day=3)
    assert t3.value == pytest.approx(0.5)
    assert t3.expected_alerts_per_day == 3.0


def test_zero_budget_flags_nothing_and_big_budget_flags_everything() -> None:
    score = np.array([0.2, 1.0, 0.7])
    none = choose_threshold(score, [0, 0, 1], budget_per_day=0)
    assert none.value > 1.0 and _alerts(score, none) == 0
    assert none.expected_alerts_per_day == 0.0
    every = choose_threshold(score, [0, 0, 1], budget_per_day=5)
    assert every.value == pytest.approx(0.2) and _alerts(score, every) == 3


def test_precision_and_recall_at_the_threshold() -> None:
    score = [0.9, 0.8, 0.7, 0.6, 0.1, 0.05]
    day = [0, 0, 0, 1, 1, 1]
    y = [1, 0, 1, 0, 1, 0]
    t = choose_threshold(score, day, budget_per_day=2, y=y)  # 4 alerts over 2 days: 0.9, 0.8, 0.7, 0.6
    assert t.value == pytest.approx(0.6)
    assert t.precision == pytest.approx(2 / 4)
    assert t.recall == pytest.approx(2 / 3)
    assert "budget" in t.rule
    assert choose_threshold(score, day, budget_per_day=2).precision is None
    assert choose_threshold(score, day, budget_per_day=0, y=y).precision is None


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        choose_threshold([0.1], [0], budget_per_day=-1)
    with pytest.raises(ValueError):
        choose_threshold([], [], budget_per_day=1)
    with pytest.raises(ValueError):
        choose_threshold([0.1, float("nan")], [0, 0], budget_per_day=1)
    with pytest.raises(ValueError):
        choose_threshold([0.1, 0.2], [0], budget_per_day=1)
