"""``python -m ops.loadgen``: replay simulated or Parquet transactions into Kafka.

Transactions are keyed by customer id, labels by terminal id; a label's JSON carries its
``reported_at`` (when the feedback became known) and is sent when the replay reaches it. As fast
as possible, at a constant ``--rate`` or in ``--steps``; for ``--count`` transactions or
``--duration`` seconds. Every record's Kafka timestamp is the wall clock at send. Every flag has an
env variable (see ``--help``). Prints what it sent (JSON on stdout with ``--json``).

Two kinds of time:

- **replay** (default): the history's own event times, compressed: ``ts`` is the simulated (or
  file) time, and a simulated day passes in about a second at the demo's rates. For drains.
- **live** (``--live``): event time = the wall clock, as in production. The first
  ``--history-days`` days (from ``--skip``) are shifted to end *now* (the last one's ``ts`` = now)
  and sent at once as warm-up, their labels with them when already reported; the labels reported
  after now are held back and sent when the clock reaches their ``reported_at``. Then the
  transactions that follow are sent at ``--rate``/``--steps`` (unpaced without), each with ``ts`` =
  the clock at send; a label of one of them keeps its report delay (``reported_at`` = its new ``ts``
  + the delay) and is sent when due, if the run lasts that long. ``--count``, ``--duration`` and
  the steps bound the live phase; the history is always sent whole. A simulated history too short
  for the live phase's ``--count`` (or rate x duration) is simulated again with twice the days
  until it fits (a note on stderr; ``live.days`` in the summary). ``--clock-offset-ms`` moves the
  clock: event time = wall clock + offset (the Kafka timestamps stay the wall clock), e.g. so that
  a short run crosses a UTC midnight. A worker fed a positive offset must allow it:
  ``python -m workers --max-future-ms`` >= the offset plus a margin (its default, an hour, covers
  offsets up to about 59 minutes). ``--hold-after-history``: after the history is acknowledged,
  print one JSON line ``{"history": {...}}`` on stdout and wait for a line on stdin before the live
  phase (``ops.demo`` waits there for the warm-up to be scored). The summary's counts are the live
  phase's; ``live`` holds the history's and the held labels' (``labels_not_due``: not due when the
  run ended, never sent).

Drift (``--drift-from-day N``): from the history's N-th day on, the amounts are multiplied by
``--drift-factor`` (``--drift-kind amount``: a currency change, a new merchant mix; the ground truth
unchanged) or more terminals are compromised each day (``--drift-kind fraud``: a new fraud wave), in
either time mode; the labels follow the drifted history. ``ops/loadgen/drift.py`` has the rules, as
pure functions that tests apply offline. ``fraud`` needs the simulator (a labels file would not know
the new frauds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import FraudstreamError
from schemas.replication import parse_factor
from schemas.settings import add, non_negative_float, non_negative_int, positive_int

if TYPE_CHECKING:
    from ops.loadgen.schedule import Schedule
    from ops.loadgen.send import ProducerOptions, Summary
    from trainer.simulate import History, Labels

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
    add(p, "--label-delay-days", "FRAUDSTREAM_LOADGEN_LABEL_DELAY_DAYS", None,
        "simulated labels reported this many days after their transaction (else the simulator's delays: "
        "1-7 days mostly, a tail beyond); a labels file without reported_at: ts + this (else 7)", positive_int)
    add(p, "--live", "FRAUDSTREAM_LOADGEN_LIVE", False,
        "live time: event time = wall clock; the history shifted to end now and sent at once, then live "
        "transactions (see above)", _flag)
    add(p, "--history-days", "FRAUDSTREAM_LOADGEN_HISTORY_DAYS", None,
        "--live: days of history (from the first day) sent as warm-up before the live phase", non_negative_int,
        shown="37 with --live")
    add(p, "--clock-offset-ms", "FRAUDSTREAM_LOADGEN_CLOCK_OFFSET_MS", None,
        "--live: event time = wall clock + this (the worker needs --max-future-ms above a positive offset)", int,
        shown="0")
    add(p, "--hold-after-history", "FRAUDSTREAM_LOADGEN_HOLD_AFTER_HISTORY", False,
        "--live: after the history, print {\"history\": ...} on stdout and wait for a line on stdin", _flag)
    add(p, "--drift-from-day", "FRAUDSTREAM_LOADGEN_DRIFT_FROM_DAY", None,
        "inject drift from this day of the history on (counted from its first day; see above)", non_negative_int)
    add(p, "--drift-kind", "FRAUDSTREAM_LOADGEN_DRIFT_KIND", "amount",
        "with --drift-from-day: amount (amounts x --drift-factor) | fraud (terminal compromises a day x the factor)")
    add(p, "--drift-factor", "FRAUDSTREAM_LOADGEN_DRIFT_FACTOR", 2.0, "with --drift-from-day: how strong",
        non_negative_float)
    add(p, "--skip", "FRAUDSTREAM_LOADGEN_SKIP", 0, "start at this transaction index of the history", int)
    add(p, "--count", "FRAUDSTREAM_LOADGEN_COUNT", None, "stop after this many transactions", positive_int)
    add(p, "--duration", "FRAUDSTREAM_LOADGEN_DURATION_S", None, "stop after this many seconds", non_negative_float)
    add(p, "--rate", "FRAUDSTREAM_LOADGEN_RATE", None, "constant target rate, transactions/s (else unpaced)",
        non_negative_float)
    add(p, "--steps", "FRAUDSTREAM_LOADGEN_STEPS", None, "rate steps rate:seconds,... e.g. 1000:10,2000:10")
    add(p, "--client", "FRAUDSTREAM_LOADGEN_CLIENT", "aiokafka",
        "producer client: aiokafka (batches per partition, ~10x faster here) | kafka-python")
    add(p, "--acks", "FRAUDSTREAM_LOADGEN_ACKS", "all", "producer acks: all | 1 | 0 (all: idempotent too)")
    add(p, "--replication-factor", "FRAUDSTREAM_REPLICATION_FACTOR", "auto",
        "replication factor of the input topics created when missing; auto: 3 on a cluster of three brokers or more, "
        "else 1 (min.insync.replicas 2 with 3 or more), as the worker does", parse_factor)
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
    for switch in ("--no-labels", "--quiet", "--json", "--live", "--hold-after-history"):
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
    if a.drift_from_day is not None and a.drift_kind == "fraud" and a.transactions is not None:
        raise ValueError("--drift-kind fraud needs the simulator: a labels file does not know the new frauds")
    if not a.live:
        for name, value in (("--history-days", a.history_days), ("--clock-offset-ms", a.clock_offset_ms),
                            ("--hold-after-history", a.hold_after_history or None)):
            if value is not None:
                raise ValueError(f"{name} needs --live")
    limit = a.count
    if limit is None and schedule.total is not None:
        limit = int(schedule.total) + 1
    if limit is None and a.rate and a.duration is not None:
        limit = int(a.rate * a.duration) + 1
    h, labels, days = _history(a, limit)
    ensure_topics(a.bootstrap, [a.topic_transactions, a.topic_labels], a.partitions, replication=a.replication_factor)
    opts = ProducerOptions(acks=a.acks, linger_ms=a.linger_ms, batch_size=a.batch_size,
                           compression=None if a.compression == "none" else a.compression, client=a.client)
    if a.live:
        return _run_live(a, h, None if a.no_labels else labels, days, limit, schedule, opts)
    stop = min(len(h), a.skip + limit) if limit is not None else len(h)
    stream = events(h, None if a.no_labels else labels, a.skip, stop)
    if a.quiet:
        summary = send(a.bootstrap, a.topic_transactions, a.topic_labels, stream, schedule, opts, a.count, a.duration)
    else:
        from ops.loadgen.display import live_progress

        total = stop - a.skip
        with live_progress(total) as progress:
            summary = send(a.bootstrap, a.topic_transactions, a.topic_labels, stream, schedule, opts, a.count,
                           a.duration, progress=progress)
    _report(a, summary, schedule)
    if stop - a.skip > summary.transactions and a.count is not None and summary.transactions < a.count:
        print(f"note: the history ran out after {summary.transactions} transactions", file=sys.stderr)
    return 0


def _history(a: argparse.Namespace, limit: int | None) -> tuple[History, Labels, int | None]:
    """The history and its labels; in live mode a simulated one long enough for ``limit`` live transactions
    (its days doubled until it is), with the days simulated."""
    if a.transactions is not None:
        from ops.loadgen.source import from_files

        h, labels = from_files(a.transactions, a.labels, a.label_delay_days)
        if a.drift_from_day is not None:
            h = _drifted(a, h)
        return h, labels, None
    from ops.loadgen.live import HISTORY_DAYS, first_index_of_day
    from ops.loadgen.source import simulated
    from trainer.simulate import SimConfig

    days = a.days
    while True:
        h, labels = simulated(SimConfig(a.customers, a.terminals, days, a.start, a.seed), a.label_delay_days,
                              None if a.drift_from_day is None else lambda h: _drifted(a, h))
        if not a.live or limit is None or days > 3650:
            break
        split = max(a.skip, first_index_of_day(h, HISTORY_DAYS if a.history_days is None else a.history_days))
        if len(h) - split >= limit:
            break
        days *= 2
    if days != a.days:
        print(f"note: --live needs {limit:,} transactions after the history; simulated {days} days instead of "
              f"--days {a.days}", file=sys.stderr)
    return h, labels, days


def _drifted(a: argparse.Namespace, h: History) -> History:
    from ops.loadgen.drift import inject

    return inject(h, a.drift_kind, a.drift_from_day, a.drift_factor, a.seed)


def _run_live(a: argparse.Namespace, h: History, labels: Labels | None, days: int | None, limit: int | None,
              schedule: Schedule, opts: ProducerOptions) -> int:
    from ops.loadgen.live import HISTORY_DAYS, first_index_of_day, now_ms, plan, send_live

    offset = a.clock_offset_ms or 0
    split = max(a.skip, first_index_of_day(h, HISTORY_DAYS if a.history_days is None else a.history_days))
    stop = min(len(h), split + limit) if limit is not None else len(h)
    p = plan(h, labels, now_ms(offset), a.skip, split, stop)
    hold = _hold if a.hold_after_history else None
    if a.quiet:
        summary = send_live(a.bootstrap, a.topic_transactions, a.topic_labels, p, schedule, opts, a.count,
                            a.duration, offset, hold)
    else:
        from ops.loadgen.display import live_mode_progress

        with live_mode_progress(len(p.history), stop - split) as (hist_progress, progress):
            summary = send_live(a.bootstrap, a.topic_transactions, a.topic_labels, p, schedule, opts, a.count,
                                a.duration, offset, hold, progress, hist_progress)
    assert summary.live is not None
    summary.live["days"] = days
    _report(a, summary, schedule)
    if a.count is not None and p.live_transactions < a.count:
        print(f"note: the history ran out after {p.live_transactions} live transactions", file=sys.stderr)
    return 0


def _hold(history: dict[str, Any]) -> None:
    print(json.dumps({"history": history}), flush=True)
    sys.stdin.readline()


def _report(a: argparse.Namespace, summary: Summary, schedule: Schedule) -> None:
    if a.json:
        print(json.dumps(summary.as_dict()))
    else:
        from ops.loadgen.display import print_summary

        print_summary(summary, schedule)


if __name__ == "__main__":
    sys.exit(main())
