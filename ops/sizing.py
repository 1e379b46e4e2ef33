"""``python -m ops.sizing``: what a worker holds and reads per unit of traffic, measured on the
worker's own state classes, and the cluster it implies at a given rate.

Measured (no Kafka; one transactions partition's state fed a simulated history through the same
admission a rebuild uses, ``workers.batch.admit_records``, closing days and evicting as the worker
does; Python's allocations counted with ``tracemalloc``):

- bytes per transaction held: the customer histories and seen ids of the 38-day horizon (every
  transaction of the last ~38 days is held: the features are exact sliding windows);
- bytes per terminal in the terminal table (``TerminalTable``: every worker holds every terminal);
- the terminal-days records a partition publishes per day (every worker reads all of them).

Each is the slope between two population sizes, so the fixed cost (the interpreter, the model) is
not in it. The model then scales them to ``--rates`` with ``--tx-per-customer-day`` and
``--tx-per-terminal-day`` (the handbook's simulator has about 2 and 1; card networks see many more
transactions per terminal), and ``--cpu-us`` per transaction (BENCHMARKS.md: the measured drain cost).
"""

from __future__ import annotations

import argparse
import gc
import math
import tracemalloc
from dataclasses import dataclass

import numpy as np

from ops.loadgen.replay import TX, events
from schemas.features import DAY_MS
from trainer.simulate import SimConfig, labels_of, simulate
from workers.batch import Record, admit_records
from workers.state import TxPartition
from workers.terminals import TX as TX_KIND
from workers.terminals import TerminalTable, dumps, partial_key

HORIZON_DAYS = 38          # the state horizon (schemas.features: 30-day windows + the terminal delay + lateness)
CORE_UTILISATION = 0.5     # a core's share a worker may use and keep the p99 (BENCHMARKS.md: latency at 50 % load)


@dataclass(frozen=True)
class Measured:
    bytes_per_tx: float          # held per transaction in the horizon (customer histories + seen ids)
    bytes_per_terminal: float    # held per terminal in the terminal table
    day_record_bytes_per_terminal: float  # terminal-days bytes a partition publishes per terminal it saw that day
    tx: int
    terminals: int


def _feed(customers: int, terminals: int, days: int) -> tuple[int, int, int, int, int]:
    """(bytes held by the partition state, transactions held, bytes of the table, terminals in it, day-record bytes)."""
    h = simulate(SimConfig(customers=customers, terminals=terminals, days=days, seed=7))
    stream = [e for e in events(h, labels_of(h)) if e.kind == TX]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    state = TxPartition(0, 600_000)
    table = TerminalTable(1, 1)
    published = 0
    for i in range(0, len(stream), 1000):
        chunk = stream[i:i + 1000]
        admit_records([Record(0, i + k, e.time_ms, e.key, e.value, 0) for k, e in enumerate(chunk)], state, 3_600_000)
        for day, counts in state.close_days():
            value = dumps(counts)
            published += len(value)
            table.apply(partial_key(TX_KIND, 0, day), value)
        state.forget_old()
    gc.collect()
    state_bytes = tracemalloc.get_traced_memory()[0] - base
    held = state.sizes()["customer_transactions"]
    table_bytes = _size_of(table)
    tracemalloc.stop()
    return state_bytes - table_bytes, held, table_bytes, len(set(h.terminal_id.tolist())), published


