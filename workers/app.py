"""The Faust app: the worker's lifecycle; the data path is plain code beside it.

Faust runs the lifecycle — its services, timers, signals and the stop — and the worker's
components run under a ``Supervisor``: by the names the test hook ``/debug/kill?component=``
takes, "terminal-table reader", "label aggregator", "watchdog", "flusher", "stats", "consumer".
One that dies, a failed start-up, a non-retriable output error or a bug makes the worker not live
and not ready, and it exits 1. One consumer path: the ``DirectConsumer`` (whole aiokafka fetches,
its own consumer group ``--group-id``; the Faust app joins ``<group>-app``, which holds no
transactions partitions) feeds the ``Runner``, the edge around the sans-I/O core.

Start: the publisher, the terminal-table reader (until caught up), the label aggregator, then the
watchdog, flusher and stats, then the consumer. SIGTERM: no new fetch, the batches in flight
finish and are committed, the consumer leaves its group, then Faust stops; outputs that still
fail after --drain-timeout-s are abandoned unacknowledged (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson

from schemas.bundle import Bundle
from workers.config import Settings
from workers.consume import DirectConsumer
from workers.errors import ComponentDied, WorkerError
from workers.explain import Explainer
from workers.health import Health, Server, Supervisor, make_app
from workers.labels import LabelAggregator
from workers.metrics import Metrics
from workers.ports import ScorerPort
from workers.publish import Publisher
from workers.runner import Runner
from workers.score import Scorer
from workers.services import TableReader
from workers.terminals import TerminalTable
from workers.transact import Transactions
from workers.watchdog import OffsetSampler, Watchdog, run_watchdog

log = logging.getLogger("fraudstream.worker")
FATAL_GRACE_S = 2.0


def faust_app(s: Settings) -> faust.App:
    return faust.App(
        f"{s.group_id}-app",  # the transactions' group is s.group_id, joined by the direct consumer
        broker=";".join(f"kafka://{b}" for b in s.bootstrap.split(",")),
        broker_credentials=s.auth.faust(),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(s.data_dir / s.worker_id),
        topic_allow_declare=False,
        producer_acks=-1,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=max(s.session_timeout_s / 4, 0.5),
    )


class Worker:
    """The components of one worker and their lifecycle, wired into a Faust app."""

    def __init__(self, s: Settings, bundle: Bundle, scorer: Scorer, partitions: dict[str, int],
                 metrics_socket: socket.socket | None, explainer: Explainer | None = None) -> None:
        self.s, self.bundle, self.scorer = s, bundle, scorer
        self.table = TerminalTable(partitions[s.topics.transactions], partitions[s.topics.labels])
        self.metrics = Metrics()
        t = s.topics
        self.metrics.set_output_topics([t.scores, t.flags, t.dlq, t.stats, t.terminal_days])
        self.publisher = Publisher(s, self.metrics)
        self.reader = TableReader(s, self.table)
        self.metrics.set_serving(bundle, scorer)
        self.runner = Runner(s, bundle, scorer, self.table, self.publisher, self.metrics, explainer)
        self.runner.transactions = Transactions(s, self.metrics) if s.exactly_once else None
        self.labels = LabelAggregator(s, self.table, self.publisher, self.runner.stats, self.metrics,
                                      self.runner.stream_clock, self.reader.caught_up)
        self.watchdog = Watchdog(s.stall_after_s)
        self.health = Health(self.watchdog)
        self.metrics.set_ready_function(self.health.is_ready)
        self.fatal = asyncio.Event()
        self.supervisor = Supervisor(self.component_died)
        self.consumer = DirectConsumer(s, self.runner, self.fail)
        self.consumer_task: asyncio.Task[None] | None = None
        self.health.assigned = self.consumer.assigned
        hooks: dict[str, Callable[[int], None]] | None = (
            {"pause": self.consumer.hold, "resume": self.consumer.release} if s.test_hooks else None)
        self.server = Server(metrics_socket, make_app(self.health, self.metrics, hooks,
                                                      self.supervisor.kill if s.test_hooks else None)
                             ) if metrics_socket is not None else None
        self.sampler = OffsetSampler(s.bootstrap, s.auth.aiokafka(), s.topics.transactions, s.group_id,
                                     s.worker_id, s.auto_offset_reset, timeout_s=max(s.watchdog_interval_s, 5.0))

    # -- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        # A Faust task that raises is only logged: a start-up that fails must stop the worker, not
        # leave it bootstrapping for ever.
        try:
            await self._start_components()
        except Exception as exc:
            self.component_died("start-up", exc)

    async def _start_components(self) -> None:
        t0 = time.monotonic()
        await self.publisher.start()
        await self.reader.start()
        self.supervisor.watch("terminal-table reader", self.reader.task)
        await self.labels.start()
        self.supervisor.watch("label aggregator", self.labels.task)
        await self.reader.caught_up.wait()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(self.drain()))
        self.supervisor.spawn("watchdog", self.watch_partitions())
        self.supervisor.spawn("flusher", self.flusher())
        self.supervisor.spawn("stats", self.publish_stats())
        if self.s.bundle is None:  # the registry's champion: follow it
            from workers.registry import Follower

            self.supervisor.spawn("registry follower", Follower(self.s, self.runner, self.metrics).run())
        self.health.ready = True
        log.info("worker %s ready in %.2fs: provider %s, model %s, bundle %s, graph %s", self.s.worker_id,
                 time.monotonic() - t0, self.scorer.provider, self.bundle.model_version, self.bundle.path,
                 self.scorer.graph)
        await self.consumer.start()
        # Not spawned: the drain awaits its own end (final flush, commit, leaving the group).
        self.consumer_task = asyncio.ensure_future(self.consumer.run())
        self.supervisor.watch("consumer", self.consumer_task)

    async def serve_health(self) -> None:
        if self.server is not None:
            await self.server.start()

    async def stop_health(self, sender: Any, **kwargs: Any) -> None:
        self.supervisor.stop()  # the components end with the worker from here on
        if self.server is not None:
            await self.server.stop()
        await self.sampler.stop()

    # -- the supervised components -------------------------------------------------------------

    async def watch_partitions(self) -> None:
        """The stall watchdog (workers/watchdog.py), from the end of the bootstrap on."""
        s = self.s
        while True:
            try:
                await self.sampler.start()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watchdog: cannot reach the broker (%r); retrying in %.1fs", exc, s.watchdog_interval_s)
                await asyncio.sleep(s.watchdog_interval_s)
        await run_watchdog(self.watchdog, s.watchdog_interval_s, self.consumer.assigned,
                           lambda: self.runner.processed, self.runner.waiting, self.sampler.offsets,
                           lambda dog: self.metrics.set_partitions(dog.lags(), len(dog.stalled())))

    async def flusher(self) -> None:
        """Scores what waited for terminal finality when no new batch arrives to trigger it, completes
        acknowledged batches and commits them when due: woken when a record is queued, a table watermark
        moves or a batch is acknowledged, else at the next deadline (a wait bound, the commit interval)."""
        runner, consumer = self.runner, self.consumer
        while not self.fatal.is_set():
            deadlines = [t for t in (runner.next_wait_s(), consumer.next_commit_s()) if t is not None]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.wake.wait(), min(deadlines) if deadlines else None)
            runner.wake.clear()
            if consumer.consumer is None or not (runner.pending_count() or consumer.inflight or consumer.to_commit):
                continue
            try:
                await consumer.flush_and_commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.fail("flushing")

    async def publish_stats(self) -> None:
        """A latency-stats message every --stats-interval (a bug or a refused topic stops the worker)."""
        while True:
            await asyncio.sleep(self.s.stats_interval_s)
            msg = self.runner.stats_message(self.labels.sizes())
            await self.publisher.send_all([(self.s.topics.stats, self.s.worker_id.encode(), orjson.dumps(msg), None)])

    # -- stopping ------------------------------------------------------------------------------

    async def drain(self) -> None:
        log.info("SIGTERM: draining the batches in flight (at most %.0fs)", self.s.drain_timeout_s)
        self.health.draining = True
        self.supervisor.stopping = True
        loop = asyncio.get_running_loop()
        loop.call_later(self.s.drain_timeout_s, self.interrupt_outputs)
        loop.call_later(self.s.drain_timeout_s + 20, self.hard_exit)
        self.consumer.stopping.set()
        if self.consumer_task is not None:
            await self.consumer_task  # flushes what it can, commits, leaves the group
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGINT)  # Faust's own clean stop

    def fail(self, what: str) -> None:
        """Not bad input (that is dead-lettered): an output refused for good, or a bug. Stop without
        committing, so the records are redelivered after a restart rather than skipped."""
        exc = sys.exc_info()[1]
        if isinstance(exc, WorkerError):  # says what happened and what to do: no traceback needed
            log.error("failure %s: %s; stopping the worker", what, exc)
        else:
            log.exception("failure %s; stopping the worker", what)
        self.stop_fatally(what if exc is None else f"{what}: {exc}")

    def component_died(self, name: str, exc: BaseException | None) -> None:
        err = ComponentDied(name, exc)
        log.error("%s; stopping the worker", err, exc_info=exc)
        self.stop_fatally(str(err))

    def stop_fatally(self, reason: str) -> None:
        if self.fatal.is_set():
            return
        self.fatal.set()
        self.health.fatal = reason
        self.supervisor.stopping = True
        self.interrupt_outputs()
        self.consumer.stopping.set()  # no new fetch; it leaves the group rather than waiting to be timed out
        # A moment before stopping, so that probes and scrapers see why (/healthz, /readyz say it).
        loop = asyncio.get_running_loop()
        loop.call_later(FATAL_GRACE_S, os.kill, os.getpid(), signal.SIGINT)
        loop.call_later(FATAL_GRACE_S + self.s.drain_timeout_s + 20, self.hard_exit)

    def interrupt_outputs(self) -> None:
        self.publisher.interrupt()
        if self.runner.transactions is not None:
            self.runner.transactions.interrupt()

    def hard_exit(self) -> None:
        log.error("the worker did not stop within %.0fs of the drain bound; exiting", self.s.drain_timeout_s + 20)
        logging.shutdown()
        os._exit(1)


def create_app(s: Settings, bundle: Bundle, scorer: Scorer, partitions: dict[str, int],
               metrics_socket: socket.socket | None = None, explainer: Explainer | None = None,
               shadow: tuple[Bundle, ScorerPort] | None = None) -> faust.App:
    (s.data_dir / s.worker_id).mkdir(parents=True, exist_ok=True)
    app = faust_app(s)
    w = Worker(s, bundle, scorer, partitions, metrics_socket, explainer)
    w.runner.shadow = shadow
    app.task(w.start)
    app.task(w.serve_health)
    app.on_before_shutdown.connect(w.stop_health)  # type: ignore[arg-type]
    app.conf.fraudstream = {"runner": w.runner, "labels": w.labels, "reader": w.reader,
                            "health": w.health, "worker": w}  # tests, ops, exit
    return app
