"""``python -m ops.bench``: how fast the worker is, against a ceiling and a naive baseline, in one run.

Starts or reuses a broker (``--bootstrap`` / ``KAFKA_BOOTSTRAP``, else ``ops.kafka`` on free
ports), trains or reuses a bundle, pre-produces N simulated transactions and their labels once,
then on that same input: (a) a pass-through ceiling, (b) a naive one-at-a-time baseline, (c) the
worker at full drain with 1 and 2 processes, (e) a sweep of batch size and max wait; and (d)
latency at 25/50/75/90 % of (c) on fresh topics. Writes JSON, a markdown table and PNG plots
under ``--out``. Reports; never asserts speed.

Time: the drains (a, b, c, e) replay the history compressed (its own event times, a simulated
day every second or so): how fast a backlog goes. The latency steps (d) run live (``ops.loadgen
--live``): 8 days of history shifted to end now are sent and scored first, then every transaction
is sent with event time = the wall clock at send, labels at their report times, as production
sees it (a compressed replay would cross a simulated midnight every second).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from schemas.settings import add, positive_int

QUICK = {"n": 20_000, "naive_n": 4_000, "step_s": 3.0, "sweep": [(100, 5.0), (2000, 5.0), (1000, 20.0)]}
FULL = {"n": 100_000, "naive_n": 20_000, "step_s": 15.0,
        "sweep": [(b, w) for b in (100, 500, 2000) for w in (1.0, 5.0, 20.0)]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add(p, "--bootstrap", "KAFKA_BOOTSTRAP", None, "a running broker (else one is started on free ports)")
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", None, "model bundle to reuse (else a quick one is trained)", Path)
    add(p, "--out", "FRAUDSTREAM_BENCH_OUT", Path("reports/bench"), "where the report goes", Path)
    add(p, "--n", "FRAUDSTREAM_BENCH_N", None, "transactions pre-produced (default: 20 000 quick, 100 000 full)",
        positive_int)
    add(p, "--naive-n", "FRAUDSTREAM_BENCH_NAIVE_N", None, "transactions the naive baseline scores", positive_int)
    add(p, "--step-s", "FRAUDSTREAM_BENCH_STEP_S", None, "seconds per offered load in the latency phase", float)
    add(p, "--seed", "FRAUDSTREAM_BENCH_SEED", 0, "simulator seed", int)
    p.add_argument("--quick", action="store_true", help="small and short (< 2 minutes): for regressions")
    p.add_argument("--skip", default="", help="comma list of phases to skip: ceiling,naive,workers,latency,sweep")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    mode = QUICK if a.quick else FULL
    n = a.n or int(str(mode["n"]))
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    started = time.monotonic()
    from ops.bench.run import log

    broker = None
    bootstrap = a.bootstrap
    if not bootstrap:
        from ops.kafka import LocalBroker

        broker = LocalBroker(work / "kafka")
        bootstrap = broker.start(port=0).bootstrap
        log(f"broker started at {bootstrap}")
    try:
        bundle = a.bundle or train(work)
        report = measure(a, mode, n, skip, bootstrap, bundle, work)
    finally:
        if broker is not None:
            broker.stop()
    report["seconds"] = time.monotonic() - started
    from ops.bench.report import write

    write(report, a.out)
    log(f"done in {report['seconds']:.0f}s; report in {a.out}")
    return 0


def train(work: Path) -> Path:
    from ops.bench.run import log

    log("training a quick bundle")
    done = subprocess.run([sys.executable, "-m", "trainer", "run", "--quick", "--folds", "0", "--out",
                           str(work / "bundles"), "--data-dir", str(work / "data")], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def measure(a: argparse.Namespace, mode: dict[str, Any], n: int, skip: set[str], bootstrap: str, bundle: Path,
            work: Path) -> dict[str, Any]:
    from ops.bench import kafka_io
    from ops.bench.machine import describe
    from ops.bench.run import Context, ceiling, latency, naive_baseline, preproduce, worker_drain
    from ops.loadgen.source import simulated
    from trainer.simulate import SimConfig

    h, labels = simulated(SimConfig(customers=1000, terminals=2000, days=84, seed=a.seed))
    ctx = Context(bootstrap, bundle, h, labels, min(n, len(h)), work)
    report: dict[str, Any] = {"machine": describe(), "quick": a.quick, "n": ctx.n, "bundle": str(bundle)}
    report["preproduce"] = preproduce(ctx)
    drains: dict[str, Any] = {}
    try:
        if "ceiling" not in skip:
            drains["ceiling"] = ceiling(ctx)
        if "naive" not in skip:
            drains["naive"] = naive_baseline(ctx, min(a.naive_n or int(mode["naive_n"]), ctx.n))
        if "workers" not in skip:
            drains["worker1"] = worker_drain(ctx, 1)
            drains["worker2"] = worker_drain(ctx, 2)
        if "sweep" not in skip:
            report["sweep"] = [worker_drain(ctx, 1, b, w).as_dict() for b, w in mode["sweep"]]
        if "latency" not in skip and "worker1" in drains:
            report["latency"] = latency(ctx, drains["worker1"].tx_per_s, [0.25, 0.5, 0.75, 0.9],
                                        a.step_s or float(mode["step_s"]))
    finally:
        kafka_io.delete_topics(bootstrap, ctx.prefix)
    report["drains"] = {k: d.as_dict() for k, d in drains.items()}
    report["timelines"] = {d.name: d.timeline for d in drains.values()}
    return report


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
