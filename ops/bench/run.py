"""The benchmark's phases, each on the same pre-produced input unless it says otherwise.

Throughput is measured from outside every process under test: the output topic's record
timestamps, first to last (``stats.drain_rate``). Latency is output record timestamp minus input record
timestamp, joined by tx_id.

Two kinds of time. The drains (ceiling, naive, workers, sweep) replay the history compressed
(``ops.loadgen.replay``: its own event times, a simulated day every second or so, labels at their
``reported_at`` interleaved): they measure how fast a backlog goes. The latency steps run in live
time (``ops.loadgen.live``): the first 8 days of the history are shifted to end now and sent first
(scored before the clock starts), then every transaction is sent with ``ts`` = the wall clock at
send, as production sees it: no simulated midnight every second, labels at their report times (the
history's held-back labels, a few a minute at this size, not one per transaction).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ops.bench import kafka_io
from ops.bench.baselines import naive, passthrough
from ops.bench.stats import drain_rate, join_latency, percentiles, timeline
from ops.bench.workers_run import WorkerSet
from ops.loadgen.live import first_index_of_day, now_ms, plan, send_live
from ops.loadgen.replay import events
from ops.loadgen.schedule import Schedule, Step
from ops.loadgen.send import send
from trainer.simulate import History, Labels

PARTITIONS = 4
IDLE_S = 3.0  # a drain's workers are watched idle this long (joined, no input) before the input is sent


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Drain:
    name: str
    tx_per_s: float
    outputs: int
    timeline: tuple[list[float], list[float]]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tx_per_s": self.tx_per_s, "outputs": self.outputs, **self.extra}


@dataclass
class Context:
    bootstrap: str
    bundle: Path
    history: History
    labels: Labels
    n: int
    workdir: Path
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    tx_topic: str = ""
    label_topic: str = ""

    def topic(self, name: str) -> str:
        return f"{self.prefix}-{name}"


def preproduce(ctx: Context) -> dict[str, Any]:
    ctx.tx_topic, ctx.label_topic = ctx.topic("in-tx"), ctx.topic("in-labels")
    kafka_io.create_topics(ctx.bootstrap, [ctx.tx_topic, ctx.label_topic], PARTITIONS)
    s = send(ctx.bootstrap, ctx.tx_topic, ctx.label_topic, events(ctx.history, ctx.labels, 0, ctx.n), Schedule())
    log(f"pre-produced {s.transactions} transactions + {s.labels} labels in {s.seconds:.1f}s "
        f"({s.client} {s.message_rate:,.0f} msg/s)")
    return s.as_dict()


def _drained(ctx: Context, name: str, topic: str, expect: int) -> Drain:
    recs = kafka_io.read_topic(ctx.bootstrap, topic)
    ts = np.array([r[0] for r in recs], dtype=np.int64)
    d = Drain(name, drain_rate(ts), len(recs), timeline(ts))
    if len(recs) < expect:
        d.extra["missing"] = expect - len(recs)
    log(f"{name}: {d.tx_per_s:,.0f} tx/s ({len(recs)} outputs)")
    return d


def ceiling(ctx: Context) -> Drain:
    dst = ctx.topic("ceiling-out")
    kafka_io.create_topics(ctx.bootstrap, [dst], PARTITIONS)
    seconds = asyncio.run(passthrough(ctx.bootstrap, ctx.tx_topic, dst, ctx.n, PARTITIONS))
    d = _drained(ctx, "a. ceiling", dst, ctx.n)
    d.extra["inside_tx_per_s"] = ctx.n / seconds
    return d


def naive_baseline(ctx: Context, n: int) -> Drain:
    dst = ctx.topic("naive-out")
    kafka_io.create_topics(ctx.bootstrap, [dst], PARTITIONS)
    b = _bundle_meta(ctx.bundle)
    seconds = asyncio.run(naive(ctx.bootstrap, ctx.tx_topic, ctx.label_topic, dst, n, ctx.bundle / "model.lgb.txt",
                                b["threshold"], PARTITIONS))
    d = _drained(ctx, "b. naive", dst, n)
    d.extra["inside_tx_per_s"] = n / seconds
    return d


def _bundle_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = orjson.loads((path / "model.json").read_bytes())
    thr = meta.get("threshold")
    meta["threshold"] = float(thr["value"]) if isinstance(thr, dict) else float(str(thr))
    return meta


def worker_drain(ctx: Context, procs: int, batch_size: int = 1000, max_wait_ms: float = 5.0,
                 timeout_s: float = 120) -> Drain:
    """The workers join their group on empty input topics first; then the same input is produced
    unpaced (the aiokafka load generator outruns the workers several times over) and drained. So no
    run pays a rebalance inside its measurement: with the input pre-produced, one worker drained most
    of it alone while the second was still joining (x2/x1 read 0.83)."""
    tag = ctx.topic(f"w{uuid.uuid4().hex[:6]}")
    tx, lab = f"{tag}-in-tx", f"{tag}-in-labels"
    kafka_io.create_topics(ctx.bootstrap, [tx, lab], PARTITIONS)
    ws = WorkerSet(ctx.bootstrap, ctx.bundle, tx, lab, tag, ctx.workdir / "logs", batch_size, max_wait_ms, PARTITIONS)
    name = f"c. worker x{procs} (batch {batch_size}, wait {max_wait_ms:g} ms)"
    ws.start(procs)
    try:
        if not ws.wait_assigned(60):
            raise RuntimeError(f"{name}: the workers did not all get partitions:\n{ws.tail()}")
        cpu0, t0 = ws.cpu_seconds(), time.monotonic()
        time.sleep(IDLE_S)
        cpu1 = ws.cpu_seconds()
        idle = (cpu1 - cpu0) / (time.monotonic() - t0) / procs
        send(ctx.bootstrap, tx, lab, events(ctx.history, ctx.labels, 0, ctx.n), Schedule())
        got = kafka_io.wait_count(ctx.bootstrap, ws.scores_topic, ctx.n, timeout_s, ws.alive)
        busy = ws.cpu_seconds() - cpu1
        if got < ctx.n:
            log(f"{name}: only {got}/{ctx.n} scores; worker log tail:\n{ws.tail()}")
    finally:
        ws.stop()
    d = _drained(ctx, name, ws.scores_topic, ctx.n)
    d.extra.update(procs=procs, batch_size=batch_size, max_wait_ms=max_wait_ms, idle_cpu=idle,
                   cpu_us_per_tx=busy / max(got, 1) * 1e6)
    log(f"{name}: worker CPU {d.extra['cpu_us_per_tx']:.1f} us per transaction (labels included), idle "
        f"{idle:.1%} of a core each")
    return d


def stage_latencies(scores: list[tuple[int, dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Where each transaction's latency went, from the timing the worker writes into its score message:
    ``to_worker`` (load generator send -> worker fetch: producer batching, broker, fetch), ``in_worker``
    (fetch -> scored: batching, terminal-finality waits, queueing behind other batches), ``publish``
    (scored -> the broker appended the score)."""
    out: dict[str, dict[str, int]] = {"to_worker": {}, "in_worker": {}, "publish": {}}
    for ts, m in scores:
        t = m["timing"]
        txid = m["tx_id"]
        out["to_worker"][txid] = t["consumed_at"] - t["input_ts"]
        out["in_worker"][txid] = t["scored_at"] - t["consumed_at"]
        out["publish"][txid] = ts - t["scored_at"]
    return out


