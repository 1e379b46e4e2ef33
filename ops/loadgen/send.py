"""The load generator's send loop: paced kafka-python produce, with progress and a summary.

Transactions are paced by a ``Schedule``; a label is sent as soon as the replay reaches its
``available_at`` (event time), so labels never precede their transactions and are not counted
against the rate. Every record's Kafka timestamp is its send time (wall clock), which is what the
benchmark's end-to-end latency starts from.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from kafka import KafkaProducer

from ops.loadgen.replay import TX, Event
from ops.loadgen.schedule import Schedule
from schemas.kafka_auth import KafkaAuth


@dataclass(frozen=True)
class ProducerOptions:
    acks: str = "all"
    linger_ms: int = 5
    batch_size: int = 256 * 1024
    compression: str | None = None     # None | gzip | snappy | lz4 | zstd


@dataclass
class Summary:
    transactions: int = 0
    labels: int = 0
    bytes: int = 0
    seconds: float = 0.0           # first send to the last acknowledgement
    send_seconds: float = 0.0      # first send to the last send() call
    step_counts: list[int] = field(default_factory=list)   # transactions per scheduled step
    step_rates: list[float] = field(default_factory=list)  # achieved: count / (last - first send) of the step

    @property
    def tx_rate(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0

    @property
    def message_rate(self) -> float:
        return (self.transactions + self.labels) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "tx_rate": self.tx_rate, "message_rate": self.message_rate}


Progress = Callable[[int, int, float], None]  # (transactions, labels, elapsed seconds)


def make_producer(bootstrap: str, opts: ProducerOptions) -> KafkaProducer:
    acks: int | str = opts.acks if opts.acks == "all" else int(opts.acks)
    return KafkaProducer(bootstrap_servers=bootstrap, **KafkaAuth.from_env().kafka_python(), acks=acks,
                         linger_ms=opts.linger_ms,
                         batch_size=opts.batch_size, compression_type=opts.compression,
                         max_request_size=4 * 1024 * 1024)


def send(bootstrap: str, tx_topic: str, label_topic: str, stream: Iterable[Event], schedule: Schedule,
         opts: ProducerOptions = ProducerOptions(), count: int | None = None, duration_s: float | None = None,
         progress: Progress | None = None, progress_every_s: float = 0.25) -> Summary:
    """Send ``stream`` until it ends, ``count`` transactions were sent, ``duration_s`` passed or the schedule ends."""
    producer = make_producer(bootstrap, opts)
    producer.partitions_for(tx_topic)  # connect and fetch metadata before the clock starts
    # Pull the first event before the clock starts too (``events`` builds and sorts its list then).
    it = iter(stream)
    head = next(it, None)
    stream = itertools.chain([] if head is None else [head], it)
    out = Summary(step_counts=[0] * max(len(schedule.steps), 1))
    spans: list[list[float]] = [[float("inf"), 0.0] for _ in out.step_counts]
    clock = time.perf_counter
    t0 = clock()
    next_report = 0.0
    try:
        for e in stream:
            if e.kind == TX:
                if count is not None and out.transactions >= count:
                    break
                due = schedule.due(out.transactions)
                if due is None:
                    break
                now = clock() - t0
                if duration_s is not None and max(now, due) >= duration_s:
                    break
                if due > now:
                    time.sleep(due - now)
                    now = due
                producer.send(tx_topic, key=e.key, value=e.value)
                out.transactions += 1
                step = schedule.step_of(due)
                out.step_counts[step] += 1
                span = spans[step]
                span[0], span[1] = min(span[0], now), max(span[1], now)
            else:
                producer.send(label_topic, key=e.key, value=e.value)
                out.labels += 1
            out.bytes += len(e.value) + len(e.key)
            if progress is not None and (out.transactions + out.labels) % 256 == 0:
                now = clock() - t0
                if now >= next_report:
                    progress(out.transactions, out.labels, now)
                    next_report = now + progress_every_s
        out.send_seconds = clock() - t0
        producer.flush(timeout=300)
        out.seconds = clock() - t0
    finally:
        producer.close(timeout=30)
    if progress is not None:
        progress(out.transactions, out.labels, out.seconds)
    if schedule.steps:
        out.step_rates = [n / (hi - lo) if n > 1 and hi > lo else 0.0
                          for n, (lo, hi) in zip(out.step_counts, spans, strict=True)]
    return out
