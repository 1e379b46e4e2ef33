"""Metrics, the handbook's protocol splits and the known-compromised filter."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from trainer.evaluate import (
    DAY_MS,
    Metrics,
    Split,
    Window,
    average_precision,
    card_precision_at_k,
    evaluate,
    handbook_split,
    known_compromised,
    known_compromised_filter,
    model_selection_folds,
    prequential_folds,
    protocol_splits,
    roc_auc,
    utc_ms,
)


def _ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp() * 1000)


# --------------------------------------------------------------------------- metrics


def test_auc_and_ap_on_a_toy_case() -> None:
    y = [0, 0, 1, 1]
    score = [0.1, 0.4, 0.35, 0.8]
    # positive pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4) -> 3/4
    assert roc_auc(y, score) == pytest.approx(0.75)
    # ranked: 0.8 (fraud) P=1 at R=.5; 0.4 (legit); 0.35 (fraud) P=2/3 at R=1 -> .5*1 + .5*2/3
    assert average_precision(y, score) == pytest.approx(0.5 + 1 / 3)


def test_perfect_and_reversed_rankings() -> None:
    y = [0, 1, 0, 1]
    assert roc_auc(y, [0.1, 0.9, 0.2, 0.8]) == 1.0
    assert roc_auc(y, [0.9, 0.1, 0.8, 0.2]) == 0.0
    assert average_precision(y, [0.1, 0.9, 0.2, 0.8]) == 1.0


def test_single_class_metrics_are_nan_without_warnings() -> None:
    assert math.isnan(roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(average_precision([0, 0, 0], [0.1, 0.2, 0.3]))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="length"):
        card_precision_at_k([0, 0], ["a", "b"], [0, 1], [0.1])
    with pytest.raises(ValueError, match="positive"):
        card_precision_at_k([0], ["a"], [0], [0.1], k=0)


# Day 0: card a has its top score on a legitimate transaction but a fraud that day -> compromised.
#   cards by max score: a .9 (fraud) | b .8 | c .7 (fraud) | d .2 (fraud)
# Day 1: b .95 (fraud) | a .3 (fraud)   -- only two cards
CP_DAY = [0, 0, 0, 0, 0, 1, 1]
CP_CARD = ["a", "a", "b", "c", "d", "a", "b"]
CP_Y = [0, 1, 0, 1, 1, 1, 1]
CP_SCORE = [0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.95]


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, (1 / 1 + 1 / 1) / 2),  # day 0: a; day 1: b
        (2, (1 / 2 + 2 / 2) / 2),  # day 0: a, b; day 1: b, a
        (3, (2 / 3 + 2 / 3) / 2),  # day 0: a, b, c; day 1 has only 2 cards, still divided by 3
        (4, (3 / 4 + 2 / 4) / 2),
    ],
)
def test_card_precision_at_k_hand_computed(k: int, expected: float) -> None:
    assert card_precision_at_k(CP_DAY, CP_CARD, CP_Y, CP_SCORE, k=k) == pytest.approx(expected)


def test_card_precision_ties_break_by_customer_id() -> None:
    # three cards tied at 0.5; with k=1 the smallest id wins
    assert card_precision_at_k([0, 0, 0], ["c", "a", "b"], [0, 1, 0], [0.5, 0.5, 0.5], k=1) == 1.0
    assert card_precision_at_k([0, 0, 0], ["c", "a", "b"], [1, 0, 1], [0.5, 0.5, 0.5], k=1) == 0.0


def _cp_reference(day: np.ndarray, card: np.ndarray, y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Straight transcription of the handbook's loop."""
    per_day = []
    for d in sorted(set(day.tolist())):
        best: dict[str, tuple[float, int]] = {}
        for c, yy, s in zip(card[day == d], y[day == d], score[day == d], strict=True):
            old = best.get(c, (-math.inf, 0))
            best[c] = (max(old[0], s), max(old[1], int(yy)))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        per_day.append(sum(v[1] for _, v in ranked) / k)
    return float(np.mean(per_day))


def test_card_precision_matches_a_loop_reference() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    day = rng.integers(0, 5, n)
    card = np.array([f"c{i}" for i in rng.integers(0, 400, n)])
    y = (rng.random(n) < 0.05).astype(int)
    score = np.round(rng.random(n) + 0.3 * y, 3)  # rounding makes ties
    for k in (1, 10, 100, 500):
        assert card_precision_at_k(day, card, y, score, k=k) == pytest.approx(_cp_reference(day, card, y, score, k))