def latency_history(h: History, labels: Labels, need: int) -> tuple[History, Labels]:
    """``h`` when it holds ``need`` transactions after its first 8 days; else a simulation scaled up to
    (the latency steps at a fast worker's rates outrun the drain's input: the full bench's 50 % step
    ran out of history before this)."""
    have = len(h) - first_index_of_day(h, 8)
    if have >= need:
        return h, labels
    from ops.loadgen.source import simulated
    from trainer.simulate import SimConfig

    scale = 1.15 * need / max(have, 1)
    customers = int(len(set(h.customer_id.tolist())) * scale) + 1
    log(f"latency: simulating {customers} customers for {need:,} transactions")
    return simulated(SimConfig(customers=customers, terminals=2 * customers, days=84, seed=1))


def latency(ctx: Context, capacity: float, fractions: list[float], step_s: float, warm_s: float = 2.0,
            timeout_s: float = 120, history_days: int = 8) -> dict[str, Any]:
    """A worker on fresh topics, in live time: the first ``history_days`` days shifted to end now, sent at
    once and scored; then the load generator offers each fraction of ``capacity`` for ``step_s``, every
    transaction stamped with the wall clock at send."""
    tx, lab = ctx.topic("lat-tx"), ctx.topic("lat-labels")
    kafka_io.create_topics(ctx.bootstrap, [tx, lab], PARTITIONS)
    ws = WorkerSet(ctx.bootstrap, ctx.bundle, tx, lab, ctx.topic("lat"), ctx.workdir / "logs", partitions=PARTITIONS)
    # Output timestamps are the broker's append times, so the produce round trip of every score counts.
    kafka_io.create_topics(ctx.bootstrap, [ws.scores_topic], PARTITIONS, {"message.timestamp.type": "LogAppendTime"})
    steps = [Step(max(capacity * 0.1, 10.0), warm_s)] + [Step(capacity * f, step_s) for f in fractions]
    schedule = Schedule(steps=steps)
    history, labels = latency_history(ctx.history, ctx.labels, int(sum(st.rate * st.seconds for st in steps)))
    skip = first_index_of_day(history, history_days)  # the first live transaction

    def warm_up(info: dict[str, Any]) -> None:
        n = int(info["history_transactions"])
        got = kafka_io.wait_count(ctx.bootstrap, ws.scores_topic, n, timeout_s, ws.alive)
        log(f"latency: history of {n:,} transactions + {info['history_labels']:,} labels, ending now, "
            f"{got:,} scored; {info['labels_held']:,} labels held back to their report times")

    ws.start(1)
    try:
        if not ws.wait_ready():
            raise RuntimeError(f"the worker did not get ready:\n{ws.tail()}")
        time.sleep(2.0)  # group join and partition assignment
        sent = send_live(ctx.bootstrap, tx, lab, plan(history, labels, now_ms(), 0, skip), schedule, hold=warm_up)
        assert sent.live is not None
        expect = int(sent.live["history_transactions"]) + sent.transactions
        got = kafka_io.wait_count(ctx.bootstrap, ws.scores_topic, expect, timeout_s, ws.alive)
        if got < expect:
            log(f"latency: only {got}/{expect} scores; worker log tail:\n{ws.tail()}")
    finally:
        ws.stop()
    inputs = {orjson.loads(v)["tx_id"]: ts for ts, _, v in kafka_io.read_topic(ctx.bootstrap, tx)}
    # Each live transaction belongs to the step it was scheduled in (the load generator may lag behind);
    # the history's transactions belong to none.
    step_of = {str(history.tx_id[skip + k]): schedule.step_of(schedule.due(k) or 0.0)
               for k in range(sent.transactions)}
    scores = [(ts, orjson.loads(v)) for ts, _, v in kafka_io.read_topic(ctx.bootstrap, ws.scores_topic)]
    outputs = [(m["tx_id"], ts) for ts, m in scores]
    lat, missing = join_latency(inputs, outputs)
    stages = stage_latencies(scores)
    loads: list[dict[str, Any]] = []
    values: dict[str, list[float]] = {}
    for i, f in enumerate(fractions, start=1):
        v = [float(ms) for txid, ms in lat.items() if step_of.get(txid) == i]
        label = f"{f:.0%} ({capacity * f:,.0f} tx/s)"
        values[label] = v
        loads.append({"load": f, "offered_tx_per_s": capacity * f, "achieved_tx_per_s": sent.step_rates[i],
                      **percentiles(v),
                      "stages": {name: percentiles([float(x) for txid, x in per.items() if step_of.get(txid) == i])
                                 for name, per in stages.items()}})
        log(f"latency at {label}: " + ", ".join(f"{k} {loads[-1][k]:.0f}" for k in ("p50", "p95", "p99", "max")))
    return {"loads": loads, "missing": missing, "sent": sent.as_dict(), "values": values, "time": "live"}
