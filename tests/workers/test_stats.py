"""Latency statistics: the message contract, interval roll-over, batch recording, merging."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from jsonschema import Draft202012Validator

from schemas.messages import LATENCY_STATS
from workers.stats import US_MAX, StatsWindow, _Hist, merge_histograms

VALIDATOR = Draft202012Validator(LATENCY_STATS)
T0 = 1_760_000_000_000
DISTS = ("batch_size", "e2e_ms", "queue_ms", "inference_ms")


def _window_with_batches(rng: np.random.Generator, batches: int = 5) -> StatsWindow:
    w = StatsWindow(start_ms=T0)
    for _ in range(batches):
        w.record_in(1000)
        w.record_batch(1000, inference_s=0.0031, queue_ms=rng.exponential(5.0, 1000),
                       e2e_ms=rng.exponential(20.0, 1000).astype(np.int64), flagged=3, scored=990)
        w.record_dead_lettered(10)
    w.record_redelivered(7)
    w.record_labels(40, dead_lettered=3, restamped=1)
    return w


def test_snapshot_is_a_valid_message_with_ordered_percentiles() -> None:
    msg = _window_with_batches(np.random.default_rng(0)).snapshot("w-1", "CPUExecutionProvider", "v1", T0 + 10_000)
    VALIDATOR.validate(msg)
    assert msg["counts"] == {"in": 5000, "scored": 4950, "flagged": 15, "dead_lettered": 50, "redelivered": 7,
                             "labels_in": 40, "labels_dead_lettered": 3, "labels_late_restamped": 1}
    assert msg["throughput_per_s"] == pytest.approx(500.0)
    assert msg["interval"] == {"start": T0, "end": T0 + 10_000}
    assert (msg["worker_id"], msg["provider"], msg["model_version"]) == ("w-1", "CPUExecutionProvider", "v1")
    for name in DISTS:
        d = msg[name]
        assert 0 <= d["p50"] <= d["p95"] <= d["p99"] <= d["max"], name
        assert d["mean"] <= d["max"]
    assert msg["batch_size"]["count"] == 5 and msg["batch_size"]["p50"] == 1000
    assert msg["batch_size"]["histogram"]["unit"] == "count" and msg["e2e_ms"]["histogram"]["unit"] == "us"
    assert msg["e2e_ms"]["count"] == msg["queue_ms"]["count"] == 5000
    assert msg["inference_ms"]["p99"] == pytest.approx(3.1, rel=1e-3)


def test_interval_rolls_over_and_resets() -> None:
    w = _window_with_batches(np.random.default_rng(1))
    w.snapshot("w-1", "CPUExecutionProvider", "v1", T0 + 5_000)
    empty = w.snapshot("w-1", "CPUExecutionProvider", "v1", T0 + 6_000)
    VALIDATOR.validate(empty)
    assert empty["interval"] == {"start": T0 + 5_000, "end": T0 + 6_000}
    assert set(empty["counts"].values()) == {0} and empty["throughput_per_s"] == 0
    assert all(empty[name]["count"] == 0 and empty[name]["max"] == 0 for name in DISTS)
    w.record_batch(2, 0.001, [1.5, 2.5], [3, 4], flagged=0, scored=2)
    later = w.snapshot("w-1", "CPUExecutionProvider", "v1", T0 + 7_000)
    assert later["interval"]["start"] == T0 + 6_000 and later["counts"]["scored"] == 2
    assert later["queue_ms"]["mean"] == pytest.approx(2.0)
    assert later["e2e_ms"]["max"] == later["e2e_ms"]["p99"] == 4.0  # the bucket top (4.001) is capped at the max


def test_batch_recording_equals_hdrh_record_value() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.integers(0, 3000, 500), rng.lognormal(9, 3, 3000).astype(np.int64),
                             [0, 1, 2047, 2048, 2049, US_MAX - 1, US_MAX, US_MAX * 3, -5]]).astype(np.int64)
    fast = _Hist(US_MAX, "us")
    fast.record(values[: len(values) // 2])
    fast.record(values[len(values) // 2:])
    slow = HdrHistogram(1, US_MAX, 3)
    for v in np.clip(values, 0, US_MAX).tolist():
        assert slow.record_value(v)
    assert np.array_equal(np.ctypeslib.as_array(fast.h.counts), np.ctypeslib.as_array(slow.counts))
    assert (fast.h.get_total_count(), fast.h.get_min_value(), fast.h.get_max_value()) == (
        slow.get_total_count(), slow.get_min_value(), slow.get_max_value())
    for p in (0.1, 50, 90, 95, 99, 99.9, 100):
        assert fast.percentiles((p,))[p] == slow.get_value_at_percentile(p), p
    assert fast.h.encode() == slow.encode()


def test_merged_workers_give_the_percentiles_of_all_values() -> None:
    rng = np.random.default_rng(3)
    queue_a, queue_b = rng.exponential(4.0, 3000), rng.exponential(40.0, 1000)  # a fast and a slow worker
    windows = [StatsWindow(start_ms=T0) for _ in range(3)]
    windows[0].record_batch(3000, 0.01, queue_a, queue_a, flagged=0, scored=3000)
    windows[1].record_batch(1000, 0.02, queue_b, queue_b, flagged=0, scored=1000)
    windows[2].record_batch(4000, 0.03, np.concatenate([queue_a, queue_b]), queue_a[:1], flagged=0, scored=4000)
    a, b, both = (w.snapshot(f"w-{i}", "CPUExecutionProvider", "v1", T0 + 1000) for i, w in enumerate(windows))
    merged = merge_histograms([a["queue_ms"]["histogram"]["data"], b["queue_ms"]["histogram"]["data"]])
    assert merged.get_total_count() == both["queue_ms"]["count"] == 4000
    for p in (50, 95, 99):
        assert merged.get_value_at_percentile(p) / 1000 == both["queue_ms"][f"p{p}"], p
    assert merged.values_are_equivalent(merged.get_max_value(), round(both["queue_ms"]["max"] * 1000))
    sizes = merge_histograms([a["batch_size"]["histogram"]["data"], b["batch_size"]["histogram"]["data"]])
    assert sizes.get_total_count() == 2 and sizes.values_are_equivalent(sizes.get_max_value(), 3000)


def test_merge_of_nothing_is_empty() -> None:
    assert merge_histograms([]).get_total_count() == 0
