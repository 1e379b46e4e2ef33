"""``python -m ops.guaranteebench``: what exactly-once and replication cost the worker (issue 17), side by side.

On one broker or a local three-node cluster (``--brokers 1|3``, started here unless ``--bootstrap``),
the bench's simulated history (``ops.bench.toggle.bench_history``):

1. **Drains.** One worker draining ``--drain`` transactions (+ labels) of that history, produced once per
   replication factor before any worker runs (so the load generator does not share the CPU with the
   drain), under each setting, interleaved ``--drain-runs`` times (the order rotated every run, after one
   uncounted warm-up drain), each with a fresh group and fresh outputs: at-least-once, exactly-once at
   each ``--commit-intervals`` (a transaction per input partition per interval), all at the replication the
   brokers give (3, ``min.insync.replicas`` 2, on the cluster), and on the cluster at-least-once with every
   topic at factor 1 (the worker always produces with ``acks=all``). Throughput from the scores'
   timestamps, first to last (the rate the worker scores at; under exactly-once they become visible at
   the next commit); worker CPU µs a transaction from /proc, from the end of its start (its log says so)
   to the moment the scores topic's end offsets reached the input and stopped moving (a commit interval
   and more, so the last commit counts); how many cores the worker kept busy meanwhile; and the brokers'
   CPU over the same span when they were started here.
2. **Live latency.** A worker on fresh topics in live time (``ops.bench.run.latency``'s shape: the first 8
   days shifted to end now and scored, a 2 s warm step, then ``--latency-s`` at one offered rate for every
   setting, ``--latency-load`` of the slowest setting's median drain unless ``--latency-rate``). Two
   latencies from the load generator's send (the input record's timestamp): **appended** (the scores
   topic's LogAppendTime: the leader holds the score, replicated and committed or not) and **visible**
   (when a ``read_committed`` consumer, in a process of its own, received it: what a downstream reader
   sees: after the followers have it, under exactly-once after its transaction's commit).

Scores are read back with ``isolation.level=read_committed`` and checked: every transaction scored once
(duplicates reported). Not ``ops.bench.run.worker_drain``/``latency`` themselves: their read-back
(``kafka_io.read_topic``) waits for a record at each partition's last offset, which on a transactional
topic is a commit marker, so it never returns; and their end-offset count includes the markers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.settings import add, positive_int

ENV_GUARANTEE = "FRAUDSTREAM_GUARANTEE"
ENV_FACTOR = "FRAUDSTREAM_REPLICATION_FACTOR"
ENV_COMMIT = "FRAUDSTREAM_COMMIT_INTERVAL_MS"
# The watcher's fetch wait: at the clients' default 500 ms, a read_committed fetch here often came back only at its
# deadline (kafka-python; seen as ~0.5 s between the append and the arrival of at-least-once scores); at 50 ms
# a score arrives within a few ms of its append (idle fetches cost nothing that matters).
FETCH_MAX_WAIT_MS = 50


def log(msg: str) -> None:
    print(f"[guaranteebench] {msg}", file=sys.stderr, flush=True)


# -- pure helpers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A worker configuration, given to it (and to the topics created for it) by environment variables."""

    guarantee: str = "at-least-once"
    factor: str = "1"           # replication factor of every topic of the run
    commit_ms: int = 1000

    @property
    def name(self) -> str:
        out = self.guarantee if self.guarantee == "at-least-once" else f"exactly-once, commit {self.commit_ms} ms"
        return f"{out}, RF {self.factor}"

    def env(self) -> dict[str, str]:
        return {ENV_GUARANTEE: self.guarantee, ENV_FACTOR: self.factor, ENV_COMMIT: str(self.commit_ms)}


def plan_settings(brokers: int, intervals: Sequence[int]) -> tuple[list[Setting], list[Setting]]:
    """(the drains' settings, the latency runs' settings). The drains: at-least-once first (the baseline),
    exactly-once at each commit interval, all at the replication the broker count gives (3 on a cluster);
    on a cluster, at-least-once at factor 1 last. The latency runs: on a cluster that one first, then
    the others."""
    factor = "3" if brokers >= 3 else "1"
    drains = [Setting(factor=factor), *(Setting("exactly-once", factor, ms) for ms in intervals)]
    if brokers >= 3:
        return [*drains, Setting(factor="1")], [Setting(factor="1"), *drains]
    return drains, list(drains)


