"""``python -m ops.explainbench``: what reason codes cost (``workers.explain``), per call and per flagged row.

The worker makes one ``Explainer.explain`` call per batch that has flags, on the flagged rows only
(about 1 % of a 1000-record batch: 1-10 rows). This times that call on the bundle's own model at
such counts, on rows the model flags (simulated transactions, their offline features), one thread
as in the worker: the median wall time of ``--reps`` calls, and the process CPU time over them.

``--drain N``: also one worker draining N pre-produced transactions (+ labels) of the bench's
simulated history (``ops.bench``'s phase c., on ``--bootstrap``, else a broker started here),
with reasons off and on, interleaved ``--drain-runs`` times: throughput from the scores topic's
timestamps and the worker's CPU a transaction, beside how many of those N the model flags.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from ops.bench.toggle import bench_history, drains_toggled
from schemas.bundle import load_bundle
from schemas.settings import add, positive_int
from trainer.simulate import SimConfig, history_features, labels_of, simulate
from workers.explain import Explainer, load_explainer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.explainbench", description=__doc__)
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", Path("bundles/latest"), "model bundle", Path)
    p.add_argument("--rows", default="1,3,10,30,100", help="flagged rows a call (comma list; default %(default)s)")
    p.add_argument("--reps", type=positive_int, default=200, help="calls timed at each count (default 200)")
    p.add_argument("--reasons", type=positive_int, default=3, help="reasons a flag (default 3)")
    p.add_argument("--drain", type=int, default=0, help="transactions of the worker drains (default 0: none)")
    p.add_argument("--drain-runs", type=positive_int, default=2, help="drains with reasons off, then on (default 2)")
    add(p, "--bootstrap", "KAFKA_BOOTSTRAP", None, "a running broker for the drains (else one is started)")
    return p


def flagged_rows(explainer: Explainer, threshold: float, n: int) -> np.ndarray:
    """At least ``n`` feature rows of simulated transactions that the model flags."""
    days = 20
    while True:
        h = simulate(SimConfig(customers=1000, terminals=2000, days=days, seed=2))
        x = history_features(h, labels_of(h))
        flagged = x[np.asarray(explainer.booster.predict(x, num_threads=1)) >= threshold]
        if len(flagged) >= n or days > 160:
            return np.resize(flagged, (n, x.shape[1])).astype(np.float32)  # repeats rows when short
        days *= 2


def time_calls(explainer: Explainer, rows: np.ndarray, reps: int) -> tuple[float, float]:
    """(median wall µs, mean CPU µs) of one ``explain`` call on ``rows``."""
    explainer.explain(rows)  # warm
    walls = []
    cpu0 = time.process_time()
    for _ in range(reps):
        t0 = time.perf_counter()
        explainer.explain(rows)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls) * 1e6, (time.process_time() - cpu0) / reps * 1e6


def drains(a: argparse.Namespace, explainer: Explainer, threshold: float) -> None:
    """One worker draining the same history with ``--reasons 0`` and ``--reasons a.reasons``, interleaved."""
    h, lab = bench_history()
    n = min(a.drain, len(h))
    flagged = int((np.asarray(explainer.booster.predict(history_features(h, lab)[:n], num_threads=1))
                   >= threshold).sum())
    print(f"\ndrain of {n:,} transactions (+ labels), 1 worker, batch 1000: the model flags {flagged:,} "
          f"({flagged / n:.1%})")
    drains_toggled(a.bootstrap, a.bundle, h, lab, n, a.drain_runs, "FRAUDSTREAM_REASONS", ("0", str(a.reasons)),
                   "reasons")


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    bundle = load_bundle(a.bundle)
    explainer = load_explainer(bundle, a.reasons)
    assert explainer is not None
    counts = [int(c) for c in a.rows.split(",")]
    rows = flagged_rows(explainer, bundle.threshold, max(counts))
    trees = explainer.booster.num_trees()
    print(f"bundle {bundle.path} ({bundle.model_version}): {trees} trees, threshold {bundle.threshold:.4f}; "
          f"median of {a.reps} calls, 1 thread")
    print("| flagged rows a call | wall µs a call | wall µs a row | CPU µs a call |")
    print("|---:|---:|---:|---:|")
    for n in counts:
        wall, cpu = time_calls(explainer, rows[:n], a.reps)
        print(f"| {n} | {wall:,.0f} | {wall / n:,.0f} | {cpu:,.0f} |", flush=True)
    if a.drain:
        drains(a, explainer, bundle.threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
