"""The demo's steps: broker, bundle, topics, workers, warm-up, load, read back, report, stop.

``Demo.run`` does the work; ``Demo.cleanup`` (always called, signals held off) stops what the
demo started: the workers (SIGTERM, then SIGKILL after a grace period), the demo's topics on a
broker it did not start (unless ``--keep-topics``), and the broker it did start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ops.bench import kafka_io
from ops.bench.run import stage_latencies
from ops.bench.stats import join_latency, percentiles
from ops.bench.workers_run import WorkerSet, cpu_seconds, die_with_parent, terminate
from ops.demo.monitor import DemoMonitor
from ops.demo.report import Output, dead_letters, series, summarize, top_flags, worker_facts, write
from ops.demo.watch import day_drift, drift_losses, first_alert
from ops.loadgen.drift import inject
from ops.loadgen.live import first_index_of_day
from schemas.bundle import Bundle, load_bundle
from schemas.errors import FraudstreamError
from schemas.features import DAY_MS, TERMINAL_HORIZON_DAYS
from trainer.simulate import History, SimConfig, simulate

if TYPE_CHECKING:
    from ops.kafka import LocalBroker

# What ``--size`` trains on and replays: ``trainer run --quick`` and ``trainer run`` (the book's run).
SIZES = {"quick": SimConfig(customers=1000, terminals=2000, days=84), "book": SimConfig()}
PARTITIONS = 4
TOPICS = ("transactions", "labels", "scores", "flags", "dlq", "stats")  # the workers name theirs <prefix>-<name>
REPORT_FILES = ("report.md", "report.json", "latency_cdf.png", "throughput.png")


class DemoError(FraudstreamError):
    pass


def log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


@dataclass
class Demo:
    a: argparse.Namespace
    prefix: str = field(default_factory=lambda: f"demo-{uuid.uuid4().hex[:8]}")
    broker: LocalBroker | None = None  # when the demo started one
    bootstrap: str = ""
    workers: WorkerSet | None = None
    loadgen_proc: subprocess.Popen[bytes] | None = None
    monitor: DemoMonitor | None = None
    worker_pids: list[int] = field(default_factory=list)
    topics_created: bool = False
    started: float = field(default_factory=time.monotonic)
    plot_data: tuple[list[float], dict[str, tuple[list[float], list[float]]]] = field(
        default_factory=lambda: ([], {}))  # (load-phase latencies, throughput series), set by ``collect``

    @property
    def out(self) -> Path:
        return Path(self.a.out).resolve()

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def topic(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def log_files(self) -> list[str]:
        files = [self.logs / "trainer.log"] if (self.logs / "trainer.log").exists() else []
        if self.workers is not None:
            files += [self.workers.log(i) for i in range(self.a.workers)]
        if self.monitor is not None:
            files.append(self.monitor.log)
        if self.broker is not None:
            files.append(self.broker.log)
        return [str(p) for p in files]

    # ---- the steps -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.a
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        for name in REPORT_FILES:
            (self.out / name).unlink(missing_ok=True)
        self.start_broker()
        bundle, source = self.get_bundle()
        h, replay = self.replay_history()
        warm_n = first_index_of_day(h, a.warmup_days) if a.warmup_days > 0 else 0
        total = min(int(a.rate * a.duration) + 1, len(h) - warm_n)
        tx, lab = self.topic("transactions"), self.topic("labels")
        kafka_io.create_topics(self.bootstrap, [tx, lab], PARTITIONS)
        self.topics_created = True
        # As ops.bench: output timestamps are the broker's append times, so each score's produce round trip counts.
        kafka_io.create_topics(self.bootstrap, [self.topic("scores")], PARTITIONS,
                               {"message.timestamp.type": "LogAppendTime"})
        self.start_workers(bundle, tx, lab)
        self.start_monitor(bundle)
        ws = self.workers
        assert ws is not None

        warm: dict[str, Any] = {"transactions": warm_n, "days": a.warmup_days}
        # One load generator in live time: the history (shifted to end now) at once, then the load at the wall
        # clock; it holds between the two (--hold-after-history) until the warm-up is scored.
        self.start_loadgen(replay, "--live", "--history-days", str(a.warmup_days), "--rate", f"{a.rate:g}",
                           "--duration", f"{a.duration:g}", *(["--hold-after-history"] if warm_n else []),
                           *self.drift_args())
        if warm_n:
            log(f"warm-up: {warm_n:,} transactions of history ({a.warmup_days} days) shifted to end now, and their "
                "labels reported by now, unpaced, so that the load phase meets warm customer and terminal state")
            t0 = time.monotonic()
            info = self.loadgen_history()
            if int(info["history_transactions"]) != warm_n:
                raise DemoError(f"the load generator sent {info['history_transactions']} history transactions, "
                                f"the demo expected {warm_n}")
            warm.update(labels=info["history_labels"], labels_held=info["labels_held"],
                        history_end_ms=info["history_end_ms"], history_first_ts=info["history_first_ts"],
                        shift_ms=info["shift_ms"])
            got = kafka_io.wait_count(self.bootstrap, ws.scores_topic, warm_n, 120 + warm_n / 500, ws.alive)
            if got < warm_n:
                raise DemoError(f"the workers scored {got:,} of the {warm_n:,} warm-up transactions"
                                f"{'' if ws.alive() else ' and one exited'}; worker logs:\n{ws.tail()}")
            log(f"warm-up scored ({time.monotonic() - t0:.1f}s with the load generator's start); "
                f"{info['labels_held']:,} of its labels held back to their report times")
        log(f"load: {a.rate:,.0f} tx/s for {a.duration:g} s ({total:,} transactions) in live time (event time = "
            "the wall clock at send), labels at their report times")
        cpu0, t0 = [cpu_seconds(pid) for pid in self.worker_pids], time.monotonic()
        sent = self.loadgen_finish(go=bool(warm_n))
        if sent["live"]["days"] not in (None, replay.days):
            raise DemoError(f"the load generator simulated {sent['live']['days']} days, the demo {replay.days}")
        wall = time.monotonic() - t0
        cpu = [(c1 - c0) / wall for c0, c1 in zip(cpu0, [cpu_seconds(pid) for pid in self.worker_pids], strict=True)]
        expect = warm_n + int(sent["transactions"])
        got = kafka_io.wait_count(self.bootstrap, ws.scores_topic, expect, a.drain_timeout, ws.alive)
        if got < expect:
            log(f"only {got:,} of {expect:,} scores after {a.drain_timeout:g} s"
                f"{'' if ws.alive() else ' (a worker exited)'}; reporting what came")
        log("stopping the workers (SIGTERM)")
        ws.stop()
        watched = self.watch(bundle, warm)
        log("reading the topics back")
        facts = {"size": a.size, "rate": a.rate, "duration": a.duration, "workers": a.workers, "seed": a.seed,
                 "warmup_days": a.warmup_days, "time": "live", "drift": self.drift_facts(),
                 "replay": {f.name: getattr(replay, f.name) for f in fields(replay)}}
        r = self.collect(h, warm_n, int(sent["transactions"]), warm)
        r["workers"]["cpu_load_phase"] = cpu  # CPU seconds per second of the load phase, per worker (1.0 = a core)
        r.update(watched)
        r.update(when=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), config=facts, sent=sent,
                 bundle={"path": str(bundle.path), "source": source, "model_version": bundle.model_version,
                         "threshold": bundle.threshold},
                 broker={"bootstrap": self.bootstrap, "kind": "reused" if self.broker is None else "started"},
                 topics={"prefix": self.prefix, "kept": self.broker is None and a.keep_topics,
                         **{n: self.topic(n) for n in TOPICS}},
                 worker_pids=self.worker_pids, logs=self.log_files())
        return r

    def start_loadgen(self, cfg: SimConfig, *args: str) -> None:
        """``python -m ops.loadgen`` on the demo's history (``cfg``), its JSON on stdout.

        A subprocess, not a call: the load generator runs an asyncio loop, and a signal raised into
        the middle of that loop can leave it waiting forever; a child the demo can always stop."""
        argv = [sys.executable, "-m", "ops.loadgen", "--bootstrap", self.bootstrap,
                "--topic-transactions", self.topic("transactions"), "--topic-labels", self.topic("labels"),
                "--partitions", str(PARTITIONS), "--customers", str(cfg.customers), "--terminals", str(cfg.terminals),
                "--days", str(cfg.days), "--start", cfg.start, "--seed", str(cfg.seed), "--json", *args]
        # Its own session: a Ctrl-C in the terminal reaches the demo, which stops it (no traceback from it).
        self.loadgen_proc = subprocess.Popen(die_with_parent(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             start_new_session=True)

    def loadgen_history(self) -> dict[str, Any]:
        """The load generator's ``{"history": ...}`` line (``--hold-after-history``): the history is sent and
        acknowledged, the live phase waits for ``loadgen_finish(go=True)``."""
        proc = self.loadgen_proc
        assert proc is not None and proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            self.loadgen_proc = None
            raise DemoError(f"the load generator failed (exit {code}; its error is above)")
        history: dict[str, Any] = json.loads(line)["history"]
        return history

    def loadgen_finish(self, go: bool) -> dict[str, Any]:
        """Let the held load generator go on (``go``), wait for it; its JSON summary."""
        proc = self.loadgen_proc
        assert proc is not None
        out, _ = proc.communicate(b"go\n" if go else b"")
        code, self.loadgen_proc = proc.returncode, None
        if code != 0:
            raise DemoError(f"the load generator failed (exit {code}; its error is above)")
        summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return summary

    def start_broker(self) -> None:
        if self.a.bootstrap:
            from ops.kafka import broker_answers

            if not broker_answers(self.a.bootstrap, timeout_s=10.0):
                raise DemoError(f"the broker at {self.a.bootstrap} (KAFKA_BOOTSTRAP / --bootstrap) does not answer")
            self.bootstrap = self.a.bootstrap
            log(f"broker: reusing {self.bootstrap} (left running at the end)")
            return
        from ops.kafka import LocalBroker

        t0 = time.monotonic()
        state = self.out / "kafka"
        stale = LocalBroker(state)
        if stale.stop():  # left behind by a demo that was killed with SIGKILL
            log(f"stopped a broker left running in {state}")
        shutil.rmtree(state, ignore_errors=True)  # a fresh broker, so that reruns start clean
        self.broker = LocalBroker(state)
        log("broker: starting a local Kafka (ops.kafka, free ports)")
        self.bootstrap = self.broker.start(port=0).bootstrap
        log(f"broker ready at {self.bootstrap} in {time.monotonic() - t0:.1f}s (log {self.broker.log})")

    def get_bundle(self) -> tuple[Bundle, str]:
        a = self.a
        if a.bundle:
            b = load_bundle(a.bundle)
            log(f"bundle: {b.path} (given), model {b.model_version}")
            return b, "given"
        cfg = SIZES[a.size]
        bundles = self.out / "bundles"
        if a.reuse_bundle:
            found = matching_bundle(bundles, cfg)
            if found is not None:
                log(f"bundle: reusing {found.path} (trained on the {a.size} size), model {found.model_version}")
                return found, "reused"
            log(f"bundle: no {a.size} bundle to reuse in {bundles}; training one")
        # The size spelled out (not --quick), so that no FRAUDSTREAM_SIM_* variable changes what is trained.
        argv = [sys.executable, "-m", "trainer", "run", "--customers", str(cfg.customers), "--terminals",
                str(cfg.terminals), "--days", str(cfg.days), "--start", cfg.start, "--seed", str(cfg.seed),
                "--folds", "0", "--out", str(bundles), "--data-dir", str(self.out / "data")]
        trainer_log = self.logs / "trainer.log"
        log(f"training a {a.size} bundle ({'~5 s' if a.size == 'quick' else '~35 s'}; log {trainer_log})")
        t0 = time.monotonic()
        with open(trainer_log, "wb") as f:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=f, check=False)
        if done.returncode != 0:
            raise DemoError(f"training failed (exit {done.returncode}):\n"
                            + "\n".join(trainer_log.read_text(errors="replace").splitlines()[-30:]))
        b = load_bundle(Path(done.stdout.decode().strip().splitlines()[-1]))
        for line in trainer_log.read_text(errors="replace").splitlines():
            if line.startswith(("[trainer] fraudstream LightGBM", "[trainer] threshold")):
                log("trainer: " + line.removeprefix("[trainer] ").split(" (daily")[0])
        log(f"bundle: {b.path}, model {b.model_version} ({time.monotonic() - t0:.1f}s)")
        return b, "trained"

    def replay_history(self) -> tuple[History, SimConfig]:
        """The trained size's population with another seed (the model never saw it), long enough.

        The load generator simulates the same history from the same config (the simulator is
        deterministic); the demo keeps its own copy for the ground truth."""
        a = self.a
        base = SIZES[a.size]
        per_day = base.customers * 2.0 * 0.9  # mean U(0, 4) a day; a few customers reach no terminal
        # A multiple of the size's own length, so that most rates replay the same history.
        needed = a.warmup_days + int(a.rate * a.duration / per_day * 1.3) + 3
        days = base.days * max(1, -(-needed // base.days))
        while True:
            cfg = SimConfig(base.customers, base.terminals, days, base.start, a.seed)
            t0 = time.monotonic()
            h = self.drifted(simulate(cfg))
            warm_n = first_index_of_day(h, a.warmup_days) if a.warmup_days > 0 else 0
            if len(h) - warm_n > a.rate * a.duration or days > 3650:
                break
            days *= 2
        log(f"replay: simulated {len(h):,} transactions ({h.is_fraud.mean():.2%} fraud), {cfg.customers:,} customers, "
            f"{cfg.terminals:,} terminals, {days} days, seed {a.seed} ({time.monotonic() - t0:.1f}s)")
        return h, cfg

    # ---- drift and the monitor -------------------------------------------------------------------

    def drift_from_day(self) -> int | None:
        """The history day the drift starts on (None: no drift). By default, halfway through the days after the
        first ``TERMINAL_HORIZON_DAYS`` (a cold start: the state is filling, every feature drifts), else halfway
        through the warm-up."""
        a = self.a
        if a.drift == "none":
            return None
        if a.drift_from_day is not None:
            return int(a.drift_from_day)
        warm: int = a.warmup_days - TERMINAL_HORIZON_DAYS
        return TERMINAL_HORIZON_DAYS + warm // 2 if warm > 1 else int(a.warmup_days) // 2

    def drift_args(self) -> list[str]:
        day = self.drift_from_day()
        if day is None:
            return []
        return ["--drift-from-day", str(day), "--drift-kind", self.a.drift,
                "--drift-factor", f"{self.a.drift_factor:g}"]

    def drift_facts(self) -> dict[str, Any]:
        day = self.drift_from_day()
        return {"kind": "none" if day is None else self.a.drift, "from_day": day,
                "factor": None if day is None else self.a.drift_factor}

    def drifted(self, h: History) -> History:
        """The demo's copy of what the load generator sends (``ops.loadgen.drift``'s rules): its ground truth."""
        day = self.drift_from_day()
        return h if day is None else inject(h, self.a.drift, day, self.a.drift_factor, self.a.seed)

    def start_monitor(self, bundle: Bundle) -> None:
        if not self.a.monitor:
            return
        ports = self.metrics_ports(self.a.workers + 1)
        port = ports[-1] if ports else 0
        self.monitor = DemoMonitor(self.bootstrap, self.topic, bundle.path.parent, self.logs, port)
        self.monitor.start()
        log(f"model monitor: python -m workers.monitor, pid {self.monitor.proc.pid if self.monitor.proc else '-'}"
            + (f", metrics on http://127.0.0.1:{port}/metrics" if port else "") + f" (log {self.monitor.log})")

    def watch(self, bundle: Bundle, warm: dict[str, Any]) -> dict[str, Any]:
        """Drift per event-time day (the workers' stats) and the monitor's transaction days, once it has
        published the days it should have (or ``--monitor-timeout`` passed)."""
        origin = warm.get("history_first_ts") or int(time.time() * 1000)
        origin = origin // DAY_MS * DAY_MS
        # Before this, the workers' state is still filling (a cold start), and every feature drifts.
        warm_from = origin + TERMINAL_HORIZON_DAYS * DAY_MS if self.a.warmup_days > TERMINAL_HORIZON_DAYS else origin
        out: dict[str, Any] = {"watch": {"origin_ms": origin, "warm_from_ms": warm_from,
                                         "drift_start_ms": self.drift_start_ms(warm)}}
        if bundle.monitoring is not None:
            stats = [orjson.loads(v) for _, _, v in kafka_io.read_topic(self.bootstrap, self.topic("stats"))]
            days = day_drift(stats, bundle.monitoring)
            alert = first_alert(days, out["watch"]["drift_start_ms"] or origin)
            out["drift_days"] = [{"start": d.start, "rows": d.rows, "flags": d.flags, "workers": d.workers,
                                  "alert_rate": d.alert_rate, "psi": d.psi} for d in days]
            out["watch"].update(drift_losses=drift_losses(stats),
                                expected_alert_rate=bundle.monitoring.expected_alert_rate,
                                expected_precision=bundle.monitoring.expected_precision,
                                first_alert_ms=None if alert is None else alert.start)
        if self.monitor is not None:
            t0 = time.monotonic()
            log("waiting for the model monitor's transaction days (provisional, then feedback: 7 days of labels)")
            tx_days, missing = self.monitor.wait(origin, int(time.time() * 1000), self.a.monitor_timeout)
            if missing:
                log(f"the monitor has not published {len(missing)} expected day(s) after "
                    f"{time.monotonic() - t0:.0f} s{'' if self.monitor.alive() else ' (it exited)'}; reporting what "
                    f"came; its log:\n{self.monitor.tail()}")
            else:
                log(f"monitor: {len(tx_days)} transaction days in ({time.monotonic() - t0:.1f}s)")
            self.monitor.stop()
            out["tx_days"] = tx_days
            out["watch"]["monitor_missing"] = len(missing)
        return out

    def drift_start_ms(self, warm: dict[str, Any]) -> int | None:
        """When the drift starts in the sent (shifted) event time: the simulator's day, moved by the shift."""
        day = self.drift_from_day()
        if day is None or "shift_ms" not in warm:
            return None
        first_day = SIZES[self.a.size].start  # the simulated history starts at its config's UTC midnight
        start = int(dt.datetime.fromisoformat(first_day).replace(tzinfo=dt.UTC).timestamp() * 1000)
        return start + day * DAY_MS + int(warm["shift_ms"])

    def start_workers(self, bundle: Bundle, tx: str, lab: str) -> None:
        a = self.a
        ports = self.metrics_ports()
        self.workers = WorkerSet(self.bootstrap, bundle.path, tx, lab, self.prefix, self.logs,
                                 partitions=PARTITIONS, provider=a.provider, metrics_ports=ports, die_with_parent=True)
        t0 = time.monotonic()
        self.workers.start(a.workers)
        self.worker_pids = [p.pid for p in self.workers.procs]
        log(f"workers: {a.workers} x python -m workers, pids {', '.join(map(str, self.worker_pids))}, "
            f"topics {self.prefix}-*")
        # Every worker holding its share before anything is sent: a worker that takes over partitions mid-backlog
        # finds their days already closed in its drift windows (late rows), and the first one would score alone.
        if not self.workers.wait_assigned(timeout_s=120):
            raise DemoError(f"the workers did not get ready; their logs:\n{self.workers.tail()}")
        log(f"workers ready in {time.monotonic() - t0:.1f}s"
            + (": health/metrics on " + ", ".join(f"http://127.0.0.1:{p}/metrics" for p in ports) if ports else ""))

    def metrics_ports(self, n: int | None = None) -> list[int]:
        """``n`` ports (one per worker by default) as ``--metrics-port`` says; none when it is off."""
        n = self.a.workers if n is None else n
        spec = str(self.a.metrics_port).strip().lower()
        if spec in ("off", "0", ""):
            return []
        if spec == "auto":
            from ops.kafka.launcher import free_port

            ports: list[int] = []
            while len(ports) < n:
                p = free_port()
                if p not in ports:
                    ports.append(p)
            return ports
        return [int(spec) + i for i in range(n)]

    def collect(self, h: History, warm_n: int, n_sent: int, warm: dict[str, Any]) -> dict[str, Any]:
        boot = self.bootstrap
        ids = [str(t) for t in h.tx_id[: warm_n + n_sent]]
        truth = dict(zip(ids, (bool(x) for x in h.is_fraud[: warm_n + n_sent]), strict=True))
        inputs: dict[str, int] = {}
        event_ts: dict[str, int] = {}
        for ts, _, v in kafka_io.read_topic(boot, self.topic("transactions")):
            m = orjson.loads(v)
            inputs.setdefault(str(m["tx_id"]), ts)
            event_ts.setdefault(str(m["tx_id"]), int(m["ts"]))
        raw = [(ts, orjson.loads(v)) for ts, _, v in kafka_io.read_topic(boot, self.topic("scores"))]
        scores = [_output(ts, m) for ts, m in raw]
        flag_msgs = [(ts, orjson.loads(v)) for ts, _, v in kafka_io.read_topic(boot, self.topic("flags"))]
        flags = [_output(ts, m) for ts, m in flag_msgs]
        dlq = [dict(r.headers or []).get("dlq.reason", b"?").decode(errors="replace")
               for r in kafka_io.read_records(boot, self.topic("dlq"))]
        stats = [orjson.loads(v) for _, _, v in kafka_io.read_topic(boot, self.topic("stats"))]
        load_in = {t: inputs[t] for t in ids[warm_n:] if t in inputs}
        load = summarize(load_in, scores, flags, truth)
        load["sent_not_on_topic"] = n_sent - len(load_in)
        # Live time: each input's record timestamp (the wall clock at send) minus its event time.
        load["event_time_lag_ms"] = percentiles([float(inputs[t] - event_ts[t]) for t in load_in])
        stages = stage_latencies([(ts, m) for ts, m in raw if m["tx_id"] in load_in])
        load["latency_stages_ms"] = {k: percentiles([float(x) for x in v.values()]) for k, v in stages.items()}
        if warm_n:
            warm_in = {t: inputs[t] for t in ids[:warm_n] if t in inputs}
            w = summarize(warm_in, scores, flags, truth)
            first_in = min(warm_in.values(), default=0)
            last_out = max((o.ts for o in scores if o.tx_id in warm_in), default=first_in)
            seconds = (last_out - first_in) / 1000  # its first input to its last output
            warm.update(seconds=seconds, scored_per_s=w["scored"] / seconds if seconds > 0 else float("nan"),
                        scored=w["scored"],
                        **{k: w[k] for k in ("flags", "frauds", "tp", "precision", "recall")})
        lat, _ = join_latency(load_in, ((o.tx_id, o.ts) for o in scores))
        self.plot_data = ([float(v) for v in lat.values()],
                          series(sorted(load_in.values()), [o.ts for o in scores if o.tx_id in load_in]))
        return {"load": load, "warmup": warm, "dead_letters": dead_letters(dlq),
                "top_flags": top_flags((m for _, m in flag_msgs if m["tx_id"] in load_in), truth),
                "workers": {**worker_facts(stats, self._ready_lines()), "count": self.a.workers}}

    def _ready_lines(self) -> list[str]:
        if self.workers is None:
            return []
        return [line for i in range(self.a.workers) if self.workers.log(i).exists()
                for line in self.workers.log(i).read_text(errors="replace").splitlines() if " ready in " in line]

    def write(self, r: dict[str, Any]) -> str:
        lat, plot_series = self.plot_data
        return write(r, self.out, lat, plot_series)

    # ---- stopping --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop everything the demo started. Each step runs even if an earlier one failed."""
        lg = self.loadgen_proc
        if lg is not None and lg.poll() is None:
            log("stopping the load generator (SIGTERM)")
            terminate(lg, timeout_s=10)
        if self.monitor is not None and self.monitor.alive():
            log("stopping the model monitor (SIGTERM)")
            self.monitor.stop()
        if self.workers is not None and self.workers.procs:
            log("stopping the workers (SIGTERM, then SIGKILL after 30 s)")
            try:
                self.workers.stop()
            except Exception as exc:  # keep going: the broker must still be stopped
                log(f"stopping the workers failed: {exc}")
                for p in self.workers.procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
        if self.broker is None and self.topics_created and not self.a.keep_topics:
            try:
                kafka_io.delete_topics(self.bootstrap, self.prefix)
                log(f"deleted the demo's topics {self.prefix}-* on {self.bootstrap}")
            except Exception as exc:
                log(f"could not delete the topics {self.prefix}-*: {exc}")
        if self.broker is not None:
            log("stopping the broker")
            try:
                self.broker.stop()
            except Exception as exc:
                log(f"stopping the broker failed: {exc}")
        log(f"logs: {self.logs}" + "".join(f"\n[demo]   {p}" for p in self.log_files()))


def _output(ts: int, m: dict[str, Any]) -> Output:
    return Output(str(m["tx_id"]), ts, float(m["score"]), bool(m["flag"]))


def matching_bundle(bundles: Path, cfg: SimConfig) -> Bundle | None:
    """The newest loadable bundle under ``bundles`` trained on the simulator at ``cfg``'s size."""
    want = {"source": "simulator", "customers": cfg.customers, "terminals": cfg.terminals, "days": cfg.days,
            "start": cfg.start, "seed": cfg.seed}
    candidates = sorted((p for p in bundles.glob("*/model.json") if not p.parent.is_symlink()),
                        key=lambda p: p.stat().st_mtime, reverse=True) if bundles.is_dir() else []
    for manifest in candidates:
        try:
            data = orjson.loads(manifest.read_bytes()).get("data", {})
            if all(data.get(k) == v for k, v in want.items()):
                return load_bundle(manifest.parent)
        except (FraudstreamError, ValueError, OSError):
            continue
    return None