def interleaved(settings: Sequence[Setting], runs: int) -> list[Setting]:
    """Every setting once a run, the order rotated each run (no setting always first, after a fresh start)."""
    k = len(settings)
    return [settings[(r + i) % k] for r in range(runs) for i in range(k)] if k else []


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block, restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class DrainResult:
    setting: str
    tx_per_s: float
    cpu_us_per_tx: float
    broker_cpu_us_per_tx: float   # NaN when the brokers are not ours
    scores: int                   # records read back (read_committed)
    distinct: int                 # distinct tx_ids among them
    markers: int                  # offsets that hold no score: transaction markers
    worker_cores: float = float("nan")  # the worker's CPU seconds a second, send start to the last score's commit


def median_rows(results: Sequence[DrainResult], baseline: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per setting (in ``names``' order, those with results): every run's tx/s, the medians of tx/s, worker
    and broker CPU a transaction, and the medians' ratios to ``baseline``'s."""
    by: dict[str, list[DrainResult]] = {}
    for r in results:
        by.setdefault(r.setting, []).append(r)

    def med(rs: list[DrainResult], attr: str) -> float:
        vals = [float(getattr(r, attr)) for r in rs]
        vals = [v for v in vals if v == v]  # NaN-free
        return statistics.median(vals) if vals else float("nan")

    base = by.get(baseline, [])
    b_tx, b_cpu = med(base, "tx_per_s"), med(base, "cpu_us_per_tx")
    rows = []
    for name in names:
        rs = by.get(name)
        if not rs:
            continue
        tx, cpu, bcpu = med(rs, "tx_per_s"), med(rs, "cpu_us_per_tx"), med(rs, "broker_cpu_us_per_tx")
        cores = med(rs, "worker_cores")
        rows.append({"setting": name, "runs": [r.tx_per_s for r in rs], "tx_per_s": tx, "cpu_us_per_tx": cpu,
                     "broker_cpu_us_per_tx": bcpu, "worker_cores": cores,
                     "tx_vs_base": tx / b_tx - 1 if b_tx > 0 else float("nan"),
                     "cpu_vs_base": cpu / b_cpu - 1 if b_cpu > 0 else float("nan"),
                     "duplicates": sum(r.scores - r.distinct for r in rs),
                     "markers": med(rs, "markers")})
    return rows


def _num(x: float, fmt: str = ",.0f") -> str:
    return "-" if x != x else format(x, fmt)


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:+.1%}"


def drain_table(rows: Sequence[Mapping[str, Any]]) -> str:
    out = ["| setting | tx/s (each run) | median tx/s | vs baseline | worker CPU µs a tx | vs baseline "
           "| worker cores busy | brokers' CPU µs a tx | markers a drain | duplicates |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['setting']} | {', '.join(_num(x) for x in r['runs'])} | {_num(r['tx_per_s'])} "
                   f"| {_pct(r['tx_vs_base'])} | {_num(r['cpu_us_per_tx'], '.1f')} | {_pct(r['cpu_vs_base'])} "
                   f"| {_num(r['worker_cores'], '.2f')} | {_num(r['broker_cpu_us_per_tx'], '.1f')} "
                   f"| {_num(r['markers'])} | {r['duplicates']} |")
    return "\n".join(out)


def step_inputs(inputs: Mapping[str, int], since_ms: int) -> dict[str, int]:
    """The live step's transactions: those sent at or after ``since_ms`` (the history's are older)."""
    return {k: ts for k, ts in inputs.items() if ts >= since_ms}


def latency_table(rows: Sequence[Mapping[str, Any]]) -> str:
    out = ["| setting | offered tx/s | achieved | appended p50 / p95 / p99 ms | visible p50 / p95 / p99 ms "
           "| transactions | unscored |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, v = r["appended"], r["visible"]
        out.append(f"| {r['setting']} | {_num(r['offered'])} | {_num(r['achieved'])} "
                   f"| {a['p50']:.0f} / {a['p95']:.0f} / {a['p99']:.0f} "
                   f"| {v['p50']:.0f} / {v['p95']:.0f} / {v['p99']:.0f} | {v['n']:,} | {r['missing']} |")
    return "\n".join(out)


# -- Kafka ----------------------------------------------------------------------------------------------


def read_committed(bootstrap: str, topic: str, timeout_s: float = 120) -> list[Any]:
    """Every committed record of ``topic`` (kafka-python ``ConsumerRecord``s). Reads up to each partition's
    end by the consumer's position, which moves past transaction markers (a record count never reaches
    an end offset that counts them)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed", fetch_max_bytes=64 * 1024 * 1024,
                             max_poll_records=10000)
    out: list[Any] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)  # the last stable offsets under read_committed
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end in {timeout_s:g}s")
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
    finally:
        consumer.close()
    return out


