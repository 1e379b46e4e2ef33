"""The Faust app: wires the transactions topic to the scoring agent; everything else is plain code.

Delivery: each event's message gets one extra reference before the batch is processed and loses
it only after every output of the batch is acknowledged (``Runner.process`` returns), in offset
order. Faust's own ack when the ``take_events`` body ends (or is cancelled) then cannot make a
record committable early (faust-streaming#606 and the take() ack-on-raise behaviour).
SIGTERM: no new batch starts, the batch in flight finishes and is acked, then Faust stops and
commits; a batch whose outputs still fail after --drain-timeout-s is abandoned unacknowledged
(exit 1). Supervision: the background components run under a ``Supervisor`` — by the names the
test hook ``/debug/kill?component=`` takes: "terminal-table reader", "label aggregator",
"watchdog", "flusher", "stats", "consumer" (direct mode) —; one that dies, a failed start-up, a
non-retriable output error or a bug makes the worker not live and not ready, and it exits 1.
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
from faust.types import TP

from schemas.bundle import Bundle
from workers.batch import Record, replay_of
from workers.config import Settings
from workers.consume import DirectConsumer
from workers.errors import ComponentDied, WorkerError
from workers.health import Health, Server, Supervisor, make_app
from workers.labels import LabelAggregator
from workers.metrics import Metrics
from workers.publish import Publisher
from workers.runner import Runner
from workers.score import Scorer
from workers.services import TableReader
from workers.terminals import TerminalTable
from workers.watchdog import OffsetSampler, Watchdog, run_watchdog

log = logging.getLogger("fraudstream.worker")
FATAL_GRACE_S = 2.0


def create_app(s: Settings, bundle: Bundle, scorer: Scorer, partitions: dict[str, int],
               metrics_socket: socket.socket | None = None) -> faust.App:
    (s.data_dir / s.worker_id).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        # The transactions' consumer group is s.group_id in both modes; with the direct consumer
        # the Faust app (timers, tasks, lifecycle) joins a group of its own.
        s.group_id if s.consumer == "agent" else f"{s.group_id}-app",
        broker=";".join(f"kafka://{b}" for b in s.bootstrap.split(",")),
        broker_credentials=s.auth.faust(),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(s.data_dir / s.worker_id),
        consumer_auto_offset_reset=s.auto_offset_reset,
        topic_allow_declare=False,
        producer_acks=-1,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * s.batch_size, 4096),
        stream_wait_empty=False,  # records held back at stop stay uncommitted; do not wait for them
        # A dead worker's partitions move after this, not Faust's default 60 s: until then they
        # stall, and so does every transaction whose terminal buckets wait for them.
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=max(s.session_timeout_s / 4, 0.5),
    )
    table = TerminalTable(partitions[s.topics.transactions], partitions[s.topics.labels])
    publisher = Publisher(s)
    reader = TableReader(s, table)
    metrics = Metrics()
    metrics.set_model(bundle.model_version, str(bundle.manifest.get("feature_set", {}).get("version", "unknown")),
                      scorer.provider, str(getattr(scorer, "graph", "tree")))
    runner = Runner(s, bundle, scorer, table, publisher, metrics)
    labels = LabelAggregator(s, table, publisher, runner.stats, metrics, runner.stream_clock, reader.caught_up)
    watchdog = Watchdog(s.stall_after_s)
    health = Health(watchdog)
    metrics.set_ready_function(health.is_ready)
    ready, draining, idle, fatal = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
    idle.set()
    topic = app.topic(s.topics.transactions, key_type=bytes, value_type=bytes, internal=False)

    async def drain() -> None:
        log.info("SIGTERM: draining the batch in flight (at most %.0fs)", s.drain_timeout_s)
        draining.set()
        health.draining = True
        supervisor.stopping = True
        loop = asyncio.get_running_loop()
        loop.call_later(s.drain_timeout_s, publisher.interrupt)
        loop.call_later(s.drain_timeout_s + 20, hard_exit)
        if direct is not None:
            direct.stopping.set()
            if direct_task is not None:
                await direct_task  # flushes what it can, commits, leaves the group
        await idle.wait()
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGINT)  # Faust's own clean stop: commits acked offsets

    held: dict[tuple[int, int], Any] = {}  # (partition, offset) -> event we hold a reference on
    streams: list[Any] = []
    limit = 20 * s.batch_size
    paused: set[int] = set()
    hook_held: set[int] = set()  # agent mode: partitions paused by the test hook (/debug/pause)

    async def flush_and_ack() -> int:
        records = await runner.flush()
        for r in records:  # offset order within each partition
            ev = held.pop((r.partition, r.offset), None)
            if ev is not None:
                await streams[0].ack(ev)
        return len(records)

    def apply_flow() -> None:
        """Per-partition backpressure (see Runner.flow) through Faust's consumer."""
        nonlocal paused
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == s.topics.transactions}
        paused &= assigned
        pause, resume = runner.flow(paused, limit)
        pause &= assigned
        resume &= assigned
        if pause:
            app.consumer.pause_partitions({TP(s.topics.transactions, p) for p in pause})
        if resume - hook_held:
            app.consumer.resume_partitions({TP(s.topics.transactions, p) for p in resume - hook_held})
        paused = (paused | pause) - resume

    def fail(what: str) -> None:
        # Not bad input (that is dead-lettered): an output refused for good, or a bug. Stop without
        # acking, so the records are redelivered after a restart rather than skipped.
        exc = sys.exc_info()[1]
        if isinstance(exc, WorkerError):  # says what happened and what to do: no traceback needed
            log.error("failure %s: %s; stopping the worker", what, exc)
        else:
            log.exception("failure %s; stopping the worker", what)
        stop_fatally(what if exc is None else f"{what}: {exc}")

    def component_died(name: str, exc: BaseException | None) -> None:
        err = ComponentDied(name, exc)
        log.error("%s; stopping the worker", err, exc_info=exc)
        stop_fatally(str(err))

    def stop_fatally(reason: str) -> None:
        if fatal.is_set():
            return
        fatal.set()
        health.fatal = reason
        supervisor.stopping = True
        publisher.interrupt()
        if direct is not None:
            direct.stopping.set()  # no new fetch; it leaves the group rather than waiting to be timed out
        # A moment before stopping, so that probes and scrapers see why (/healthz, /readyz say it).
        loop = asyncio.get_running_loop()
        loop.call_later(FATAL_GRACE_S, os.kill, os.getpid(), signal.SIGINT)
        loop.call_later(FATAL_GRACE_S + s.drain_timeout_s + 20, hard_exit)

    def hard_exit() -> None:
        log.error("the worker did not stop within %.0fs of the drain bound; exiting", s.drain_timeout_s + 20)
        logging.shutdown()
        os._exit(1)

    supervisor = Supervisor(component_died)

    direct = DirectConsumer(s, runner, fail) if s.consumer == "direct" else None
    direct_task: asyncio.Task[None] | None = None

    @app.task
    async def start_services() -> None:
        # A Faust task that raises is only logged: a start-up that fails must stop the worker, not
        # leave it bootstrapping for ever.
        try:
            await start_components()
        except Exception as exc:
            component_died("start-up", exc)

    async def start_components() -> None:
        nonlocal direct_task
        t0 = time.monotonic()
        await publisher.start()
        await reader.start()
        supervisor.watch("terminal-table reader", reader.task)
        await labels.start()
        supervisor.watch("label aggregator", labels.task)
        await reader.caught_up.wait()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(drain()))
        supervisor.spawn("watchdog", watch_partitions())
        supervisor.spawn("flusher", flusher())
        supervisor.spawn("stats", publish_stats())
        ready.set()
        health.ready = True
        log.info("worker %s ready in %.2fs: provider %s, model %s, bundle %s, graph %s", s.worker_id,
                 time.monotonic() - t0, scorer.provider, bundle.model_version, bundle.path, scorer.graph)
        if direct is not None:
            await direct.start()
            # Not spawned: the drain awaits its own end (final flush, commit, leaving the group).
            direct_task = asyncio.ensure_future(direct.run())
            supervisor.watch("consumer", direct_task)

    def assigned() -> set[int]:
        if direct is not None:
            return direct.assigned()
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == s.topics.transactions}

    def hold(p: int) -> None:  # test hook: stop fetching partition p (flow control never resumes it)
        if direct is not None:
            direct.hold(p)
            return
        hook_held.add(p)
        if p in assigned():
            app.consumer.pause_partitions({TP(s.topics.transactions, p)})

    def release(p: int) -> None:
        if direct is not None:
            direct.release(p)
            return
        hook_held.discard(p)
        if p in assigned() and p not in paused:
            app.consumer.resume_partitions({TP(s.topics.transactions, p)})

    health.assigned = assigned
    hooks: dict[str, Callable[[int], None]] | None = {"pause": hold, "resume": release} if s.test_hooks else None
    server = Server(metrics_socket, make_app(health, metrics, hooks, supervisor.kill if s.test_hooks else None)
                    ) if metrics_socket is not None else None
    sampler = OffsetSampler(s.bootstrap, s.auth.aiokafka(), s.topics.transactions, s.group_id, s.worker_id,
                            s.auto_offset_reset, timeout_s=max(s.watchdog_interval_s, 5.0))

    @app.task
    async def serve_health() -> None:
        if server is not None:
            await server.start()

    async def watch_partitions() -> None:
        """The stall watchdog (workers/watchdog.py), from the end of the bootstrap on (supervised)."""
        while True:
            try:
                await sampler.start()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watchdog: cannot reach the broker (%r); retrying in %.1fs", exc, s.watchdog_interval_s)
                await asyncio.sleep(s.watchdog_interval_s)
        await run_watchdog(watchdog, s.watchdog_interval_s, assigned, lambda: runner.processed, runner.waiting,
                           sampler.offsets, lambda dog: metrics.set_partitions(dog.lags(), len(dog.stalled())))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_health(sender: Any, **kwargs: Any) -> None:
        supervisor.stop()  # the components end with the worker from here on
        if server is not None:
            await server.stop()
        await sampler.stop()

    async def score(stream: Any) -> None:
        streams[:] = [stream]
        async for events in stream.take_events(s.batch_size, within=max(s.max_wait_ms, 0.1) / 1000):
            for ev in events:  # our reference: released only once the record's outputs are acknowledged
                ev.message.incref()
            if draining.is_set() or fatal.is_set():
                await asyncio.Event().wait()  # hold: never acked, redelivered after the restart
            await ready.wait()
            idle.clear()
            try:
                now = int(time.time() * 1000)
                records = []
                for ev in events:
                    m = ev.message
                    held[(m.partition, m.offset)] = ev
                    records.append(Record(m.partition, m.offset, round(m.timestamp * 1000), m.key, m.value, now,
                                          replay_of(m.partition, m.headers)))
                await runner.admit(records)
                await flush_and_ack()
                apply_flow()
            except asyncio.CancelledError:
                raise
            except Exception:
                fail("processing a batch")
            finally:
                idle.set()

    if direct is None:
        app.agent(topic, name="score")(score)

    async def flusher() -> None:
        """Scores what waited for terminal finality when no new batch arrives to trigger it (supervised):
        woken when a record is queued or a table watermark moves, else at the next wait deadline."""
        while not fatal.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.wake.wait(), runner.next_wait_s())
            runner.wake.clear()
            if runner.pending_count() and (streams or (direct is not None and direct.consumer is not None)):
                try:
                    if direct is not None:
                        await direct.flush_and_commit()
                    else:
                        await flush_and_ack()
                        apply_flow()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    fail("flushing")

    async def publish_stats() -> None:
        """A latency-stats message every --stats-interval (supervised: a bug or a refused topic stops the worker)."""
        while True:
            await asyncio.sleep(s.stats_interval_s)
            msg = runner.stats_message(labels.sizes())
            await publisher.send_all([(s.topics.stats, s.worker_id.encode(), orjson.dumps(msg), None)])

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalance(sender: Any, **kwargs: Any) -> None:
        if direct is not None:
            # Faust's own consumer (group "<group>-app") holds no transactions partitions in direct
            # mode: the direct consumer's rebalance listener forgets revoked partitions itself.
            return
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == s.topics.transactions}
        runner.drop_partitions(set(runner.states) - assigned)
        if hook_held & assigned:  # a reassignment forgets pauses; the test hook's hold outlives it
            app.consumer.pause_partitions({TP(s.topics.transactions, p) for p in hook_held & assigned})

    app.conf.fraudstream = {"runner": runner, "labels": labels, "reader": reader, "health": health}  # tests, ops, exit
    return app
