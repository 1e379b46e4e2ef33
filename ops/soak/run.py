"""Send a long history through one worker in chunks of simulated days; after each chunk is scored,
sample the worker's state sizes (its stats messages' ``state``, or with a metrics port its /metrics
``fraudstream_state_entries`` gauges: the same numbers, set on each stats tick) and its resident
memory against the event time reached (the newest scored transaction). Optionally kill -9 the worker
once *while it scores* a chunk (when half of that chunk's transactions are scored, the rest of the
chunk still being sent) and start it again."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, TopicPartition

from ops.bench.workers_run import WorkerSet
from ops.loadgen.replay import events, produce
from schemas.features import DAY_MS
from schemas.kafka_auth import KafkaAuth
from trainer.simulate import History, Labels

# The replay compresses a simulated day into a fraction of a second, so the worker's 1-s idle rule
# (a caught-up partition without records closes up to the stream's clock) would read a pause of one
# labels partition's feed as hours of silence and restamp its next labels: soaks use a long one.
IDLE_MS = 60_000
# A transaction is scored once its day's terminal counts are final, so the last days of a chunk
# wait for the next one: a chunk is done when everything before these many days from its end is.
SETTLE_DAYS = 2
RSS = "rss_mib"  # the name flat() and growing() give resident memory beside the state structures
# The worker publishes its partitions' ``txlow`` marks (which move the terminal table's floor) after each
# commit, at most this often: a sample waits one interval past the chunk's scores, or a chunk scored in
# under a second would be sampled with the floor of the one before it.
COMMIT_MS = 1000


@dataclass
class Sample:
    day: int                     # simulated days since the history's start, at the chunk's end
    rss_mib: float
    state: dict[str, int]
    event_day: float = 0.0       # the newest scored transaction, in simulated days since the start
    scored: int = 0              # distinct transactions scored so far
    final: bool = False          # after the whole history (every label sent): the drain, not a steady state
    peak_mib: float = 0.0        # the worker process's peak RSS so far (VmHWM; a restart starts it again)


@dataclass
class Kill:
    day: int                     # the end day of the chunk during which the worker was killed
    scored_before: int           # distinct transactions scored when the SIGKILL was sent
    chunk: tuple[int, int]       # the chunk's transactions [lo, hi)
    restart_s: float = 0.0       # from the SIGKILL until the restarted worker was ready


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    kill: Kill | None = None
    seconds: float = 0.0

    @property
    def killed_at_day(self) -> int | None:
        return None if self.kill is None else self.kill.day


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of ``pid`` now (``VmHWM``: its peak so far), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Tail:
    """Follows a topic from its beginning with one consumer (no group): ``poll()`` returns the values
    that arrived since the last call. Partitions are picked up once the topic exists."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      fetch_max_bytes=64 * 1024 * 1024, max_poll_records=20000,
                                      **KafkaAuth.from_env().kafka_python())
        self.assigned = False

    def poll(self, timeout_ms: int = 200) -> list[bytes]:
        if not self.assigned:
            parts = self.consumer.partitions_for_topic(self.topic)
            if not parts:
                self.consumer._client.cluster.request_update()  # a topic created meanwhile
                time.sleep(timeout_ms / 1000)
                return []
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            self.consumer.assign(tps)
            self.consumer.seek_to_beginning(*tps)
            self.assigned = True
        out: list[bytes] = []
        for recs in self.consumer.poll(timeout_ms=timeout_ms).values():
            out.extend(r.value for r in recs if r.value is not None)
        return out

    def close(self) -> None:
        self.consumer.close()


class Scores:
    """Every score message of a topic so far: all scores of each tx id (a redelivery after a kill adds one)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.tail = Tail(bootstrap, topic)
        self.by_tx: dict[str, list[float]] = {}
        self.records = 0
        self.max_ts = -1

    def poll(self, timeout_ms: int = 200) -> int:
        for value in self.tail.poll(timeout_ms):
            msg = orjson.loads(value)
            self.by_tx.setdefault(msg["tx_id"], []).append(msg["score"])
            self.records += 1
            if msg["ts"] > self.max_ts:
                self.max_ts = msg["ts"]
        return len(self.by_tx)

    def wait(self, n: int, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> int:
        """Until ``n`` distinct transactions are scored (or the timeout, or the worker died)."""
        deadline = time.monotonic() + timeout_s
        while len(self.by_tx) < n and time.monotonic() < deadline and alive():
            self.poll()
        return len(self.by_tx)

    def close(self) -> None:
        self.tail.close()


class States:
    """The worker's stats messages: the ``state`` of the newest one."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.tail = Tail(bootstrap, topic)

    def after(self, after_ms: int, timeout_s: float = 30) -> dict[str, int]:
        """The ``state`` of the newest stats message whose interval ends after ``after_ms``."""
        deadline = time.monotonic() + timeout_s
        best: dict[str, int] | None = None
        while time.monotonic() < deadline:
            for value in self.tail.poll(500):
                msg = orjson.loads(value)
                if msg["interval"]["end"] > after_ms:
                    best = msg["state"]
            if best is not None:
                return best
        raise TimeoutError(f"no stats message on {self.tail.topic} after {after_ms}")

    def close(self) -> None:
        self.tail.close()