def end_offsets_total(consumer: Any, topic: str) -> int:
    from ops.bench.kafka_io import end_total

    consumer._client.cluster.request_update()
    return end_total(consumer, topic)


def settle(bootstrap: str, topic: str, n: int, quiet_s: float, timeout_s: float, alive: Callable[[], bool],
           sample: Callable[[], tuple[float, float, float]]) -> tuple[int, tuple[float, float, float]]:
    """Wait until ``topic``'s end offsets hold ``n`` or more and have not moved for ``quiet_s``; the final
    total and ``sample()`` taken when that total was first seen."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    last, since, at = -1, time.monotonic(), sample()
    try:
        while time.monotonic() < deadline and alive():
            total = end_offsets_total(consumer, topic)
            now = time.monotonic()
            if total != last:
                last, since, at = total, now, sample()
            elif total >= n and now - since >= quiet_s:
                break
            time.sleep(0.2)
    finally:
        consumer.close()
    return last, at


def _proc_cpu(pids: Callable[[], list[int]]) -> Callable[[], float]:
    from ops.bench.workers_run import cpu_seconds

    return lambda: sum(cpu_seconds(p) for p in pids()) if pids() else float("nan")


# -- the two measurements -------------------------------------------------------------------------------


STARTED = ("labels partitions assigned", " ready in ")  # worker log lines: its start is over, the drain begins


@dataclass
class Bench:
    bootstrap: str
    bundle: Path
    work: Path
    n: int
    broker_pids: Callable[[], list[int]]
    prefix: str = field(default_factory=lambda: f"gb-{uuid.uuid4().hex[:8]}")
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # replication factor -> (tx, labels) topics

    def topics(self, kind: str) -> tuple[str, str, str]:
        tag = f"{self.prefix}-{kind}{uuid.uuid4().hex[:6]}"
        return tag, f"{tag}-in-tx", f"{tag}-in-labels"

    def input(self, factor: str, h: Any, lab: Any) -> tuple[str, str]:
        """The drains' input at ``factor``: the first ``n`` transactions (+ labels) produced once, unpaced, before
        any worker runs (so that the load generator does not compete with the worker for the CPU)."""
        if factor not in self.inputs:
            from ops.bench import kafka_io
            from ops.bench.run import PARTITIONS
            from ops.loadgen.replay import events
            from ops.loadgen.schedule import Schedule
            from ops.loadgen.send import send

            _, tx, labels = self.topics(f"in-rf{factor}-")
            with environ({ENV_FACTOR: factor}):
                kafka_io.create_topics(self.bootstrap, [tx, labels], PARTITIONS)
            sent = send(self.bootstrap, tx, labels, events(h, lab, 0, self.n), Schedule())
            log(f"input at replication factor {factor}: {sent.transactions:,} transactions + {sent.labels:,} labels "
                f"in {sent.seconds:.1f} s")
            self.inputs[factor] = (tx, labels)
        return self.inputs[factor]


def wait_started(ws: Any, timeout_s: float = 60) -> bool:
    """Until the worker's log says it has started (model loaded, app up, labels assigned): polled every 20 ms, so
    that the CPU it spent starting can be told from the drain's."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and ws.alive():
        text = ws.log(0).read_text(errors="replace") if ws.log(0).exists() else ""
        if any(marker in text for marker in STARTED):
            return True
        time.sleep(0.02)
    return False


