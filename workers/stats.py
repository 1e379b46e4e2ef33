"""Latency statistics per interval, with HdrHistograms that merge across workers.

Latencies are recorded in microseconds (1 us .. 1 h, 3 significant digits), batch sizes in
records (1 .. 1 000 000). A message carries p50/p95/p99/max/mean in milliseconds (batch sizes in
records) plus the encoded histogram, so percentiles over many workers come from
``merge_histograms``, never from averaging percentiles.

Recording is vectorised: ``hdrh`` records one value per Python call (about 1 us each), so a
batch's values are bucketed with numpy and added to the histogram's counts array in one step
(``_Hist.record``; a test proves it equal to ``record_value`` one by one).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from schemas.messages import SCHEMA_VERSION

US_MAX = 3_600_000_000  # one hour in microseconds
COUNT_MAX = 1_000_000
SIGNIFICANT_DIGITS = 3
ENCODING = "hdrhistogram-v2-base64"
COUNT_KEYS = ("in", "scored", "flagged", "dead_lettered", "redelivered", "labels_in", "labels_dead_lettered",
              "labels_late_restamped")


class _Hist:
    """An ``HdrHistogram`` plus a numpy view of its counts (for batch recording) and an exact sum."""

    def __init__(self, highest: int, unit: str) -> None:
        self.h = HdrHistogram(1, highest, SIGNIFICANT_DIGITS)
        self.unit = unit
        self.sum = 0
        self._counts = np.ctypeslib.as_array(self.h.counts)
        self._mask = int(self.h.sub_bucket_mask)
        self._shift = int(self.h.unit_magnitude) + int(self.h.sub_bucket_half_count_magnitude) + 1

    def record(self, values: npt.NDArray[np.int64]) -> None:
        """Record many non-negative integers (clipped to the histogram's range)."""
        if values.size == 0:
            return
        h = self.h
        v = np.clip(values, 0, h.highest_trackable_value)
        # hdrh's _counts_index_for, on arrays. frexp's exponent is the bit length (exact below 2**53).
        bucket = np.frexp((v | self._mask).astype(np.float64))[1] - self._shift
        sub = v >> (bucket + h.unit_magnitude)
        index = ((bucket + 1) << h.sub_bucket_half_count_magnitude) + sub - h.sub_bucket_half_count
        slots, counts = np.unique(index, return_counts=True)
        self._counts[slots] += counts.astype(np.uint64)
        h.total_count += int(v.size)
        h.min_value = min(h.min_value, int(v.min()))
        h.max_value = max(h.max_value, int(v.max()))
        self.sum += int(v.sum())

    def record_one(self, value: int) -> None:
        value = max(0, min(value, self.h.highest_trackable_value))
        self.h.record_value(value)
        self.sum += value

    def percentiles(self, ps: tuple[float, ...]) -> dict[float, int]:
        """Values at percentiles, as ``get_value_at_percentile`` computes them, without its Python loop."""
        h, n = self.h, self.h.get_total_count()
        if not n:
            return dict.fromkeys(ps, 0)
        cumulative = np.cumsum(self._counts)
        out = {}
        for p in ps:
            index = int(np.searchsorted(cumulative, h.get_target_count_at_percentile(p)))
            out[p] = int(h.get_highest_equivalent_value(h.get_value_from_index(index)))
        return out

    def distribution(self, scale: float) -> dict[str, Any]:
        """count / p50 / p95 / p99 / max / mean divided by ``scale``, plus the encoded histogram.

        Max and mean are exact; a percentile is its bucket's highest value (HdrHistogram's
        convention), capped at the exact max so that p99 <= max always holds.
        """
        h, n = self.h, self.h.get_total_count()
        top = h.max_value if n else 0
        pct = {p: min(v, top) for p, v in self.percentiles((50, 95, 99)).items()}
        return {
            "count": n,
            "p50": pct[50] / scale,
            "p95": pct[95] / scale,
            "p99": pct[99] / scale,
            "max": top / scale,
            "mean": self.sum / n / scale if n else 0.0,
            "histogram": {"encoding": ENCODING, "unit": self.unit, "data": h.encode().decode("ascii")},
        }


def _as_us(ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.rint(np.asarray(ms, dtype=np.float64) * 1000.0).astype(np.int64)


class StatsWindow:
    """Counts and latency histograms of one interval; ``snapshot`` emits them and starts the next."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.start_ms = int(time.time() * 1000) if start_ms is None else start_ms
        self._reset()

    def _reset(self) -> None:
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.batch_size = _Hist(COUNT_MAX, "count")
        self.inference = _Hist(US_MAX, "us")
        self.queue = _Hist(US_MAX, "us")
        self.e2e = _Hist(US_MAX, "us")

    def record_in(self, n: int) -> None:
        self.counts["in"] += n

    def record_dead_lettered(self, n: int) -> None:
        self.counts["dead_lettered"] += n

    def record_labels(self, n: int, dead_lettered: int, restamped: int) -> None:
        self.counts["labels_in"] += n
        self.counts["labels_dead_lettered"] += dead_lettered
        self.counts["labels_late_restamped"] += restamped

    def record_redelivered(self, n: int) -> None:
        self.counts["redelivered"] += n

    def record_batch(self, size: int, inference_s: float, queue_ms: npt.ArrayLike, e2e_ms: npt.ArrayLike,
                     flagged: int, scored: int) -> None:
        """One inference batch: its size and run time, and per-record queue and end-to-end latencies."""
        self.counts["scored"] += scored
        self.counts["flagged"] += flagged
        self.batch_size.record_one(size)
        self.inference.record_one(round(inference_s * 1e6))
        self.queue.record(_as_us(queue_ms))
        self.e2e.record(_as_us(e2e_ms))

    def snapshot(self, worker_id: str, provider: str, model_version: str, now_ms: int,
                 state: dict[str, int] | None = None, drift: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``LATENCY_STATS`` message for [start, now_ms]; then reset, the next interval starting at now_ms.

        ``drift``: the drift monitor's windows (``workers.drift``: ``DriftMonitor.snapshot`` or ``drift_off``)."""
        seconds = (now_ms - self.start_ms) / 1000
        done = self.counts["scored"] + self.counts["dead_lettered"]
        msg = {
            "schema_version": SCHEMA_VERSION,
            "worker_id": worker_id,
            "interval": {"start": self.start_ms, "end": now_ms},
            "counts": dict(self.counts),
            "throughput_per_s": done / seconds if seconds > 0 else 0.0,
            "batch_size": self.batch_size.distribution(1.0),
            "e2e_ms": self.e2e.distribution(1000.0),
            "queue_ms": self.queue.distribution(1000.0),
            "inference_ms": self.inference.distribution(1000.0),
            "provider": provider,
            "model_version": model_version,
            "state": state or {},
            "drift": drift if drift is not None else {"enabled": False, "reason": "not monitored"},
        }
        self.start_ms = now_ms
        self._reset()
        return msg


def merge_histograms(encoded: list[str]) -> HdrHistogram:
    """Decode and add encoded histograms (e.g. one per worker, all of one unit) into one.

    An empty list gives an empty microsecond histogram.
    """
    if not encoded:
        return HdrHistogram(1, US_MAX, SIGNIFICANT_DIGITS)
    out = HdrHistogram.decode(encoded[0])
    for data in encoded[1:]:
        out.add(HdrHistogram.decode(data))
    return out
