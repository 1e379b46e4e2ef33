"""The load generator's send loop: paced produce, with progress and a summary.

Transactions are paced by a ``Schedule``; a label is sent as soon as the replay reaches its
``reported_at`` (event time; never before its transaction's ``ts``), and labels are not counted
against the rate. Every record's Kafka timestamp is its send time (wall clock), which is what the
benchmark's end-to-end latency starts from. Live time (event time = wall clock) is
``ops.loadgen.live``, on the same sinks.

Two clients behind one loop (``ProducerOptions.client``):

- ``aiokafka`` (default): records appended to one ``BatchBuilder`` per partition (Kafka's murmur2
  key partitioner, as every Java and kafka-python producer uses), each batch handed over with
  ``send_batch`` when full, when it has lingered ``linger_ms``, and before the loop sleeps. Measured
  here 200-330 k msg/s unpaced against 22-28 k for kafka-python (``BENCHMARKS.md``): the 75 % and 90 %
  latency steps of the benchmark need more than kafka-python can offer on 2 cores.
- ``kafka-python``: ``KafkaProducer.send`` per record, its sender thread batching.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from kafka import KafkaProducer

from ops.loadgen.replay import TX, Event
from ops.loadgen.schedule import Schedule
from schemas.kafka_auth import KafkaAuth

CLIENTS = ("aiokafka", "kafka-python")


@dataclass(frozen=True)
class ProducerOptions:
    acks: str = "all"
    linger_ms: int = 5
    batch_size: int = 256 * 1024
    compression: str | None = None     # None | gzip | snappy | lz4 | zstd
    client: str = "aiokafka"           # aiokafka | kafka-python


@dataclass
class Summary:
    transactions: int = 0
    labels: int = 0
    bytes: int = 0
    seconds: float = 0.0           # first send to the last acknowledgement
    send_seconds: float = 0.0      # first send to the last send() call
    step_counts: list[int] = field(default_factory=list)   # transactions per scheduled step
    step_rates: list[float] = field(default_factory=list)  # achieved: count / (last - first send) of the step
    client: str = ""
    live: dict[str, Any] | None = None  # live mode (``ops.loadgen.live``): the history and the clock

    @property
    def tx_rate(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0

    @property
    def message_rate(self) -> float:
        return (self.transactions + self.labels) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "tx_rate": self.tx_rate, "message_rate": self.message_rate}


Progress = Callable[[int, int, float], None]  # (transactions, labels, elapsed seconds)


class Meter:
    """What every sender keeps while it sends: the counts in a :class:`Summary`, each schedule step's
    first and last send (for its achieved rate), and the progress reports."""

    def __init__(self, schedule: Schedule, client: str, progress: Progress | None, every_s: float) -> None:
        self.out = Summary(step_counts=[0] * max(len(schedule.steps), 1), client=client)
        self.schedule, self.progress, self.every_s = schedule, progress, every_s
        self.spans: list[list[float]] = [[float("inf"), 0.0] for _ in self.out.step_counts]
        self.clock = time.perf_counter
        self.t0 = self.clock()
        self.next_report = 0.0

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def transaction(self, due: float, now: float, size: int) -> None:
        self.out.transactions += 1
        self.out.bytes += size
        step = self.schedule.step_of(due)
        self.out.step_counts[step] += 1
        span = self.spans[step]
        span[0], span[1] = min(span[0], now), max(span[1], now)

    def label(self, size: int) -> None:
        self.out.labels += 1
        self.out.bytes += size

    async def tick(self) -> None:
        """Every 256 records: a progress report when due, and a yield so that the client's sender runs
        while unpaced."""
        out = self.out
        if (out.transactions + out.labels) % 256 == 0:
            now = self.elapsed()
            if self.progress is not None and now >= self.next_report:
                self.progress(out.transactions, out.labels, now)
                self.next_report = now + self.every_s
            await asyncio.sleep(0)

    async def finish(self, sink: Sink) -> None:
        self.out.send_seconds = self.elapsed()
        await sink.finish()
        self.out.seconds = self.elapsed()

    def summary(self) -> Summary:
        out = self.out
        if self.progress is not None:
            self.progress(out.transactions, out.labels, out.seconds)
        if self.schedule.steps:
            out.step_rates = [n / (hi - lo) if n > 1 and hi > lo else 0.0
                              for n, (lo, hi) in zip(out.step_counts, self.spans, strict=True)]
        return out


def make_producer(bootstrap: str, opts: ProducerOptions) -> KafkaProducer:
    acks: int | str = opts.acks if opts.acks == "all" else int(opts.acks)
    return KafkaProducer(bootstrap_servers=bootstrap, **KafkaAuth.from_env().kafka_python(), acks=acks,
                         linger_ms=opts.linger_ms,
                         batch_size=opts.batch_size, compression_type=opts.compression,
                         max_request_size=4 * 1024 * 1024)


class Sink(Protocol):
    async def start(self, topics: list[str]) -> None: ...
    async def send(self, topic: str, key: bytes, value: bytes) -> None: ...
    async def idle(self) -> None: ...     # about to sleep: hand over what is buffered
    async def finish(self) -> None: ...   # every record acknowledged (raises on a failed delivery)
    async def close(self) -> None: ...


class KafkaPythonSink:
    def __init__(self, bootstrap: str, opts: ProducerOptions) -> None:
        self.producer = make_producer(bootstrap, opts)

    async def start(self, topics: list[str]) -> None:
        for t in topics:
            self.producer.partitions_for(t)  # connect and fetch metadata before the clock starts

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.producer.send(topic, key=key, value=value)

    async def idle(self) -> None:
        return None

    async def finish(self) -> None:
        self.producer.flush(timeout=300)

    async def close(self) -> None:
        self.producer.close(timeout=30)


class AiokafkaBatchSink:
    """One open ``BatchBuilder`` per (topic, partition), handed to ``send_batch`` when full or lingered."""

    def __init__(self, bootstrap: str, opts: ProducerOptions) -> None:
        self.bootstrap, self.opts = bootstrap, opts
        self.producer: AIOKafkaProducer | None = None
        self.linger_s = opts.linger_ms / 1000
        self.partitioner = DefaultPartitioner()
        self.partitions: dict[str, list[int]] = {}
        self.open: dict[tuple[str, int], tuple[Any, float]] = {}  # (topic, partition) -> (batch, first append)
        self.futures: list[asyncio.Future[Any]] = []

    async def start(self, topics: list[str]) -> None:
        o = self.opts  # aiokafka objects belong to the running event loop: made here, not in __init__
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **KafkaAuth.from_env().aiokafka(),
                                         acks=o.acks if o.acks == "all" else int(o.acks), linger_ms=o.linger_ms,
                                         enable_idempotence=o.acks == "all",  # kafka-python's default, aiokafka's not
                                         max_batch_size=o.batch_size, compression_type=o.compression,
                                         max_request_size=4 * 1024 * 1024)
        await self.producer.start()
        for t in topics:
            parts = await self.producer.partitions_for(t)
            if not parts:
                raise RuntimeError(f"topic {t!r} has no partitions (does it exist?)")
            self.partitions[t] = sorted(parts)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        parts = self.partitions[topic]
        tp = (topic, self.partitioner(key, parts, parts))
        now = time.perf_counter()
        assert self.producer is not None
        entry = self.open.get(tp)
        if entry is None:
            entry = self.open[tp] = (self.producer.create_batch(), now)
        if entry[0].append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
            await self._hand_over(tp)
            entry = self.open[tp] = (self.producer.create_batch(), now)
            if entry[0].append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in an empty batch")
        if now - entry[1] >= self.linger_s:
            await self._hand_over(tp)

    async def _hand_over(self, tp: tuple[str, int]) -> None:
        assert self.producer is not None
        batch, _ = self.open.pop(tp)
        batch.close()
        self.futures.append(await self.producer.send_batch(batch, tp[0], partition=tp[1]))
        if len(self.futures) > 4096:
            done = [f for f in self.futures if f.done()]
            for f in done:
                f.result()  # a failed delivery raises here
            self.futures = [f for f in self.futures if not f.done()]

    async def idle(self) -> None:
        for tp in list(self.open):
            await self._hand_over(tp)

    async def finish(self) -> None:
        await self.idle()
        for f in asyncio.as_completed(self.futures):
            await f
        self.futures.clear()

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


def make_sink(bootstrap: str, opts: ProducerOptions) -> Sink:
    if opts.client == "aiokafka":
        return AiokafkaBatchSink(bootstrap, opts)
    if opts.client == "kafka-python":
        return KafkaPythonSink(bootstrap, opts)
    raise ValueError(f"producer client {opts.client!r}: choose one of {', '.join(CLIENTS)}")


def send(bootstrap: str, tx_topic: str, label_topic: str, stream: Iterable[Event], schedule: Schedule,
         opts: ProducerOptions = ProducerOptions(), count: int | None = None, duration_s: float | None = None,
         progress: Progress | None = None, progress_every_s: float = 0.25) -> Summary:
    """Send ``stream`` until it ends, ``count`` transactions were sent, ``duration_s`` passed or the schedule ends."""
    return asyncio.run(_send(make_sink(bootstrap, opts), opts.client, tx_topic, label_topic, stream, schedule,
                             count, duration_s, progress, progress_every_s))


async def _send(sink: Sink, client: str, tx_topic: str, label_topic: str, stream: Iterable[Event],
                schedule: Schedule, count: int | None, duration_s: float | None, progress: Progress | None,
                progress_every_s: float) -> Summary:
    try:
        await sink.start([tx_topic, label_topic])
        # Pull the first event before the clock starts too (``events`` builds and sorts its list then).
        it = iter(stream)
        head = next(it, None)
        stream = itertools.chain([] if head is None else [head], it)
        m = Meter(schedule, client, progress, progress_every_s)
        for e in stream:
            if e.kind == TX:
                if count is not None and m.out.transactions >= count:
                    break
                due = schedule.due(m.out.transactions)
                if due is None:
                    break
                now = m.elapsed()
                if duration_s is not None and max(now, due) >= duration_s:
                    break
                if due > now:
                    await sink.idle()
                    await asyncio.sleep(max(due - m.elapsed(), 0.0))
                    now = due
                await sink.send(tx_topic, e.key, e.value)
                m.transaction(due, now, len(e.value) + len(e.key))
            else:
                await sink.send(label_topic, e.key, e.value)
                m.label(len(e.value) + len(e.key))
            await m.tick()
        await m.finish(sink)
    finally:
        await sink.close()
    return m.summary()
