"""The monitor's pure core: the join in any order, the latest word, bounded state, when windows close."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from schemas.drift import Calibration
from tests.monitor.data import MAIN, SHADOW, Stream, synth
from tests.monitor.offline import truth
from workers.monitor.windows import DAY_MS, HOUR_MS, LabelBatch, MonitorCore, ScoreBatch, Window

LATENESS = HOUR_MS
HORIZON_DAYS = 8
CAL = Calibration("isotonic", np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.3, 0.9]))
D0 = 17_700 * DAY_MS


def calibration(version: str) -> Calibration | None:
    return CAL if version == MAIN else None


def score_batch(msgs: list[dict[str, Any]]) -> ScoreBatch:
    return ScoreBatch([m["tx_id"] for m in msgs], [m["customer_id"] for m in msgs],
                      [m["model_version"] for m in msgs], np.array([m["ts"] for m in msgs], np.int64),
                      np.array([m["score"] for m in msgs], np.float64), np.array([m["flag"] for m in msgs], np.bool_))


def label_batch(msgs: list[dict[str, Any]]) -> LabelBatch:
    def col(name: str) -> Any:
        return np.array([m[name] for m in msgs], np.int64)
    return LabelBatch([m["tx_id"] for m in msgs], col("ts"), col("reported_at"), col("is_fraud"))


def run(stream: Stream, batch: int, jitter_ms: int = 0, seed: int = 0) -> tuple[MonitorCore, list[Window]]:
    """Feed the stream in publish order, each record delayed by up to ``jitter_ms`` (less than the
    lateness: none is late), advancing both watermarks to the latest time seen after every batch."""
    rng = np.random.default_rng(seed)
    events = stream.events()
    delay = rng.integers(0, jitter_ms + 1, len(events))
    order = np.argsort([t + d for (t, _, _), d in zip(events, delay, strict=True)], kind="stable")
    core = MonitorCore(HORIZON_DAYS, LATENESS, calibration)
    out: list[Window] = []
    seen = None
    for i in range(0, len(order), batch):
        chunk = [events[j] for j in order[i:i + batch]]
        scores = [m for _, kind, m in chunk if kind == "score"]
        labels = [m for _, kind, m in chunk if kind == "label"]
        if scores:
            core.add_scores(score_batch(scores))
        if labels:
            core.add_labels(label_batch(labels))
        seen = max([seen or 0, *(t for t, _, _ in chunk)])
        out += core.advance(seen, seen)
    return core, out


def records(windows: list[Window]) -> dict[tuple[str, str], dict[str, Any]]:
    got = {(w.key, w.stage): w.record() for w in windows}
    assert len(got) == len(windows), "a window was published twice"
    return got


@pytest.fixture(scope="module")
def stream() -> Stream:
    return synth(days=9, customers=50, terminals=100, seed=1, label_until_days=18)


def test_windows_equal_the_offline_truth_whatever_the_arrival_order(stream: Stream) -> None:
    core, first = run(stream, batch=50)
    end = max(t for t, _, _ in stream.events())
    expected = truth(stream.scores, stream.labels, HORIZON_DAYS, end - LATENESS, calibration)
    got = records(first)
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == expected[k], k
    stages = {s for _, s in got}
    assert stages == {"closed", "provisional", "feedback", "final"}
    assert {v for (k, _) in got for v in [k.split("|")[0]]} == {MAIN, SHADOW}
    assert core.counts["scores_duplicate"] > 0 and core.counts["labels_unmatched"] > 0
    assert core.counts["scores_late"] == core.counts["labels_late"] == 0
    _, again = run(stream, batch=7, jitter_ms=LATENESS - 1, seed=1)
    assert [w.record() for w in again] == [w.record() for w in first]  # same windows, same order, same bits


def _core() -> MonitorCore:
    return MonitorCore(HORIZON_DAYS, LATENESS, calibration)


def _score(tx: str, ts: int, score: float = 0.9, version: str = MAIN, card: str = "c1") -> ScoreBatch:
    return ScoreBatch([tx], [card], [version], np.array([ts]), np.array([score]), np.array([score >= 0.5]))


def _label(tx: str, ts: int, reported_at: int, fraud: int) -> LabelBatch:
    return LabelBatch([tx], np.array([ts]), np.array([reported_at]), np.array([fraud]))


def _final(windows: list[Window], kind: str = "tx_day", stage: str = "feedback") -> Window:
    (w,) = [w for w in windows if w.kind == kind and w.stage == stage]
    return w


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_later_report_replaces_an_earlier_one_in_any_order(order: tuple[int, int]) -> None:
    core = _core()
    core.add_scores(_score("a", D0 + HOUR_MS))
    labels = [_label("a", D0 + HOUR_MS, D0 + DAY_MS, 0), _label("a", D0 + HOUR_MS, D0 + 3 * DAY_MS, 1)]
    for i in order:
        core.add_labels(labels[i])
    out = core.advance(D0 + 9 * DAY_MS, D0 + 9 * DAY_MS)
    assert _final(out).metrics["n_fraud"] == 1
    # The arrival window of the first report saw the word of its time: genuine.
    first = [w for w in out if w.kind == "arrival_1h" and w.end == D0 + DAY_MS + HOUR_MS]
    assert first[0].metrics["n_fraud"] == 0


def test_fraud_wins_a_tie_and_a_late_older_report_changes_nothing() -> None:
    core = _core()
    core.add_scores(_score("a", D0 + HOUR_MS))
    core.add_scores(_score("b", D0 + HOUR_MS, card="c2"))
    core.add_labels(_label("a", D0 + HOUR_MS, D0 + DAY_MS, 1))
    core.add_labels(_label("a", D0 + HOUR_MS, D0 + DAY_MS, 0))  # same time: fraud wins
    core.add_labels(_label("b", D0 + HOUR_MS, D0 + 2 * DAY_MS, 1))
    core.advance(D0 + 3 * DAY_MS, D0 + 3 * DAY_MS)
    core.add_labels(_label("b", D0 + HOUR_MS, D0 + DAY_MS, 0))  # late, and older than b's word
    assert core.counts["labels_late"] == 1
    out = core.advance(D0 + 9 * DAY_MS, D0 + 9 * DAY_MS)
    assert _final(out).metrics["n_fraud"] == 2


def test_windows_close_when_the_clock_passes_their_cutoff_and_not_before() -> None:
    core = _core()
    core.add_scores(_score("a", D0 + HOUR_MS))
    core.add_labels(_label("a", D0 + HOUR_MS, D0 + 2 * DAY_MS, 1))
    end = D0 + DAY_MS
    assert not [w for w in core.advance(end + LATENESS - 1, end + LATENESS - 1) if w.kind == "tx_day"]
    (prov,) = [w for w in core.advance(end + LATENESS, end + LATENESS) if w.kind == "tx_day"]
    assert (prov.stage, prov.labels_before, prov.metrics["n_labelled"]) == ("provisional", None, None)
    assert prov.metrics["n_scored"] == 1 and prov.metrics["estimated_precision"] == pytest.approx(0.78)
    feedback = end + 7 * DAY_MS
    assert not [w for w in core.advance(feedback + LATENESS - 1, feedback + LATENESS) if w.kind == "tx_day"]
    (fb,) = [w for w in core.advance(feedback + LATENESS, feedback + LATENESS) if w.kind == "tx_day"]
    assert (fb.stage, fb.labels_before, fb.metrics["n_fraud"]) == ("feedback", feedback, 1)
    final = end + HORIZON_DAYS * DAY_MS
    (fin,) = [w for w in core.advance(final + LATENESS, final + LATENESS) if w.kind == "tx_day"]
    assert (fin.stage, fin.labels_before, fin.key) == ("final", final, f"{MAIN}|tx_day|2018-06-18T00:00:00Z")


def test_the_label_clock_waits_for_the_scores() -> None:
    core = _core()
    core.add_scores(_score("a", D0 + HOUR_MS))
    core.add_labels(_label("a", D0 + HOUR_MS, D0 + DAY_MS, 1))
    assert not core.advance(D0 + 2 * HOUR_MS, D0 + 30 * DAY_MS)  # scores stop at 01:00: nothing after closes
    assert core.done == D0 + HOUR_MS
    assert core.sizes()["pending_labels"] == 1


def test_state_is_bounded_and_what_cannot_join_is_counted() -> None:
    core = _core()
    for i in range(10):
        core.add_scores(_score(f"t{i}", D0 + i * HOUR_MS))
    core.add_labels(_label("t1", D0, D0 + 2 * DAY_MS, 1))
    core.add_labels(_label("nobody", D0, D0 + 2 * DAY_MS, 1))  # its score never came
    core.add_labels(_label("t2", D0, D0 + (HORIZON_DAYS + 1) * DAY_MS, 1))  # beyond the horizon
    assert core.sizes()["score_rows"] == 10 and core.sizes()["pending_labels"] == 2
    core.advance(D0 + 3 * DAY_MS, D0 + 3 * DAY_MS)
    assert (core.counts["labels_joined"], core.counts["labels_unmatched"]) == (1, 1)
    assert core.counts["labels_beyond_horizon"] == 1
    keep_until = D0 + DAY_MS + HORIZON_DAYS * DAY_MS + 7 * DAY_MS
    core.advance(keep_until + LATENESS - HOUR_MS, keep_until + LATENESS - HOUR_MS)
    assert core.sizes()["days"] == 1  # the last arrival_7d window that can hold its labels is still open
    core.advance(keep_until + LATENESS, keep_until + LATENESS)
    assert core.sizes() == {"days": 0, "score_rows": 0, "label_words": 0, "pending_labels": 0, "arrival_log": 0}


def test_late_scores_are_counted_and_dropped_duplicates_keep_the_first() -> None:
    core = _core()
    core.add_scores(_score("a", D0 + 5 * HOUR_MS, 0.9))
    core.add_scores(_score("a", D0 + 5 * HOUR_MS, 0.1))  # a redelivery: the first stands
    core.add_scores(_score("a", D0 + 5 * HOUR_MS, 0.2, version=SHADOW))  # another version: its own row
    core.advance(D0 + DAY_MS + LATENESS, D0 + DAY_MS + LATENESS)
    core.add_scores(_score("b", D0 + 6 * HOUR_MS))
    assert (core.counts["scores_duplicate"], core.counts["scores_late"]) == (1, 1)
    assert core.sizes()["score_rows"] == 2


def test_a_rebuild_floor_suppresses_the_windows_it_could_cut_short() -> None:
    core = _core()
    core.floor_scores = core.floor_labels = D0 + DAY_MS
    core.add_scores(_score("a", D0 + HOUR_MS))
    core.add_scores(_score("b", D0 + DAY_MS + HOUR_MS))
    out = core.advance(D0 + 2 * DAY_MS + LATENESS, D0 + 2 * DAY_MS + LATENESS)
    assert [w.start for w in out if w.kind == "tx_day"] == [D0 + DAY_MS]
    assert core.counts["windows_suppressed"] == 1
