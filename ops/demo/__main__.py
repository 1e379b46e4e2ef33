"""``python -m ops.demo`` (``make demo``): the whole local story, end to end, in about three minutes.

1. a broker: ``KAFKA_BOOTSTRAP`` / ``--bootstrap`` when set (reused, left running), else a local
   Kafka (``ops.kafka``, free ports, state in ``<out>/kafka``) that the demo stops at the end;
2. a model bundle: trained (``trainer run``, ``--size quick`` by default, ``book`` for the
   handbook's size), or a given one (``--bundle``), or the newest matching one in
   ``<out>/bundles`` (``--reuse-bundle``);
3. two workers (``python -m workers`` subprocesses) and the model monitor (``python -m workers.monitor``)
   on topics named for this run only, the load held until each worker holds its partitions;
4. a warm-up: the first ``--warmup-days`` (58) of a simulated history (the trained size, another
   seed), shifted so that it ends now, sent unpaced with the labels reported by now, and scored
   before the load begins: 37 days fill the workers' state (a cold start), then stationary days,
   then from ``--drift-from-day`` (47) a drift (``--drift amount|fraud|none``) that the alerts see;
5. the load, in live time (``ops.loadgen --live``, one process for 4 and 5): the next transactions
   at ``--rate`` for ``--duration`` seconds, each with event time = the wall clock at send, as in
   production; the history's labels reported after now are sent when the clock reaches their
   ``reported_at``;
6. a report from the topics alone: scored/s, end-to-end latency p50/p95/p99/max (output record
   timestamp - input record timestamp, both wall clock; in live time the input's event time is its
   send time too, shown as "event time (live)"), flags, precision and recall against the simulator's
   ground truth, dead letters and their reasons, provider and model version; then the model, live:
   PSI per event-time day (the workers' drift windows) with the alert each day trips, and the
   monitor's transaction days (realised and estimated precision, recall, AUC, card precision@100);
   printed, and written to ``<out>/report.md`` and ``report.json`` with ``latency_cdf.png``,
   ``throughput.png``, ``drift_psi.png`` and ``live_precision.png``.

Everything it started is stopped at the end, on errors, on Ctrl-C (exit 130) and on SIGTERM
(exit 143): workers get SIGTERM, then SIGKILL after 30 s; the broker only if the demo started it.
Every option has an environment variable (see ``--help``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from schemas.errors import FraudstreamError
from schemas.settings import add, flag, non_negative_float, non_negative_int, positive_int

# Measured on the 2-core dev machine (shared: load average 5-7 from other work), 2 workers + broker +
# load generator (aiokafka) on it, quick size, 20 s per rate, p50 / p99 end to end:
#   1 000 tx/s 24 / 137 ms (workers ~22 % of a core each)   2 000 tx/s 44 / 265 ms (~22 %)
#   4 000 tx/s 31 / 315 ms (~32 %)   8 000 tx/s 806 / 2 073 ms   12 000 tx/s 458 / 1 853 ms
# Past 4 000 tx/s the time goes before the worker (load generator -> broker -> fetch) on 2 cores.
# 2 000 tx/s (plus as many labels/s) is half the last flat rate: room for noisy neighbours.
DEFAULT_RATE = 2000.0


class Interrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM / SIGHUP, raised in the main thread so that every ``finally`` runs.

    A ``KeyboardInterrupt``: asyncio (the load generator's aiokafka loop) and other libraries
    re-raise that one, where they would log and swallow any other exception raised in a callback."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise ValueError(f"must be > 0, got {value}")
    return x


def _size(value: str) -> str:
    if value not in ("quick", "book"):
        raise ValueError(f"choose quick or book, got {value!r}")
    return value


def _drift(value: str) -> str:
    from ops.loadgen.drift import KINDS

    if value not in (*KINDS, "none"):
        raise ValueError(f"choose {' | '.join(KINDS)} | none, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add(p, "--bootstrap", "KAFKA_BOOTSTRAP", None, "a running broker to reuse (else a local one is started)")
    add(p, "--size", "DEMO_SIZE", "quick", "what the model is trained on and the load replays: quick | book", _size)
    add(p, "--bundle", "DEMO_BUNDLE", None, "a model bundle to use instead of training one", Path)
    add(p, "--reuse-bundle", "DEMO_REUSE_BUNDLE", False,
        "reuse the newest bundle of the same size in <out>/bundles instead of training", flag, nargs="?", const=True)
    add(p, "--rate", "DEMO_RATE", DEFAULT_RATE, "load: transactions per second", _positive_float)
    add(p, "--duration", "DEMO_DURATION", 60.0, "load: seconds", _positive_float)
    add(p, "--warmup-days", "DEMO_WARMUP_DAYS", 58,
        "days of history sent unpaced before the load: the first 37 fill the state (30 days customers, 37 "
        "terminals), the rest show drift and the monitor's days (7 of them get their labels)", int)
    add(p, "--workers", "DEMO_WORKERS", 2, "worker processes", positive_int)
    add(p, "--provider", "DEMO_PROVIDER", "auto", "the workers' execution provider: auto | cpu | cuda | tensorrt")
    add(p, "--metrics-port", "DEMO_METRICS_PORT", "auto",
        "the workers' health/metrics ports: auto (free ports) | off | N (worker i on N + i)")
    add(p, "--drift", "DEMO_DRIFT", "amount",
        "drift injected into the replay: amount (amounts x --drift-factor) | fraud (a wave of compromised "
        "terminals) | none", _drift)
    add(p, "--drift-from-day", "DEMO_DRIFT_FROM_DAY", None,
        "the history day the drift starts on (counted from its first day)", non_negative_int,
        shown="half of --warmup-days")
    add(p, "--drift-factor", "DEMO_DRIFT_FACTOR", 2.0, "how strong the drift is (ops.loadgen --drift-factor)",
        _positive_float)
    add(p, "--monitor", "DEMO_MONITOR", True,
        "run the model monitor (python -m workers.monitor) and report its live metrics", flag, nargs="?", const=True)
    add(p, "--monitor-timeout", "DEMO_MONITOR_TIMEOUT", 90.0,
        "seconds to wait for the monitor's transaction days after the load", non_negative_float)
    add(p, "--seed", "DEMO_SEED", 1, "simulator seed of the replayed history (training uses 0)", int)
    add(p, "--drain-timeout", "DEMO_DRAIN_TIMEOUT", 90.0, "seconds to wait for the last scores after the load",
        non_negative_float)
    add(p, "--out", "DEMO_OUT", Path(".state/demo"), "report, logs, bundles and the local broker's state", Path)
    add(p, "--keep-topics", "DEMO_KEEP_TOPICS", False,
        "keep the run's topics on a reused broker (deleted by default)", flag, nargs="?", const=True)
    return p


class Signals:
    """SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread, so that every ``finally``
    runs; once ``hold`` is set (cleanup must finish) a signal is only noted."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.hold = False
        self.seen: list[int] = []
        self._old: dict[int, object] = {}

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        self.seen.append(signum)
        if not self.hold:
            raise Interrupted(signum)
        print(f"[demo] {signal.Signals(signum).name}: still stopping, please wait", file=sys.stderr, flush=True)

    def __enter__(self) -> Signals:
        self._old = {s: signal.signal(s, self.handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *_: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except (FraudstreamError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ops.demo.run import Demo, log

    demo = Demo(a)
    code = 0
    with Signals() as signals:
        try:
            report = demo.run()
            md = demo.write(report)
            print(md, flush=True)
            log(f"report: {demo.out / 'report.md'}, {demo.out / 'report.json'}, plots in {demo.out}")
        except Interrupted as exc:
            code = 128 + exc.signum
            log(f"{exc}: stopping everything")
        except (FraudstreamError, OSError, RuntimeError) as exc:
            code = 1
            log(f"error: {exc}")
        except Exception as exc:  # a bug or a client error: still stop everything, then show it
            code = 1
            log(f"unexpected error: {exc!r}")
            traceback.print_exc()
        finally:
            while True:  # a signal that lands before ``hold`` is set interrupts one attempt, not the cleanup
                try:
                    signals.hold = True
                    demo.cleanup()
                    break
                except Interrupted as exc:
                    code = code or 128 + exc.signum
    log(f"done in {time.monotonic() - demo.started:.0f}s, exit {code}")
    return code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