def metrics_state(port: int, host: str = "127.0.0.1", timeout_s: float = 5) -> dict[str, int]:
    """The worker's ``fraudstream_state_entries{structure=...}`` gauges, scraped from its /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith('fraudstream_state_entries{structure="'):
            name = line.split('"', 2)[1]
            out[name] = int(float(line.rsplit(" ", 1)[1]))
    return out


def chunks(h: History, days: int) -> list[tuple[int, int, int]]:
    """(first index, stop index, end day) of each span of ``days`` simulated days."""
    day = (h.ts - h.ts[0]) // DAY_MS
    ends = [*range(days, int(day[-1]) + 1, days), int(day[-1]) + 1]
    stops = np.searchsorted(day, ends, side="left").tolist()
    return [(lo, hi, end) for lo, hi, end in zip([0, *stops[:-1]], stops, ends, strict=True) if hi > lo]


def soak(ws: WorkerSet, h: History, lab: Labels, chunk_days: int = 30, kill_after_day: int | None = None,
         log: Callable[[str], None] = lambda m: print(f"[soak] {m}", file=sys.stderr),
         timeout_s: float = 300, scores: Scores | None = None) -> Soak:
    """Run ``h`` through the one worker of ``ws`` (started here, stopped by the caller). With
    ``kill_after_day``, the first chunk ending after that day is sent while the worker scores it, and
    the worker is killed (SIGKILL) once half of the chunk is scored, then started again. ``scores``
    (else one is made and closed here) keeps every score message read."""
    out = Soak()
    t0 = time.monotonic()
    ws.stats_interval_s = 1.0
    ws.extra_args = [*ws.extra_args, "--idle-ms", str(IDLE_MS), "--commit-interval-ms", str(COMMIT_MS)]
    ws.start(1)
    if not ws.wait_ready(120):
        raise RuntimeError(f"the worker did not start:\n{ws.tail()}")
    own = scores is None
    sc = scores if scores is not None else Scores(ws.bootstrap, ws.scores_topic)
    stats = States(ws.bootstrap, f"{ws.tag}-stats")
    day = (h.ts - h.ts[0]) // DAY_MS
    try:
        for lo, hi, end in chunks(h, chunk_days):
            final = hi == len(h)
            need = hi if final else int(np.searchsorted(day, end - SETTLE_DAYS, side="left"))
            stream = events(h, lab, lo, None if final else hi)
            if kill_after_day is not None and out.kill is None and end > kill_after_day and not final:
                out.kill = _send_and_kill(ws, sc, stream, lo, hi, need, end, timeout_s, log)
            else:
                produce(ws.bootstrap, ws.tx_topic, ws.label_topic, stream)
            got = sc.wait(need, timeout_s, alive=ws.alive)
            if got < need:
                raise RuntimeError(f"day {end}: {got} of {need} transactions scored after {timeout_s}s\n{ws.tail()}")
            # A stats tick after the commit that follows these scores: the gauges are as fresh as the floor.
            state = stats.after(int(time.time() * 1000) + COMMIT_MS + 500)
            if ws.metrics_ports and ws.metrics_ports[0]:
                state = metrics_state(ws.metrics_ports[0])
            pid = ws.procs[0].pid
            sample = Sample(end, rss_mib(pid), state, (sc.max_ts - int(h.ts[0])) / DAY_MS, got, final,
                            rss_mib(pid, "VmHWM"))
            out.samples.append(sample)
            log(f"day {end}: {got} scored (event day {sample.event_day:.1f}), RSS {sample.rss_mib:.0f} MiB "
                f"(peak {sample.peak_mib:.0f}), "
                f"state {state}")
    finally:
        stats.close()
        if own:
            sc.close()
    out.seconds = time.monotonic() - t0
    return out


def _send_and_kill(ws: WorkerSet, sc: Scores, stream: Any, lo: int, hi: int, need: int, end: int,
                   timeout_s: float, log: Callable[[str], None]) -> Kill:
    """Send the chunk from a thread; SIGKILL the worker when half of the chunk is scored; restart it."""
    failed: list[BaseException] = []

    def send() -> None:
        try:
            produce(ws.bootstrap, ws.tx_topic, ws.label_topic, stream)
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    sender = threading.Thread(target=send, name="soak-send", daemon=True)
    sender.start()
    mark = lo + max(1, (need - lo) // 2)
    got = sc.wait(mark, timeout_s, alive=ws.alive)
    if got < mark:
        raise RuntimeError(f"day {end}: {got} of {mark} transactions scored before the kill\n{ws.tail()}")
    proc = ws.procs[0]
    ready_before = ws.log(0).read_text(errors="replace").count(" ready in ")
    proc.kill()
    t_kill = time.monotonic()
    proc.wait()
    ws.procs.clear()
    killed = Kill(end, len(sc.by_tx), (lo, hi))
    log(f"day {end}: worker killed (SIGKILL) with {killed.scored_before - lo} of the chunk's {hi - lo} "
        f"transactions scored{'' if not sender.is_alive() else ', the chunk still being sent'}; starting it again")
    ws.start(1)
    sender.join()
    if failed:
        raise failed[0]
    deadline = time.monotonic() + timeout_s
    while ws.log(0).read_text(errors="replace").count(" ready in ") < ready_before + 1:
        if time.monotonic() > deadline or not ws.alive():
            raise RuntimeError(f"day {end}: the restarted worker is not ready\n{ws.tail()}")
        time.sleep(0.1)
    killed.restart_s = time.monotonic() - t_kill
    log(f"day {end}: the restarted worker was ready {killed.restart_s:.1f}s after the kill")
    return killed


def mismatches(got: dict[str, list[float]], want: dict[str, float],
               tol: float = 1e-5) -> list[tuple[str, float, float]]:
    """(tx id, score, offline score) of every score message off by more than ``tol`` (a redelivered
    transaction's every score counts), and of every transaction never scored (score NaN)."""
    out = [(k, v, want[k]) for k, vs in got.items() for v in vs if k in want and abs(v - want[k]) > tol]
    return out + [(k, float("nan"), w) for k, w in want.items() if k not in got]


def _series(samples: list[Sample], name: str) -> list[float]:
    return [s.rss_mib if name == RSS else float(s.state.get(name, 0)) for s in samples]


def _names(samples: list[Sample]) -> list[str]:
    return [*sorted({n for s in samples for n in s.state} - {"pending"}), RSS]


def flat(samples: list[Sample], after_day: int, factor: float, slack: int = 16,
         from_day: int = 0) -> dict[str, tuple[float, float]]:
    """Structures (and RSS, as ``rss_mib``) whose maximum after ``after_day`` exceeds ``factor`` x their
    maximum between ``from_day`` (excluded) and ``after_day``, plus ``slack``: {name: (max before, max
    after)}. Empty: every one is flat. The final sample (the end of the stream, every remaining label at
    once) and ``pending`` (a queue, not state) are left out."""
    steady = [s for s in samples if not s.final]
    early = [s for s in steady if from_day < s.day <= after_day]
    late = [s for s in steady if s.day > after_day]
    grew = {}
    for n in _names(steady):
        before = max(_series(early, n), default=0.0)
        after = max(_series(late, n), default=0.0)
        if after > factor * before + slack:
            grew[n] = (before, after)
    return grew


def growing(samples: list[Sample], after_day: int, by: float = 0.1, slack: int = 16) -> dict[str, list[float]]:
    """Structures (and RSS) that never shrink from one sample to the next after ``after_day`` and end more
    than ``by`` (relative) plus ``slack`` above where they started — a leak, however slow, rather than
    the steady state's ups and downs: {name: the series}. The final sample is left out."""
    late = [s for s in samples if not s.final and s.day > after_day]
    out: dict[str, list[float]] = {}
    if len(late) < 3:
        return out
    for n in _names(late):
        xs = _series(late, n)
        if all(b >= a for a, b in itertools.pairwise(xs)) and xs[-1] > xs[0] * (1 + by) + slack:
            out[n] = xs
    return out


def table(s: Soak) -> str:
    names = sorted({n for x in s.samples for n in x.state})
    head = "| day | event day | RSS MiB | peak | " + " | ".join(names) + " |"
    rows = [f"| {x.day}{' (end)' if x.final else ''}{' (kill)' if s.kill and s.kill.day == x.day else ''} "
            f"| {x.event_day:.1f} | {x.rss_mib:.0f} | {x.peak_mib:.0f} | "
            + " | ".join(str(x.state.get(n, 0)) for n in names) + " |"
            for x in s.samples]
    return "\n".join([head, "|" + "---|" * (len(names) + 4), *rows])


def csv(s: Soak) -> str:
    names = sorted({n for x in s.samples for n in x.state})
    rows = [",".join(["day", "event_day", "scored", "rss_mib", "peak_mib", *names, "final"])]
    rows += [",".join([str(x.day), f"{x.event_day:.3f}", str(x.scored), f"{x.rss_mib:.1f}", f"{x.peak_mib:.1f}",
                       *(str(x.state.get(n, 0)) for n in names), str(int(x.final))]) for x in s.samples]
    return "\n".join(rows) + "\n"