def _size_of(table: TerminalTable) -> int:
    """Bytes reachable from the table's arrays and dicts (numpy buffers and Python containers)."""
    seen: set[int] = set()
    total = 0
    stack: list[object] = [table.__dict__]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            total += obj.nbytes
            continue
        total += _shallow(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.append(obj.__dict__)
    return total


def _shallow(obj: object) -> int:
    import sys

    try:
        return sys.getsizeof(obj)
    except TypeError:
        return 0


def measure(small: int, large: int, days: int) -> Measured:
    """Slopes between a population of ``small`` and ``large`` customers (twice as many terminals each)."""
    a = _feed(small, 2 * small, days)
    b = _feed(large, 2 * large, days)
    per_tx = (b[0] - a[0]) / max(b[1] - a[1], 1)
    per_terminal = (b[2] - a[2]) / max(b[3] - a[3], 1)
    # A day's record holds the counts of the terminals that partition saw that day.
    day_terminals = (b[3] - a[3]) * days
    return Measured(per_tx, per_terminal, (b[4] - a[4]) / max(day_terminals, 1), b[1], b[3])


def plan(rate: float, m: Measured, cpu_us: float, tx_per_terminal_day: float, partitions_per_worker: int = 2,
         worker_memory_gib: float = 8.0) -> dict[str, float]:
    """The cluster for ``rate`` transactions/s: workers by CPU and by memory, partitions, table size per worker."""
    per_day = rate * 86_400
    held_gib = per_day * HORIZON_DAYS * m.bytes_per_tx / 2**30
    terminals = per_day / tx_per_terminal_day
    table_gib = terminals * m.bytes_per_terminal / 2**30
    by_cpu = math.ceil(rate * cpu_us / 1e6 / CORE_UTILISATION)
    free = worker_memory_gib - table_gib - 0.25  # the interpreter, ONNX Runtime and the model
    by_memory = math.inf if free <= 0 else math.ceil(held_gib / free)
    workers = max(by_cpu, by_memory if by_memory != math.inf else 0, 1)
    # Every worker reads every terminal-days record: one record per partition and day, about a day's terminals.
    day_mib = terminals * m.day_record_bytes_per_terminal / 2**20
    return {"rate": rate, "held_gib": held_gib, "terminals": terminals, "table_gib": table_gib,
            "workers_cpu": by_cpu, "workers_memory": by_memory, "workers": workers,
            "partitions": max(workers * partitions_per_worker, 12), "terminal_days_mib_per_day": day_mib}


def check_workers(bundle: str, procs: int, n: int, brokers: int) -> list[dict[str, float]]:
    """The model's CPU assumption against a measured run: one worker, then ``procs`` workers, draining the same
    ``n`` transactions (+ labels) on a local cluster of ``brokers``: total worker CPU a transaction, and the
    idle share of a core each worker burns (its fixed cost: reading every terminal-days record, the loops)."""
    import tempfile
    from pathlib import Path

    from ops.bench.run import Context, worker_drain
    from ops.bench.toggle import bench_history
    from ops.kafka.cluster import LocalCluster

    h, lab = bench_history()
    work = Path(tempfile.mkdtemp(prefix="fraudstream-sizing-"))
    cluster = LocalCluster(work / "kafka", size=brokers)
    info = cluster.start(port=0)
    try:
        ctx = Context(info.bootstrap, Path(bundle), h, lab, min(n, len(h)), work)
        out = []
        for k in (1, procs):
            d = worker_drain(ctx, k)
            out.append({"workers": k, "tx_per_s": d.tx_per_s, "cpu_us": d.extra["cpu_us_per_tx"],
                        "idle_cpu": d.extra["idle_cpu"]})
        return out
    finally:
        cluster.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.sizing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=300, help="customers of the smaller population (default 300)")
    p.add_argument("--large", type=int, default=1200, help="customers of the larger population (default 1200)")
    p.add_argument("--days", type=int, default=60, help="simulated days, past the horizon (default 60)")
    p.add_argument("--rates", default="10000,100000,1000000", help="transactions/s to size for")
    p.add_argument("--cpu-us", type=float, default=50.0,
                   help="worker CPU µs a transaction (BENCHMARKS.md; default 50: drift on, reasons off)")
    p.add_argument("--tx-per-terminal-day", type=float, default=100.0, help="default 100")
    p.add_argument("--worker-memory-gib", type=float, default=8.0, help="memory a worker process may use (default 8)")
    p.add_argument("--check-bundle", default=None,
                   help="also check the CPU model against drains of 1 and --check-workers workers on a local cluster "
                        "of --check-brokers brokers, with this bundle")
    p.add_argument("--check-workers", type=int, default=4, help="default 4")
    p.add_argument("--check-brokers", type=int, default=3, help="default 3")
    p.add_argument("--check-transactions", type=int, default=100_000, help="default 100000")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    m = measure(a.small, a.large, a.days)
    print(f"measured ({a.small} vs {a.large} customers, {a.days} days, {m.tx:,} transactions held, "
          f"{m.terminals:,} terminals): {m.bytes_per_tx:.0f} B a held transaction, {m.bytes_per_terminal:.0f} B a "
          f"terminal in the table, {m.day_record_bytes_per_terminal:.1f} B of terminal-days record a terminal-day")
    print(f"\n| tx/s | held ({HORIZON_DAYS} d) | terminals | table per worker | workers by CPU | by memory "
          f"({a.worker_memory_gib:g} GiB) | partitions | terminal-days read per worker |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rate in (float(r) for r in a.rates.split(",")):
        r = plan(rate, m, a.cpu_us, a.tx_per_terminal_day, worker_memory_gib=a.worker_memory_gib)
        mem = "—" if r["workers_memory"] == math.inf else f"{r['workers_memory']:,.0f}"
        print(f"| {rate:,.0f} | {r['held_gib']:,.0f} GiB | {r['terminals'] / 1e6:,.1f} M | {r['table_gib']:,.2f} GiB "
              f"| {r['workers_cpu']:,.0f} | {mem} | {r['partitions']:,.0f} "
              f"| {r['terminal_days_mib_per_day']:,.0f} MiB/day |")
    if a.check_bundle:
        print(f"\n| workers ({a.check_brokers} brokers) | tx/s | worker CPU µs a transaction (all workers) "
              "| idle CPU a worker |")
        print("|---:|---:|---:|---:|")
        for row in check_workers(a.check_bundle, a.check_workers, a.check_transactions, a.check_brokers):
            print(f"| {row['workers']:.0f} | {row['tx_per_s']:,.0f} | {row['cpu_us']:.1f} | {row['idle_cpu']:.1%} |")
    return 0


__all__ = ["DAY_MS", "Measured", "measure", "plan"]

if __name__ == "__main__":
    raise SystemExit(main())
