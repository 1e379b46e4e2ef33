"""``python -m ops.driftbench``: what drift monitoring (``workers.drift``) costs the worker.

Per batch: ``DriftMonitor.observe`` + ``advance`` on the bundle's monitoring block, on real feature rows
(simulated transactions, their offline features and ONNX scores) in batches of ``--rows`` consecutive
transactions, as the runner calls them: the median wall µs a batch and a row over ``--reps`` batches,
and the µs a stats message's ``snapshot`` takes with a day and its 24 hours closed.

``--drain N``: also one worker draining N pre-produced transactions (+ labels) of the bench's simulated
history (``ops.bench``'s phase c., on ``--bootstrap``, else a broker started here) with ``--drift false``
and ``--drift true``, interleaved ``--drain-runs`` times, reason codes off (``--reasons 0``: the fastest
worker, where a fixed cost weighs most): throughput from the scores topic's timestamps and the worker's
CPU a transaction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ops.bench.toggle import bench_history, drains_toggled
from schemas.bundle import Bundle, load_bundle
from schemas.features import DAY_MS, HOUR_MS
from schemas.settings import add, positive_int
from trainer.simulate import SimConfig, history_features, labels_of, simulate
from workers.drift import DriftMonitor


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.driftbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", Path("bundles/latest"), "model bundle (with a monitoring block)", Path)
    p.add_argument("--rows", default="100,1000,4096", help="rows a batch (comma list; default %(default)s)")
    p.add_argument("--reps", type=positive_int, default=300, help="batches timed at each size (default 300)")
    p.add_argument("--drain", type=int, default=0, help="transactions of the worker drains (default 0: none)")
    p.add_argument("--drain-runs", type=positive_int, default=3, help="drains with drift off, then on (default 3)")
    add(p, "--bootstrap", "KAFKA_BOOTSTRAP", None, "a running broker for the drains (else one is started)")
    return p


def rows_and_scores(bundle: Bundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, ONNX scores and event times of a simulated history, in event-time order."""
    h = simulate(SimConfig(customers=1000, terminals=2000, days=45, seed=2))
    x = history_features(h, labels_of(h))
    sess = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {sess.get_inputs()[0].name: x})[1]
    scores = np.asarray([p[1] for p in probs] if isinstance(probs, list) else probs[:, 1], dtype=np.float32)
    return x, scores, h.ts


def time_batches(bundle: Bundle, x: np.ndarray, s: np.ndarray, ts: np.ndarray, n: int, reps: int
                 ) -> tuple[float, float]:
    """(median µs a batch of ``n`` consecutive rows: observe + advance, µs a snapshot with windows closed)."""
    assert bundle.monitoring is not None
    d = DriftMonitor(bundle.monitoring, bundle.threshold, 0)
    walls = []
    for i in range(reps):
        lo = (i * n) % (len(s) - n)
        xb, sb, tb = x[lo:lo + n], s[lo:lo + n], ts[lo:lo + n]
        t0 = time.perf_counter()
        d.observe(xb, sb, tb, sb >= bundle.threshold)
        d.advance(int(tb[0]) - 600_000)
        walls.append(time.perf_counter() - t0)
        if i % 50 == 0:
            d.snapshot(i)
    d.advance(int(ts[-1]))  # everything closes: the snapshot's worst case is bounded by MAX_PENDING
    d2 = DriftMonitor(bundle.monitoring, bundle.threshold, 0)
    day = (int(ts[len(ts) // 2]) // DAY_MS) * DAY_MS
    one = (ts >= day) & (ts < day + DAY_MS)
    d2.observe(x[one], s[one], ts[one], s[one] >= bundle.threshold)
    d2.advance(day + DAY_MS + HOUR_MS)
    t0 = time.perf_counter()
    d2.snapshot(1)
    return statistics.median(walls) * 1e6, (time.perf_counter() - t0) * 1e6


def drains(a: argparse.Namespace) -> None:
    """One worker draining the same history with ``--drift false`` and ``--drift true``, interleaved."""
    h, lab = bench_history()
    n = min(a.drain, len(h))
    print(f"\ndrain of {n:,} transactions (+ labels), 1 worker, batch 1000, --reasons 0")
    os.environ["FRAUDSTREAM_REASONS"] = "0"
    drains_toggled(a.bootstrap, a.bundle, h, lab, n, a.drain_runs, "FRAUDSTREAM_DRIFT", ("false", "true"), "--drift")


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    bundle = load_bundle(a.bundle)
    if bundle.monitoring is None:
        print(f"error: bundle {a.bundle} carries no monitoring block: re-train it")
        return 2
    x, s, ts = rows_and_scores(bundle)
    print(f"bundle {bundle.path}: {len(bundle.monitoring.features)} monitored features + score; "
          f"median of {a.reps} batches of consecutive transactions, 1 thread")
    print("| rows a batch | µs a batch (observe + advance) | µs a row | µs a snapshot (a day + its 24 hours closed) |")
    print("|---:|---:|---:|---:|")
    for n in (int(r) for r in a.rows.split(",")):
        batch_us, snap_us = time_batches(bundle, x, s, ts, n, a.reps)
        print(f"| {n} | {batch_us:,.0f} | {batch_us / n:.3f} | {snap_us:,.0f} |", flush=True)
    if a.drain:
        drains(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