def _cp_removing_reference(day: np.ndarray, card: np.ndarray, y: np.ndarray, score: np.ndarray, k: int) -> float:
    """The handbook's ``card_precision_top_k`` loop: detected compromised cards leave the later days."""
    per_day, detected = [], set()
    for d in sorted(set(day.tolist())):
        best: dict[str, tuple[float, int]] = {}
        for c, yy, s in zip(card[day == d], y[day == d], score[day == d], strict=True):
            if c not in detected:
                old = best.get(c, (-math.inf, 0))
                best[c] = (max(old[0], s), max(old[1], int(yy)))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        per_day.append(sum(v[1] for _, v in ranked) / k)
        detected |= {c for c, v in ranked if v[1]}
    return float(np.mean(per_day))


def test_card_precision_removing_detected_cards_hand_computed() -> None:
    # k=2: day 0 a, b (a fraud, detected); day 1 a is gone, b alone: 1/2
    assert card_precision_at_k(CP_DAY, CP_CARD, CP_Y, CP_SCORE, k=2, remove_detected=True) == pytest.approx(0.5)


def test_card_precision_removing_detected_matches_the_handbooks_loop() -> None:
    rng = np.random.default_rng(8)
    n = 3000
    day = rng.integers(0, 6, n)
    card = np.array([f"c{i}" for i in rng.integers(0, 300, n)])
    y = (rng.random(n) < 0.08).astype(int)
    score = np.round(rng.random(n) + 0.3 * y, 3)
    for k in (1, 10, 100):
        got = card_precision_at_k(day, card, y, score, k=k, remove_detected=True)
        assert got == pytest.approx(_cp_removing_reference(day, card, y, score, k))


def test_evaluate_bundles_the_three_metrics() -> None:
    m = evaluate(CP_Y, CP_SCORE, CP_DAY, CP_CARD)
    assert isinstance(m, Metrics)
    assert (m.n, m.n_fraud) == (7, 5)
    assert m.auc == pytest.approx(roc_auc(CP_Y, CP_SCORE))
    assert m.ap == pytest.approx(average_precision(CP_Y, CP_SCORE))
    assert m.cp100 == pytest.approx((3 / 100 + 2 / 100) / 2)
    assert m.cp100_handbook == pytest.approx((3 / 100 + 1 / 100) / 2)  # a, c, d found on day 0; a gone on day 1


# --------------------------------------------------------------------------- splits


def _assert_sound(s: Split) -> None:
    ws = list(s.windows().values())
    for i, a in enumerate(ws):
        assert a.start_ms < a.end_ms
        for b in ws[i + 1 :]:
            assert a.end_ms <= b.start_ms or b.end_ms <= a.start_ms, (a, b)
    assert s.validation.end_ms <= s.delay.start_ms
    assert s.train.end_ms <= s.delay.start_ms
    assert s.delay.end_ms == s.test.start_ms


def test_handbook_split_is_the_books_windows() -> None:
    s = handbook_split()
    assert s.train == (_ms("2018-07-25T00:00:00"), _ms("2018-08-01T00:00:00"))
    assert s.delay == (_ms("2018-08-01T00:00:00"), _ms("2018-08-08T00:00:00"))
    assert s.test == (_ms("2018-08-08T00:00:00"), _ms("2018-08-15T00:00:00"))
    assert s.validation == (_ms("2018-07-18T00:00:00"), _ms("2018-07-25T00:00:00"))
    assert s.train.start_ms == 1_532_476_800_000  # 2018-07-25T00:00:00Z
    assert s.train.label() == "2018-07-25..2018-07-31"
    assert s.test.label() == "2018-08-08..2018-08-14"
    _assert_sound(s)


def test_window_membership_is_half_open() -> None:
    w = Window(utc_ms(2018, 7, 25), utc_ms(2018, 8, 1))
    inside = w.contains([w.start_ms - 1, w.start_ms, w.end_ms - 1, w.end_ms])
    assert inside.tolist() == [False, True, True, False]
    assert w.days == 7


def test_protocol_folds_move_forward_and_prequential_folds_back() -> None:
    forward = protocol_splits(utc_ms(2018, 7, 25), folds=4)
    assert forward[0] == handbook_split()
    assert [f.test.start_ms - forward[0].test.start_ms for f in forward] == [0, 7 * DAY_MS, 14 * DAY_MS, 21 * DAY_MS]
    back = prequential_folds(forward[-1].test.start_ms, n_folds=4)
    assert back == forward[::-1]
    for s in forward:
        _assert_sound(s)


