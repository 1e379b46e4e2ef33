"""``python -m ops.docker.init_topics``: create the worker's topics, then exit (compose's topic-init job).

It takes the worker's own settings (every ``python -m workers`` flag and env variable: topic names,
``--partitions``, ``--retention-days``, the Kafka security settings) and calls the worker's
``ensure_topics``, so the topics are exactly those a worker would create at start. Run once before
the workers scale out, it saves N workers racing to create them. A topic that already exists is
left as it is; one with fewer partitions than asked for is reported (Kafka can add partitions, but
that moves keys to other partitions and with them the customers' state, so it is not done here).

Its own options: ``--wait-s``, how long to retry while the broker does not answer yet, while the
cluster has fewer brokers than wanted, or while a topic just created is still described without
partitions (metadata not yet propagated); and ``--min-brokers``, the brokers (alive, not fenced) to
wait for before creating anything. It waits for at least as many as an explicit
``--replication-factor`` needs, and ``--min-brokers 3`` makes ``--replication-factor auto`` pick 3:
a cluster whose nodes start together (compose's ``cluster`` profile) would otherwise get the
topics from whichever brokers had registered first, replicated once when that was one or two.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from schemas.errors import ConfigError, FraudstreamError
from schemas.settings import add, non_negative_float, positive_int

if TYPE_CHECKING:
    from workers.config import Settings

PROG = "python -m ops.docker.init_topics"


def _own_options(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog=PROG, add_help=False)
    add(p, "--wait-s", "FRAUDSTREAM_INIT_WAIT_S", 60.0,
        "seconds to retry while the broker does not answer or the cluster has fewer than --min-brokers brokers",
        non_negative_float)
    add(p, "--min-brokers", "FRAUDSTREAM_INIT_MIN_BROKERS", 1, "brokers (alive, not fenced) to wait for before "
        "creating topics; at least what an explicit --replication-factor needs", positive_int)
    return p


def brokers_wanted(min_brokers: int, replication_factor: int) -> int:
    """The brokers to wait for: ``--min-brokers``, or what ``--replication-factor`` needs (``auto``: 0)."""
    return max(min_brokers, replication_factor)


def broker_count(settings: Settings) -> int:
    """The cluster's brokers that are alive and not fenced (a KRaft broker registered but not caught
    up, or gone, is listed as fenced). Raises ConfigError "cannot reach ..." while Kafka does not answer."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.auth.kafka_python(),
                                 client_id=f"{settings.worker_id}-init", request_timeout_ms=15000,
                                 bootstrap_timeout_ms=15000)
    except KafkaError as exc:
        if "auth" in type(exc).__name__.lower() or "sasl" in str(exc).lower():
            raise ConfigError(f"Kafka at {settings.bootstrap} refused the credentials ({type(exc).__name__}): "
                              f"check FRAUDSTREAM_KAFKA_USERNAME / FRAUDSTREAM_KAFKA_PASSWORD") from exc
        raise ConfigError(f"cannot reach Kafka at {settings.bootstrap} ({exc})") from exc
    try:
        brokers = admin.describe_cluster().get("brokers", ())
    except KafkaError as exc:
        raise ConfigError(f"cannot reach Kafka at {settings.bootstrap}: describing the cluster failed ({exc!r})"
                          ) from exc
    finally:
        admin.close()
    return sum(1 for b in brokers if not b.get("is_fenced", False))


def build_parser() -> argparse.ArgumentParser:
    """The worker's parser plus ``--wait-s``: what ``--help`` shows and what validates the command line."""
    from workers.config import build_parser as worker_parser

    p = worker_parser()
    p.prog = PROG
    p.description = ("create the worker's topics and exit; the worker's flags and env variables (only the "
                     "topic, partition, retention, replication, bootstrap and security settings matter here)")
    return _own_options(p)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        build_parser().parse_args(argv)  # --help, and every flag checked before anything connects
        own, rest = _own_options().parse_known_args(argv)
        from workers.config import parse
        from workers.topics import ensure_topics, topic_specs

        settings = parse(rest)
        need = brokers_wanted(own.min_brokers, settings.replication_factor)
        deadline = time.monotonic() + own.wait_s
        while True:
            try:
                if need > 1:
                    have = broker_count(settings)
                    if have < need:
                        if time.monotonic() >= deadline:
                            print(f"error: Kafka at {settings.bootstrap} has {have} broker(s) alive after "
                                  f"{own.wait_s:g} s; waited for {need} (--min-brokers / --replication-factor)",
                                  file=sys.stderr)
                            return 1
                        print(f"init_topics: {have} of {need} brokers alive at {settings.bootstrap}, waiting",
                              file=sys.stderr, flush=True)
                        time.sleep(2.0)
                        continue
                partitions = ensure_topics(settings)
            except ConfigError as exc:
                if "cannot reach" not in str(exc) or time.monotonic() >= deadline:
                    raise
                print(f"init_topics: waiting for Kafka at {settings.bootstrap}", file=sys.stderr, flush=True)
                time.sleep(2.0)
                continue
            # A topic created a moment ago can be described with no partitions yet: ask again.
            if all(partitions.get(name) for name in topic_specs(settings)) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    except FraudstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = []
    for name, (wanted, _) in topic_specs(settings).items():
        have = partitions.get(name, 0)
        if not have:
            missing.append(name)
        note = "" if have >= wanted else f"  (fewer than the {wanted} asked for: it existed before)"
        print(f"{name}: {have} partitions{note}", flush=True)
    if missing:
        print(f"error: Kafka at {settings.bootstrap} describes no partitions for {', '.join(missing)} after "
              f"{own.wait_s:g} s", file=sys.stderr)
        return 1
    print(f"init_topics: {len(partitions)} topics ready at {settings.bootstrap}", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())
