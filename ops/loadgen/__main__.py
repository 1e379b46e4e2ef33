"""``python -m ops.loadgen``: replay simulated or Parquet transactions into Kafka.

Transactions are keyed by customer id, labels by terminal id, each label sent when the replay
reaches its ``available_at`` in event time. As fast as possible, at a constant ``--rate`` or in
``--steps``; for ``--count`` transactions or ``--duration`` seconds. Every flag has an env
variable (see ``--help``). Prints what it sent (JSON on stdout with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from schemas.errors import FraudstreamError
from schemas.settings import add, non_negative_float, positive_int

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add(p, "--bootstrap", "FRAUDSTREAM_BOOTSTRAP", os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "Kafka bootstrap servers", shown="$KAFKA_BOOTSTRAP, else 127.0.0.1:9092")
    add(p, "--topic-transactions", "FRAUDSTREAM_TOPIC_TRANSACTIONS", "transactions", "transactions topic")
    add(p, "--topic-labels", "FRAUDSTREAM_TOPIC_LABELS", "fraud-labels", "labels topic")
    add(p, "--partitions", "FRAUDSTREAM_PARTITIONS", 4, "partitions of a topic created because it is missing",
        positive_int)
    add(p, "--no-labels", "FRAUDSTREAM_LOADGEN_NO_LABELS", False, "send transactions only", _flag)
    add(p, "--transactions", "FRAUDSTREAM_TRANSACTIONS", None, "transactions Parquet file (else simulate)", Path)
    add(p, "--labels", "FRAUDSTREAM_LABELS", None, "labels Parquet file (with --transactions)", Path)
    add(p, "--customers", "FRAUDSTREAM_SIM_CUSTOMERS", 1000, "simulated customers", positive_int)
    add(p, "--terminals", "FRAUDSTREAM_SIM_TERMINALS", 2000, "simulated terminals", positive_int)
    add(p, "--days", "FRAUDSTREAM_SIM_DAYS", 84, "simulated days", positive_int)
    add(p, "--start", "FRAUDSTREAM_SIM_START", "2018-04-01", "first simulated day (UTC date)")
    add(p, "--seed", "FRAUDSTREAM_SIM_SEED", 0, "simulator seed", int)
    add(p, "--skip", "FRAUDSTREAM_LOADGEN_SKIP", 0, "start at this transaction index of the history", int)
    add(p, "--count", "FRAUDSTREAM_LOADGEN_COUNT", None, "stop after this many transactions", positive_int)
    add(p, "--duration", "FRAUDSTREAM_LOADGEN_DURATION_S", None, "stop after this many seconds", non_negative_float)
    add(p, "--rate", "FRAUDSTREAM_LOADGEN_RATE", None, "constant target rate, transactions/s (else unpaced)",
        non_negative_float)
    add(p, "--steps", "FRAUDSTREAM_LOADGEN_STEPS", None, "rate steps rate:seconds,... e.g. 1000:10,2000:10")
    add(p, "--client", "FRAUDSTREAM_LOADGEN_CLIENT", "aiokafka",
        "producer client: aiokafka (batches per partition, ~10x faster here) | kafka-python")
    add(p, "--acks", "FRAUDSTREAM_LOADGEN_ACKS", "all", "producer acks: all | 1 | 0")
    add(p, "--linger-ms", "FRAUDSTREAM_LOADGEN_LINGER_MS", 5, "producer linger.ms", int)
    add(p, "--batch-size", "FRAUDSTREAM_LOADGEN_BATCH_SIZE", 256 * 1024, "producer batch.size (bytes)", positive_int)
    add(p, "--compression", "FRAUDSTREAM_LOADGEN_COMPRESSION", "none",
        f"producer compression: {' | '.join(COMPRESSIONS)}")
    add(p, "--quiet", "FRAUDSTREAM_LOADGEN_QUIET", False, "no progress display", _flag)
    add(p, "--json", "FRAUDSTREAM_LOADGEN_JSON", False, "print the summary as JSON on stdout", _flag)
    return p


def _flag(value: str) -> bool:
    from schemas.settings import flag

    return flag(value)


def main(argv: list[str] | None = None) -> int:
    # Flags given without a value act as switches.
    argv = list(sys.argv[1:] if argv is None else argv)
    for switch in ("--no-labels", "--quiet", "--json"):
        argv = [a for a in argv for a in ((a, "true") if a == switch else (a,))]
    try:
        return run(build_parser().parse_args(argv))
    except (FraudstreamError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(a: argparse.Namespace) -> int:
    from ops.loadgen.replay import events
    from ops.loadgen.schedule import Schedule, parse_steps
    from ops.loadgen.send import CLIENTS, ProducerOptions, send
    from ops.loadgen.topics import ensure_topics

    if a.compression not in COMPRESSIONS:
        raise ValueError(f"--compression {a.compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    if a.client not in CLIENTS:
        raise ValueError(f"--client {a.client!r}: choose one of {', '.join(CLIENTS)}")
    if a.acks not in ("all", "1", "0"):
        raise ValueError(f"--acks {a.acks!r}: choose all, 1 or 0")
    schedule = Schedule(rate=a.rate or None, steps=parse_steps(a.steps) if a.steps else None)
    if (a.transactions is None) != (a.labels is None):
        raise ValueError("--transactions and --labels go together")
    if a.transactions is not None:
        from ops.loadgen.source import from_files

        h, labels = from_files(a.transactions, a.labels)
    else:
        from ops.loadgen.source import simulated
        from trainer.simulate import SimConfig

        h, labels = simulated(SimConfig(a.customers, a.terminals, a.days, a.start, a.seed))
    limit = a.count
    if limit is None and schedule.total is not None:
        limit = int(schedule.total) + 1
    if limit is None and a.rate and a.duration is not None:
        limit = int(a.rate * a.duration) + 1
    stop = min(len(h), a.skip + limit) if limit is not None else len(h)
    ensure_topics(a.bootstrap, [a.topic_transactions, a.topic_labels], a.partitions)
    opts = ProducerOptions(acks=a.acks, linger_ms=a.linger_ms, batch_size=a.batch_size,
                           compression=None if a.compression == "none" else a.compression, client=a.client)
    stream = events(h, None if a.no_labels else labels, a.skip, stop)
    if a.quiet:
        summary = send(a.bootstrap, a.topic_transactions, a.topic_labels, stream, schedule, opts, a.count, a.duration)
    else:
        from ops.loadgen.display import live_progress

        total = stop - a.skip
        with live_progress(total) as progress:
            summary = send(a.bootstrap, a.topic_transactions, a.topic_labels, stream, schedule, opts, a.count,
                           a.duration, progress=progress)
    if a.json:
        print(json.dumps(summary.as_dict()))
    else:
        from ops.loadgen.display import print_summary

        print_summary(summary, schedule)
    if stop - a.skip > summary.transactions and a.count is not None and summary.transactions < a.count:
        print(f"note: the history ran out after {summary.transactions} transactions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