def drain(b: Bench, h: Any, lab: Any, s: Setting, timeout_s: float = 180) -> DrainResult:
    """One worker under ``s``, a fresh group and fresh outputs, draining the pre-produced input of its replication
    factor: CPU from the end of its start to the commit of its last score."""
    from ops.bench.run import PARTITIONS
    from ops.bench.stats import drain_rate
    from ops.bench.workers_run import WorkerSet

    tx, labels = b.input(s.factor, h, lab)
    tag, _, _ = b.topics("d")
    brokers_cpu = _proc_cpu(b.broker_pids)
    with environ(s.env()):
        ws = WorkerSet(b.bootstrap, b.bundle, tx, labels, tag, b.work / "logs", partitions=PARTITIONS,
                       die_with_parent=True)
        ws.start(1)
    try:
        if not wait_started(ws):
            raise RuntimeError(f"{s.name}: the worker did not start:\n{ws.tail()}")
        cpu1, bcpu1, t1 = ws.cpu_seconds(), brokers_cpu(), time.monotonic()
        ends, (cpu2, bcpu2, t2) = settle(b.bootstrap, ws.scores_topic, b.n, s.commit_ms / 1000 + 1.0, timeout_s,
                                         ws.alive, lambda: (ws.cpu_seconds(), brokers_cpu(), time.monotonic()))
        if ends < b.n:
            log(f"{s.name}: only {ends}/{b.n} offsets in the scores topic; worker log tail:\n{ws.tail()}")
    finally:
        ws.stop()
    recs = read_committed(b.bootstrap, ws.scores_topic)
    ids = {orjson.loads(r.value)["tx_id"] for r in recs}
    got = max(len(recs), 1)
    r = DrainResult(s.name, drain_rate([x.timestamp for x in recs]), (cpu2 - cpu1) / got * 1e6,
                    (bcpu2 - bcpu1) / got * 1e6, len(recs), len(ids), ends - len(recs),
                    (cpu2 - cpu1) / max(t2 - t1, 1e-9))
    log(f"{s.name}: {r.tx_per_s:,.0f} tx/s, worker {r.cpu_us_per_tx:.1f} µs/tx ({r.worker_cores:.2f} cores), brokers "
        f"{r.broker_cpu_us_per_tx:.1f} µs/tx, {r.scores} scores ({r.distinct} distinct of {b.n}), {r.markers} markers")
    return r


