"""``python -m ops.docker.init_topics``: create the worker's topics, then exit (compose's topic-init job).

It takes the worker's own settings (every ``python -m workers`` flag and env variable: topic names,
``--partitions``, ``--retention-days``, the Kafka security settings) and calls the worker's
``ensure_topics``, so the topics are exactly those a worker would create at start. Run once before
the workers scale out, it saves N workers racing to create them. A topic that already exists is
left as it is; one with fewer partitions than asked for is reported (Kafka can add partitions, but
that moves keys to other partitions and with them the customers' state, so it is not done here).

Only ``--wait-s`` is its own: how long to retry while the broker does not answer yet, or while a
topic just created is still described without partitions (metadata not yet propagated).
"""

from __future__ import annotations

import argparse
import sys
import time

from schemas.errors import ConfigError, FraudstreamError
from schemas.settings import add, non_negative_float

PROG = "python -m ops.docker.init_topics"


def _own_options(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog=PROG, add_help=False)
    add(p, "--wait-s", "FRAUDSTREAM_INIT_WAIT_S", 60.0, "seconds to retry while the broker does not answer",
        non_negative_float)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The worker's parser plus ``--wait-s``: what ``--help`` shows and what validates the command line."""
    from workers.config import build_parser as worker_parser

    p = worker_parser()
    p.prog = PROG
    p.description = ("create the worker's topics and exit; the worker's flags and env variables (only the "
                     "topic, partition, retention, bootstrap and security settings matter here)")
    return _own_options(p)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        build_parser().parse_args(argv)  # --help, and every flag checked before anything connects
        own, rest = _own_options().parse_known_args(argv)
        from workers.config import parse
        from workers.topics import ensure_topics, topic_specs

        settings = parse(rest)
        deadline = time.monotonic() + own.wait_s
        while True:
            try:
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
