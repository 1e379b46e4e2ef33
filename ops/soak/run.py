"""Send a long history through one worker in chunks of simulated days; after each chunk is scored,
sample the worker's state sizes (its stats messages' ``state``) and its resident memory. Optionally
kill -9 the worker after one chunk and start it again."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaConsumer

from ops.bench.kafka_io import wait_count
from ops.bench.workers_run import WorkerSet
from ops.loadgen.replay import events, produce
from schemas.features import DAY_MS
from schemas.kafka_auth import KafkaAuth
from trainer.simulate import History, Labels

# A transaction is scored once its day's terminal counts are final, so the last days of a chunk
# wait for the next one: a chunk is done when everything before these many days from its end is.
SETTLE_DAYS = 2


@dataclass
class Sample:
    day: int                     # simulated days since the history's start, at the chunk's end
    rss_mib: float
    state: dict[str, int]


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    killed_at_day: int | None = None
    seconds: float = 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latest_state(bootstrap: str, topic: str, after_ms: int, timeout_s: float = 30) -> dict[str, int]:
    """The ``state`` of the newest stats message stamped after ``after_ms``."""
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000, **KafkaAuth.from_env().kafka_python())
    try:
        best: dict[str, int] | None = None
        while time.monotonic() < deadline:
            for rec in consumer:
                msg = orjson.loads(rec.value)
                if msg["interval"]["end"] > after_ms:
                    best = msg["state"]
            if best is not None:
                return best
    finally:
        consumer.close()
    raise TimeoutError(f"no stats message on {topic} after {after_ms}")


def chunks(h: History, days: int) -> list[tuple[int, int, int]]:
    """(first index, stop index, end day) of each span of ``days`` simulated days."""
    day = (h.ts - h.ts[0]) // DAY_MS
    ends = [*range(days, int(day[-1]) + 1, days), int(day[-1]) + 1]
    stops = np.searchsorted(day, ends, side="left").tolist()
    return [(lo, hi, end) for lo, hi, end in zip([0, *stops[:-1]], stops, ends, strict=True) if hi > lo]


def soak(ws: WorkerSet, h: History, lab: Labels, chunk_days: int = 30, kill_after_day: int | None = None,
         log: Callable[[str], None] = lambda m: print(f"[soak] {m}", file=sys.stderr),
         timeout_s: float = 300) -> Soak:
    """Run ``h`` through the one worker of ``ws`` (started here, stopped by the caller)."""
    out = Soak()
    t0 = time.monotonic()
    ws.stats_interval_s = 1.0
    ws.start(1)
    if not ws.wait_ready(120):
        raise RuntimeError(f"the worker did not start:\n{ws.tail()}")
    day = (h.ts - h.ts[0]) // DAY_MS
    for lo, hi, end in chunks(h, chunk_days):
        final = hi == len(h)
        produce(ws.bootstrap, ws.tx_topic, ws.label_topic, events(h, lab, lo, None if final else hi))
        need = hi if final else int(np.searchsorted(day, end - SETTLE_DAYS, side="left"))
        got = wait_count(ws.bootstrap, ws.scores_topic, need, timeout_s, alive=ws.alive)
        if got < need:
            raise RuntimeError(f"day {end}: {got} of {need} scores after {timeout_s}s\n{ws.tail()}")
        stamp = int(time.time() * 1000)
        state = latest_state(ws.bootstrap, f"{ws.tag}-stats", stamp)
        out.samples.append(Sample(end, rss_mib(ws.procs[0].pid), state))
        log(f"day {end}: {need} scored, RSS {out.samples[-1].rss_mib:.0f} MiB, state {state}")
        if kill_after_day is not None and out.killed_at_day is None and end >= kill_after_day and not final:
            ws.procs[0].kill()
            ws.procs[0].wait()
            ws.procs.clear()
            out.killed_at_day = end
            log(f"day {end}: worker killed (SIGKILL); starting it again")
            ws.start(1)
    out.seconds = time.monotonic() - t0
    return out


def offline_scores(h: History, lab: Labels, bundle: Path) -> dict[str, float]:
    """The trainer's offline score of every transaction, with every label of ``lab``."""
    from schemas.bundle import load_bundle
    from schemas.features import offline_features
    from trainer.export import onnx_scores

    x = offline_features(h.tx_id, h.ts, h.customer_id, h.terminal_id, h.amount_cents, lab.tx_id, lab.terminal_id,
                         lab.ts, lab.reported_at, lab.is_fraud)
    return dict(zip(h.tx_id.tolist(), onnx_scores(load_bundle(bundle).onnx_path, x).tolist(), strict=True))


def flat(samples: list[Sample], after_day: int, factor: float, slack: int = 16) -> dict[str, tuple[int, int]]:
    """Structures whose size after ``after_day`` grew beyond ``factor`` x their size before it (from the
    horizon on): {name: (max before, max after)}. Empty: every structure is flat."""
    early = [s for s in samples if s.day <= after_day]
    late = [s for s in samples if s.day > after_day]
    names = {n for s in samples for n in s.state} - {"pending"}
    grew = {}
    for n in sorted(names):
        before = max((s.state.get(n, 0) for s in early), default=0)
        after = max((s.state.get(n, 0) for s in late), default=0)
        if after > factor * before + slack:
            grew[n] = (before, after)
    return grew


def table(s: Soak) -> str:
    names = sorted({n for x in s.samples for n in x.state})
    head = "| day | RSS MiB | " + " | ".join(names) + " |"
    rows = [f"| {x.day} | {x.rss_mib:.0f} | " + " | ".join(str(x.state.get(n, 0)) for n in names) + " |"
            for x in s.samples]
    return "\n".join([head, "|" + "---|" * (len(names) + 2), *rows])