def _watch(bootstrap: str, topic: str, out: str, count: Any, stop: Any) -> None:
    """Child process: read ``topic`` with read_committed from the start (aiokafka: its record parsing is compiled,
    so the watcher keeps up on a small machine), stamping each fetch's records with the wall clock of their
    arrival; on ``stop``, write ``{tx_id: first arrival ms}`` to ``out``."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> dict[str, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                    isolation_level="read_committed", max_poll_records=10000,
                                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS, fetch_min_bytes=1)
        await consumer.start()
        got: list[tuple[int, list[bytes]]] = []
        try:
            parts: list[Any] = []
            while not parts and not stop.is_set():
                parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
                if not parts:
                    await consumer._client.force_metadata_update()
                    await asyncio.sleep(0.1)
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while not stop.is_set():
                polled = await consumer.getmany(timeout_ms=100)
                now = int(time.time() * 1000)
                values = [r.value for recs in polled.values() for r in recs]
                if values:
                    got.append((now, values))
                    with count.get_lock():
                        count.value += len(values)
        finally:
            await consumer.stop()
        first: dict[str, int] = {}
        for ms, batch in got:
            for v in batch:
                first.setdefault(orjson.loads(v)["tx_id"], ms)
        return first

    Path(out).write_bytes(orjson.dumps(asyncio.run(run())))


class Watcher:
    """A read_committed consumer in a process of its own (not competing for this one's GIL with the load
    generator): how many scores are visible, and when each became so."""

    def __init__(self, bootstrap: str, topic: str, out: Path) -> None:
        ctx = mp.get_context("spawn")
        self.out = out
        self.count = ctx.Value("q", 0)
        self.stop_event = ctx.Event()
        self.proc = ctx.Process(target=_watch, args=(bootstrap, topic, str(out), self.count, self.stop_event),
                                daemon=True)

    def start(self) -> None:
        self.proc.start()

    def wait(self, n: int, timeout_s: float, alive: Callable[[], bool]) -> int:
        deadline = time.monotonic() + timeout_s
        while self.count.value < n and time.monotonic() < deadline and alive() and self.proc.is_alive():
            time.sleep(0.1)
        return int(self.count.value)

    def stop(self) -> dict[str, int]:
        """``{tx_id: first arrival ms}`` (empty when the watcher did not finish)."""
        self.stop_event.set()
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.kill()
        return dict(orjson.loads(self.out.read_bytes())) if self.out.exists() else {}


def live(b: Bench, h: Any, lab: Any, s: Setting, rate: float, seconds: float, warm_s: float = 2.0,
         timeout_s: float = 120, history_days: int = 8) -> dict[str, Any]:
    """``ops.bench.run.latency``'s live run at one rate, under ``s``, with the visibility watcher beside it."""
    from ops.bench import kafka_io
    from ops.bench.run import PARTITIONS, latency_history
    from ops.bench.stats import join_latency, percentiles
    from ops.bench.workers_run import WorkerSet
    from ops.loadgen.live import first_index_of_day, now_ms, plan, send_live
    from ops.loadgen.schedule import Schedule, Step

    tag, tx, labels = b.topics("l")
    steps = [Step(max(rate * 0.1, 10.0), warm_s), Step(rate, seconds)]
    history, hlab = latency_history(h, lab, int(sum(st.rate * st.seconds for st in steps)))
    skip = first_index_of_day(history, history_days)
    with environ(s.env()):
        kafka_io.create_topics(b.bootstrap, [tx, labels], PARTITIONS)
        ws = WorkerSet(b.bootstrap, b.bundle, tx, labels, tag, b.work / "logs", partitions=PARTITIONS,
                       die_with_parent=True)
        kafka_io.create_topics(b.bootstrap, [ws.scores_topic], PARTITIONS, {"message.timestamp.type": "LogAppendTime"})
        ws.start(1)
    watcher = Watcher(b.bootstrap, ws.scores_topic, b.work / f"{tag}-visible.json")

    def warm_up(info: dict[str, Any]) -> None:
        n = int(info["history_transactions"])
        got = watcher.wait(n, timeout_s, ws.alive)
        log(f"{s.name}: history of {n:,} transactions ending now, {got:,} scores visible")

    try:
        watcher.start()
        if not ws.wait_ready():
            raise RuntimeError(f"{s.name}: the worker did not get ready:\n{ws.tail()}")
        time.sleep(2.0)  # group join and partition assignment
        sent = send_live(b.bootstrap, tx, labels, plan(history, hlab, now_ms(), 0, skip), Schedule(steps=steps),
                         hold=warm_up)
        assert sent.live is not None
        expect = int(sent.live["history_transactions"]) + sent.transactions
        if watcher.wait(expect, timeout_s, ws.alive) < expect:
            log(f"{s.name}: fewer than {expect} scores visible; worker log tail:\n{ws.tail()}")
    finally:
        ws.stop()
        visible = watcher.stop()
    inputs = {orjson.loads(v)["tx_id"]: ts for ts, _, v in kafka_io.read_topic(b.bootstrap, tx)}
    inputs = step_inputs(inputs, int(sent.live["live_first_ts"]) + int(warm_s * 1000))
    appended = [(orjson.loads(r.value)["tx_id"], r.timestamp) for r in read_committed(b.bootstrap, ws.scores_topic)]
    app, missing = join_latency(inputs, appended)
    vis, _ = join_latency(inputs, visible.items())
    pa, pv = percentiles([float(x) for x in app.values()]), percentiles([float(x) for x in vis.values()])
    log(f"{s.name} at {rate:,.0f} tx/s: appended p50/p95/p99 " + "/".join(f"{pa[k]:.0f}" for k in ("p50", "p95", "p99"))
        + ", visible " + "/".join(f"{pv[k]:.0f}" for k in ("p50", "p95", "p99")))
    return {"setting": s.name, "offered": rate, "achieved": sent.step_rates[1], "missing": missing,
            "appended": pa, "visible": pv}


