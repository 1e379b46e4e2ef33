"""``python -m ops.dlq replay``: send dead-lettered records back to their source topic.

Reads the dead-letter topic with its own consumer group (so a second run continues where the
first stopped), keeps the records whose reason matches ``--reason`` (a prefix, repeatable), and
re-produces each one's original key and bytes to its source topic (header ``dlq.source.topic``,
or ``--to-topic``) with a ``dlq.replayed-from`` header naming where it came from. Offsets of the
dead-letter topic are committed only after the re-produced records are acknowledged.
``--dry-run`` reads without a group commit and prints what would be sent, by reason.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from schemas.errors import FraudstreamError
from schemas.kafka_auth import KafkaAuth
from schemas.settings import add, flag


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.dlq", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["replay"])
    add(p, "--bootstrap", "FRAUDSTREAM_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers")
    add(p, "--dlq-topic", "FRAUDSTREAM_TOPIC_DLQ", "transactions.dlq", "the dead-letter topic")
    add(p, "--group", "FRAUDSTREAM_DLQ_GROUP", "fraudstream-dlq-replay", "consumer group of the replayer")
    p.add_argument("--reason", action="append", default=[],
                   help="replay only reasons starting with this (repeatable; default: all)")
    add(p, "--to-topic", "FRAUDSTREAM_DLQ_TO_TOPIC", None, "send here instead of each record's source topic")
    add(p, "--limit", "FRAUDSTREAM_DLQ_LIMIT", 0, "stop after this many records (0: all)", int)
    add(p, "--dry-run", "FRAUDSTREAM_DLQ_DRY_RUN", False, "show what would be replayed, send nothing", flag)
    p.add_argument("--idle-ms", type=int, default=3000, help="stop when nothing arrives for this long")
    return p


def _headers(record: Any) -> dict[str, bytes]:
    return {k: v for k, v in (record.headers or [])}


def replay(args: argparse.Namespace) -> tuple[Counter[str], Counter[str]]:
    """Returns (replayed, skipped) counts by reason."""
    auth = KafkaAuth.from_env().kafka_python()
    consumer = KafkaConsumer(args.dlq_topic, bootstrap_servers=args.bootstrap, **auth, auto_offset_reset="earliest",
                             group_id=None if args.dry_run else args.group, enable_auto_commit=False,
                             consumer_timeout_ms=args.idle_ms)
    producer = None if args.dry_run else KafkaProducer(bootstrap_servers=args.bootstrap, **auth, acks="all",
                                                       linger_ms=5)
    sent: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    try:
        futures = []
        for rec in consumer:
            h = _headers(rec)
            reason = h.get("dlq.reason", b"?").decode(errors="replace")
            if args.reason and not any(reason.startswith(r) for r in args.reason):
                skipped[reason] += 1
                continue
            target = args.to_topic or h.get("dlq.source.topic", b"").decode()
            if not target:
                skipped["no-source-topic"] += 1
                continue
            sent[reason] += 1
            if producer is not None:
                origin = f"{rec.topic}/{rec.partition}/{rec.offset}".encode()
                # The original partition/offset travel along: the worker treats the record as its
                # original (same tx_id, same offset), not as a duplicate at a new offset.
                keep = [(k, h[k]) for k in ("dlq.reason", "dlq.source.partition", "dlq.source.offset") if k in h]
                futures.append(producer.send(target, key=rec.key, value=rec.value,
                                             headers=[("dlq.replayed-from", origin), *keep]))
            if args.limit and sum(sent.values()) >= args.limit:
                break
        if producer is not None:
            for f in futures:
                f.get(timeout=60)  # acknowledged before the DLQ offsets move
            consumer.commit()
    except KafkaError as exc:
        raise FraudstreamError(f"replay failed ({exc}); nothing was committed, it is safe to run again") from exc
    finally:
        if producer is not None:
            producer.close()
        consumer.close()
    return sent, skipped


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        sent, skipped = replay(args)
    except FraudstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {sum(sent.values())} records; skipped {sum(skipped.values())}")
    for reason, n in sorted(sent.items()):
        print(f"  {verb}: {reason}: {n}")
    for reason, n in sorted(skipped.items()):
        print(f"  skipped: {reason}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
