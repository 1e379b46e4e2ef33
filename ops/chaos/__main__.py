"""``python -m ops.chaos``: a longer fault run than the test suite — workers killed with SIGKILL,
stopped gracefully, joined and left (rebalances), the broker restarted — while transactions and
labels flow; then every score is checked against the clean offline score.

Prints a table per fault kind: faults, transactions, lost, duplicated, score mismatches, and the
recovery time (fault -> the scores topic holds as many records as transactions had been produced
when the fault hit: caught up again). Uses its own broker (it restarts it).

With ``--brokers 3``: broker faults on a three-node cluster it starts itself (``ops/chaos/cluster.py``:
the busiest leader killed -9, a broker stopped for 60 s, a broker frozen past the producers' request
timeout, the active controller killed -9), under ``--guarantee at-least-once``, ``exactly-once`` or
``both`` side by side, with a table per fault window.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
from kafka import KafkaConsumer

from ops.bench.kafka_io import end_total
from ops.chaos import cluster as cluster_faults
from ops.kafka import LocalBroker
from ops.loadgen.replay import events, produce
from schemas.bundle import load_bundle
from trainer.export import offline_scores
from trainer.simulate import SimConfig, labels_of, simulate

FAULTS = ("kill", "graceful", "rebalance", "broker")


def _count(bootstrap: str, topic: str) -> int:
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return end_total(c, topic)
    except Exception:  # the broker may be down mid-fault: count as no progress
        return -1
    finally:
        c.close()


class Chaos:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        tag = uuid.uuid4().hex[:6]
        self.topics = {n: f"chaos-{n}-{tag}" for n in
                       ("transactions", "labels", "flags", "scores", "stats", "dlq", "terminal_days")}
        self.group = f"chaos-{tag}"
        self.broker = LocalBroker(work / "kafka")
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.n_started = 0
        self.bootstrap = ""
        self.produced = 0  # transactions acknowledged by the broker so far (the feeder updates it)

    def start_worker(self) -> str:
        self.n_started += 1
        wid = f"chaos-w{self.n_started}"
        argv = [sys.executable, "-m", "workers", "--bootstrap", self.bootstrap, "--bundle", str(self.args.bundle),
                "--group-id", self.group, "--worker-id", wid, "--data-dir", str(self.work / "faust"),
                "--terminal-wait-s", "120", "--metrics-port", "0"]  # several workers on one host: no shared port
        for name, topic in self.topics.items():
            argv += [f"--topic-{name.replace('_', '-')}", topic]
        log = open(self.work / f"{wid}.log", "ab")  # noqa: SIM115 - lives as long as the worker
        self.workers[wid] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        return wid

    def recovery(self, t0: float, target: int, timeout_s: float = 180) -> float:
        while time.monotonic() - t0 < timeout_s:
            if _count(self.bootstrap, self.topics["scores"]) >= target:
                return time.monotonic() - t0
            time.sleep(0.2)
        return float("nan")

    def inject(self, fault: str) -> float:
        t0, target = time.monotonic(), self.produced
        if fault == "broker":
            self.broker.stop()
            time.sleep(2)
            self.broker.start(port=0)
        else:
            victim = random.choice(sorted(self.workers))
            proc = self.workers.pop(victim)
            if fault == "rebalance":
                self.start_worker()
                time.sleep(3)
            proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGTERM)
            proc.wait(timeout=60)
            if fault != "rebalance":
                self.start_worker()
        return self.recovery(t0, target)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="model bundle (python -m trainer run --quick)")
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--faults", default=None,
                   help=f"comma list of {', '.join(FAULTS)}; with --brokers 3 of "
                        f"{', '.join(cluster_faults.CLUSTER_FAULTS)} (default: all of the set)")
    p.add_argument("--brokers", type=int, choices=[1, 3], default=1,
                   help="1: worker and broker faults on one broker; 3: broker faults on a three-node cluster")
    cl = p.add_argument_group("with --brokers 3")
    cl.add_argument("--guarantee", choices=[*cluster_faults.GUARANTEES, "both"], default="both",
                    help="the workers' --guarantee; both: one worker of each, side by side (default %(default)s)")
    cl.add_argument("--rate", type=float, default=75.0,
                    help="transactions a second, paced from the history (with its labels) while the faults run; "
                         "the feeder stops after the last fault (default %(default)s)")
    cl.add_argument("--down-s", type=float, default=20.0,
                    help="seconds a killed node (leader-kill, controller-kill) stays down (default %(default)s)")
    cl.add_argument("--stop-s", type=float, default=60.0,
                    help="seconds a stopped broker (broker-stop) stays down (default %(default)s)")
    cl.add_argument("--freeze-s", type=float, default=cluster_faults.REQUEST_TIMEOUT_S + 10,
                    help="seconds a broker stays frozen (SIGSTOP), past the producers' 30 s request timeout "
                         "(default %(default)s)")
    cl.add_argument("--warmup-s", type=float, default=25.0, help="load before the first fault (default %(default)s)")
    cl.add_argument("--settle-s", type=float, default=15.0,
                    help="load after a node is back in sync, before the next fault (default %(default)s)")
    cl.add_argument("--late-s", type=float, default=5.0,
                    help="recovery ends when the outputs are no more than this many seconds behind the input "
                         "(default %(default)s)")
    cl.add_argument("--drain-timeout-s", type=float, default=240.0,
                    help="how long the workers may take to catch up after a fault and at the end (default %(default)s)")
    p.add_argument("--interval", type=float, default=8.0, help="seconds between faults")
    p.add_argument("--chunks", type=int, default=12, help="the history is produced in this many timed chunks")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    random.seed(args.seed)
    args.bundle = load_bundle(args.bundle).path
    if args.faults is None:
        args.faults = ",".join(cluster_faults.CLUSTER_FAULTS if args.brokers > 1 else FAULTS)
    faults = [f for f in args.faults.split(",") if f]
    h = simulate(SimConfig(customers=args.customers, terminals=2 * args.customers, days=args.days, seed=args.seed))
    lab = labels_of(h)
    expected = offline_scores(h, lab, args.bundle / "model.onnx")
    if args.brokers > 1:
        return cluster_faults.run(args, h, lab, expected)
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        p.error(f"--faults: {', '.join(unknown)}: the faults on one broker are {', '.join(FAULTS)}")
    work = Path(tempfile.mkdtemp(prefix="fraudstream-chaos-"))
    chaos = Chaos(args, work)
    chaos.bootstrap = chaos.broker.start(port=0).bootstrap
    log: list[dict[str, object]] = []
    try:
        chaos.start_worker()
        chaos.start_worker()
        bounds = [len(h) * i // args.chunks for i in range(args.chunks + 1)]

        def producer() -> None:
            for a, b in itertools.pairwise(bounds):
                for _ in range(60):
                    try:
                        produce(chaos.bootstrap, chaos.topics["transactions"], chaos.topics["labels"],
                                events(h, lab, a, b))
                        chaos.produced = b
                        break
                    except Exception:  # the broker is being restarted: try the chunk again (duplicates are fine)
                        time.sleep(2)
                time.sleep(args.interval * 0.75)

        feeder = threading.Thread(target=producer, daemon=True)
        feeder.start()
        i = 0
        while feeder.is_alive():
            time.sleep(args.interval)
            fault = faults[i % len(faults)]
            i += 1
            t = chaos.inject(fault)
            log.append({"fault": fault, "recovery_s": t})
            print(f"[chaos] {fault}: caught up again after {t:.1f}s", file=sys.stderr, flush=True)
        seen: dict[str, list[float]] = defaultdict(list)
        c = KafkaConsumer(chaos.topics["scores"], bootstrap_servers=chaos.bootstrap, auto_offset_reset="earliest",
                          consumer_timeout_ms=3000)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(seen) < len(h):
            for r in c:
                m = orjson.loads(r.value)
                seen[m["tx_id"]].append(m["score"])
        c.close()
    finally:
        for proc in chaos.workers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in chaos.workers.values():
            proc.wait(timeout=60)
        chaos.broker.stop()
    lost = len(set(expected) - set(seen))
    dup = sum(len(v) - 1 for v in seen.values())
    mismatch = sum(1 for k, v in seen.items() for s in v if abs(s - expected[k]) > 1e-5)
    print(f"{'fault':10} {'runs':>5} {'transactions':>13} {'lost':>5} {'duplicated':>10} {'mismatches':>10} "
          f"{'recovery s (median)':>20}")
    by: dict[str, list[float]] = defaultdict(list)
    for e in log:
        by[str(e["fault"])].append(float(e["recovery_s"]))  # type: ignore[arg-type]
    for fault, times in by.items():
        med = sorted(times)[len(times) // 2]
        print(f"{fault:10} {len(times):>5} {len(h):>13} {'':>5} {'':>10} {'':>10} {med:>20.1f}")
    print(f"{'all':10} {len(log):>5} {len(h):>13} {lost:>5} {dup:>10} {mismatch:>10}")
    result = {"transactions": len(h), "lost": lost, "duplicated": dup, "mismatches": mismatch, "faults": log,
              "work_dir": str(work)}
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0 if lost == 0 and mismatch == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
