"""Pure helpers of the benchmark: percentiles, the join by tx_id, rates over time, the ratio table.

No Kafka here, so everything is tested directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

PCTS = (50.0, 95.0, 99.0)


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/max/mean and n of ``values`` (NaN-free); zeros and n=0 when empty."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    p50, p95, p99 = (float(x) for x in np.percentile(a, PCTS))
    return {"n": int(a.size), "p50": p50, "p95": p95, "p99": p99, "max": float(a.max()), "mean": float(a.mean())}


def join_latency(inputs: Mapping[str, int], outputs: Iterable[tuple[str, int]]) -> tuple[dict[str, int], int]:
    """Per tx_id: first output timestamp minus input timestamp (ms); and how many inputs had no output.

    Outputs of unknown tx_ids are ignored; a duplicate output (a redelivery) counts once, its first.
    """
    first: dict[str, int] = {}
    for tx_id, ts in outputs:
        if tx_id in inputs and (tx_id not in first or ts < first[tx_id]):
            first[tx_id] = ts
    lat = {tx_id: ts - inputs[tx_id] for tx_id, ts in first.items()}
    return lat, len(inputs) - len(lat)


def drain_rate(timestamps_ms: Sequence[int] | np.ndarray, trim: float = 0.0) -> float:
    """Records/s from the first to the last output (``trim`` cuts that quantile off both ends).

    No trimming by default: the worker releases outputs in bursts when terminal buckets become
    final, and a trimmed window (5-95 %) then measured the bursts, not the drain (it reported
    33 k tx/s for a 12 k tx/s worker)."""
    t = np.sort(np.asarray(timestamps_ms, dtype=np.float64))
    n = t.size
    if n < 2:
        return 0.0
    lo, hi = int(n * trim), max(int(n * (1 - trim)) - 1, int(n * trim) + 1)
    hi = min(hi, n - 1)
    span = (t[hi] - t[lo]) / 1000
    return (hi - lo) / span if span > 0 else float("inf")


def timeline(timestamps_ms: Sequence[int] | np.ndarray, bucket_s: float = 0.5,
             origin_ms: float | None = None) -> tuple[list[float], list[float]]:
    """(seconds from ``origin_ms``, records/s) per bucket; the origin defaults to the first record.

    A common origin puts several series (inputs and outputs of one run) on one time axis."""
    t = np.asarray(timestamps_ms, dtype=np.float64)
    if t.size == 0:
        return [], []
    rel = (t - (t.min() if origin_ms is None else min(float(origin_ms), float(t.min())))) / 1000
    edges = np.arange(0, rel.max() + bucket_s, bucket_s)
    if edges.size < 2:
        edges = np.array([0.0, bucket_s])
    counts, _ = np.histogram(rel, bins=edges)
    return [float(x) for x in edges[:-1]], [float(c / bucket_s) for c in counts]


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def throughput_rows(ceiling: float, naive: float, worker: Mapping[int, float]) -> list[dict[str, object]]:
    """One row per measurement with its ratio to the ceiling (a) and to the naive baseline (b)."""
    rows: list[dict[str, object]] = [
        {"what": "a. ceiling: pass-through, no model", "tx_per_s": ceiling, "vs_a": 1.0, "vs_b": ratio(ceiling, naive)},
        {"what": "b. naive: one at a time, LightGBM predict", "tx_per_s": naive, "vs_a": ratio(naive, ceiling),
         "vs_b": 1.0},
    ]
    for procs, rate in sorted(worker.items()):
        rows.append({"what": f"c. fraudstream worker x{procs}", "tx_per_s": rate, "vs_a": ratio(rate, ceiling),
                     "vs_b": ratio(rate, naive)})
    return rows


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec). Floats use the spec; NaN shows as a dash."""
    out = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for key, _, spec in columns:
            v = r.get(key, "")
            if isinstance(v, float):
                cells.append("-" if v != v else format(v, spec))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
