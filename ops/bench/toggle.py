"""One worker draining the same history with a setting off and on, interleaved, side by side.

The cost of an optional stage (drift counting, reason codes) is a ratio measured in one run:
each drain starts a fresh worker that reads the setting's environment variable at start.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from trainer.simulate import History, Labels, SimConfig, labels_of, simulate

BENCH_HISTORY = SimConfig(customers=1000, terminals=2000, days=84, seed=0)


def bench_history() -> tuple[History, Labels]:
    h = simulate(BENCH_HISTORY)
    return h, labels_of(h)


def drains_toggled(bootstrap: str | None, bundle: Path, h: History, lab: Labels, n: int, runs: int,
                   variable: str, values: Sequence[str], column: str) -> None:
    """Print a markdown row per drain: ``column`` (the value), tx/s, worker CPU µs a transaction."""
    from ops.bench import kafka_io
    from ops.bench.run import Context, worker_drain
    from ops.kafka import LocalBroker

    work = Path(tempfile.mkdtemp(prefix="fraudstream-toggle-"))
    print(f"| {column} | tx/s | worker CPU µs a transaction |")
    print("|---|---:|---:|")
    broker = None if bootstrap else LocalBroker(work / "kafka")
    boot = bootstrap or broker.start(port=0).bootstrap  # type: ignore[union-attr]
    ctx = Context(boot, bundle, h, lab, n, work)
    try:
        for _ in range(runs):
            for value in values:
                os.environ[variable] = value  # the workers read it at start
                d = worker_drain(ctx, 1)
                print(f"| {value} | {d.tx_per_s:,.0f} | {d.extra['cpu_us_per_tx']:.1f} |", flush=True)
    finally:
        if broker is not None:
            broker.stop()
        else:
            kafka_io.delete_topics(boot, ctx.prefix)