def test_model_selection_folds_never_reach_the_delay_or_test() -> None:
    s = handbook_split()
    folds = model_selection_folds(s, n_folds=4)
    assert len(folds) == 4
    # the handbook's validation folds: latest trains on 07-11..17 and assesses 07-25..31
    assert folds[0].train.label() == "2018-07-11..2018-07-17"
    assert folds[0].test == s.train
    assert folds[-1].test.label() == "2018-07-04..2018-07-10"
    for f in folds:
        _assert_sound(f)
        assert max(w.end_ms for w in f.windows().values()) <= s.delay.start_ms


def test_split_refuses_leaky_layouts() -> None:
    s = handbook_split()
    with pytest.raises(ValueError, match="overlaps"):
        Split(train=s.train, validation=Window(s.train.start_ms, s.train.end_ms), delay=s.delay, test=s.test)
    with pytest.raises(ValueError, match="overlaps"):  # validation in the delay gap
        Split(train=s.train, validation=Window(s.delay.start_ms, s.delay.start_ms + DAY_MS), delay=s.delay, test=s.test)
    with pytest.raises(ValueError, match="end by the start of the delay"):  # validation after the test
        Split(train=s.train, validation=Window(s.test.end_ms, s.test.end_ms + DAY_MS), delay=s.delay, test=s.test)
    with pytest.raises(ValueError, match="where the test window begins"):
        Split(
            train=s.train, validation=s.validation, delay=Window(s.delay.start_ms, s.delay.end_ms - DAY_MS), test=s.test
        )


# --------------------------------------------------------------------------- known compromised


def test_known_compromised_on_a_toy_history() -> None:
    s = handbook_split()
    week = 7 * DAY_MS
    t_train = s.train.start_ms + 3 * DAY_MS
    t_delay = s.delay.start_ms + 2 * DAY_MS
    rows = [
        # card, ts, fraud, known_at
        ("a", t_train, 1, t_train + week),  # train fraud: known
        ("b", t_delay, 1, t_delay + DAY_MS),  # delay fraud, label in before test: known
        ("c", t_delay, 1, t_delay + week),  # delay fraud, label after test start: not yet
        ("d", t_train, 0, t_train + week),  # legitimate only
        ("e", s.train.start_ms - DAY_MS, 1, s.train.start_ms + 6 * DAY_MS),  # before the train window
        ("f", s.test.start_ms + DAY_MS, 1, s.test.start_ms + DAY_MS),  # test-period fraud
    ]
    card, ts, y, avail = (list(col) for col in zip(*rows, strict=True))
    assert known_compromised(card, ts, y, avail, s.test.start_ms, since_ms=s.train.start_ms) == {"a", "b"}
    assert known_compromised(card, ts, y, avail, s.test.start_ms) == {"a", "b", "e"}

    test_card = ["a", "b", "c", "d", "f", "c", "f"]
    test_ts = [s.test.start_ms + 10] * 5 + [s.test.start_ms + 6 * DAY_MS] * 2
    keep = known_compromised_filter(test_card, test_ts, card, ts, y, avail, since_ms=s.train.start_ms)
    # day 0: a, b known; c's label arrives on test day 2; f's own fraud is not known on its day
    # day 6: c's label has arrived; f's arrived on test day 1
    assert keep.tolist() == [False, False, True, True, True, False, False]


def _handbook_filter(day: np.ndarray, card: np.ndarray, y: np.ndarray, train_day: int) -> np.ndarray:
    """The handbook's get_train_test_set loop, on day indices (7-day train, delay and test)."""
    known = set(card[(day >= train_day) & (day < train_day + 7) & (y == 1)].tolist())
    keep = np.ones(len(day), dtype=bool)
    for d in range(7):
        delay_day = train_day + 7 + d - 1
        known |= set(card[(day == delay_day) & (y == 1)].tolist())
        on = day == train_day + 14 + d
        keep[on] = ~np.isin(card[on], list(known))
    return keep


def test_per_day_filter_matches_the_handbook_rule() -> None:
    rng = np.random.default_rng(3)
    s = handbook_split()
    n = 4000
    day = rng.integers(0, 21, n)
    ts = s.train.start_ms + day * DAY_MS + rng.integers(1, DAY_MS, n)  # never exactly midnight
    card = np.array([f"c{i}" for i in rng.integers(0, 300, n)])
    y = (rng.random(n) < 0.02).astype(int)
    avail = ts + 7 * DAY_MS  # labels arrive a feedback delay after the transaction
    test = s.test.contains(ts)
    ours = known_compromised_filter(card[test], ts[test], card, ts, y, avail, since_ms=s.train.start_ms)
    theirs = _handbook_filter(day, card, y, 0)[test]
    assert 0 < int((~ours).sum()) < int(test.sum())
    assert ours.tolist() == theirs.tolist()