# -- the command ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.guaranteebench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", None, "model bundle (else a quick one is trained)", Path)
    p.add_argument("--brokers", type=int, choices=(1, 3), default=3,
                   help="one broker or the 3-node cluster (default 3)")
    add(p, "--bootstrap", "KAFKA_BOOTSTRAP", None, "a running broker/cluster of --brokers nodes (else one is started)")
    p.add_argument("--drain", type=positive_int, default=60_000, help="transactions a drain (default 60000)")
    p.add_argument("--drain-runs", type=positive_int, default=3, help="drains of each setting (default 3)")
    p.add_argument("--commit-intervals", default="1000,100",
                   help="exactly-once commit intervals in ms, comma list (default %(default)s)")
    p.add_argument("--reasons", type=int, default=0,
                   help="the workers' --reasons (default 0: the fastest worker, where a fixed cost weighs most)")
    p.add_argument("--latency-s", type=float, default=25.0, help="seconds at the offered rate (default 25; 0: none)")
    p.add_argument("--latency-load", type=float, default=0.5,
                   help="offered rate as a fraction of the slowest setting's median drain (default 0.5)")
    p.add_argument("--latency-rate", type=float, default=None, help="offered tx/s (overrides --latency-load)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p


@contextlib.contextmanager
def kafka(a: argparse.Namespace, work: Path) -> Iterator[tuple[str, Callable[[], list[int]]]]:
    """(bootstrap, the brokers' pids) of ``--bootstrap`` or of a broker/cluster started here."""
    if a.bootstrap:
        yield a.bootstrap, list
        return
    if a.brokers == 1:
        from ops.kafka import LocalBroker

        broker = LocalBroker(work / "kafka")
        boot = broker.start(port=0).bootstrap
        try:
            yield boot, lambda: [i.pid for i in [broker.info()] if i and i.pid]
        finally:
            broker.stop()
            shutil.rmtree(work / "kafka", ignore_errors=True)  # GBs of topic data; the worker logs stay
        return
    from ops.kafka.cluster import LocalCluster

    cluster = LocalCluster(work / "cluster", size=3)
    boot = cluster.start(port=0).bootstrap
    try:
        yield boot, lambda: [n.pid for n in cluster.nodes.values() if n.pid]
    finally:
        cluster.stop()
        shutil.rmtree(work / "cluster", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from ops.bench.machine import describe, git_commit
    from ops.bench.toggle import bench_history

    intervals = [positive_int(x) for x in a.commit_intervals.split(",") if x.strip()]
    drains_of, lat_of = plan_settings(a.brokers, intervals)
    work = Path(tempfile.mkdtemp(prefix="fraudstream-guaranteebench-"))
    started = time.monotonic()
    h, lab = bench_history()
    n = min(a.drain, len(h))
    if a.bundle is None:
        from ops.bench.__main__ import train

        a.bundle = train(work)
    m = describe()
    print(f"commit {git_commit()}, {m['cores']} cores ({m['cpu']}); {a.brokers} broker(s); bundle {a.bundle}; "
          f"1 worker, batch 1000, --reasons {a.reasons}; drains of {n:,} transactions (+ labels)\n", flush=True)
    report: dict[str, Any] = {"machine": m, "brokers": a.brokers, "n": n, "reasons": a.reasons}
    with environ({"FRAUDSTREAM_REASONS": str(a.reasons)}), kafka(a, work) as (boot, pids):
        log(f"kafka at {boot}")
        b = Bench(boot, a.bundle, work, n, pids)
        log("warm-up drain (not counted): the JVMs' first drain after a start is the slowest")
        drain(b, h, lab, drains_of[0])
        results = []
        for s in interleaved(drains_of, a.drain_runs):
            results.append(drain(b, h, lab, s))
        names = [s.name for s in drains_of]
        guarantee = median_rows(results, names[0], names[: 1 + len(intervals)])
        print(f"Drains, exactly-once against at-least-once:\n\n{drain_table(guarantee)}\n", flush=True)
        report["drains"] = [asdict(r) for r in results]
        report["guarantee"] = guarantee
        if a.brokers >= 3:
            rf = median_rows(results, names[-1], [names[-1], names[0]])
            print(f"Drains, replication factor 3 against 1 (at-least-once, acks=all):\n\n{drain_table(rf)}\n",
                  flush=True)
            report["replication"] = rf
        if a.latency_s > 0:
            lat_names = {s.name for s in lat_of}
            slowest = min(r["tx_per_s"] for r in median_rows(results, names[0], names)
                          if r["setting"] in lat_names)
            rate = a.latency_rate or a.latency_load * slowest
            lat = [live(b, h, lab, s, rate, a.latency_s) for s in lat_of]
            print(f"Live latency at {rate:,.0f} tx/s offered ({a.latency_s:g} s a setting; from the load "
                  "generator's send; appended = the scores topic's LogAppendTime, visible = received by a "
                  f"read_committed consumer):\n\n{latency_table(lat)}\n", flush=True)
            report["latency"] = lat
    report["seconds"] = time.monotonic() - started
    print(f"done in {report['seconds']:.0f} s; the workers' logs are in {work / 'logs'}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
