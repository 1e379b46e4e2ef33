"""``python -m tests.monitor.throughput BOOTSTRAP``: how fast the whole monitor rebuilds a backlog.

A backlog of scores and labels (the simulator's transactions, ``--customers`` a day at about two
transactions each, one model version, every label as the simulator reports it) is published first;
then a monitor starts, becomes active, and reads it all back, computing and publishing every window
on the way. Its own log line says when it caught up: records a second over that time, with the
share the windows cost (``--no-windows`` pushes the clock nowhere: ingest and join only).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from tests.monitor.data import synth
from tests.monitor.harness import Monitors


def publish_fast(bootstrap: str, topics: dict[str, str], events: list[tuple[int, str, dict[str, object]]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 2_000_000})
    for _, kind, msg in events:
        topic, key = (topics["scores"], msg["tx_id"]) if kind == "score" else (topics["labels"], msg["terminal_id"])
        while True:
            try:
                p.produce(topic, key=str(key).encode(), value=orjson.dumps(msg))
                break
            except BufferError:
                p.poll(0.05)
    p.flush()


def main() -> int:
    a = argparse.ArgumentParser()
    a.add_argument("bootstrap")
    a.add_argument("--customers", type=int, default=5000)
    a.add_argument("--days", type=int, default=30)
    a.add_argument("--horizon-days", type=int, default=60)
    a.add_argument("--no-windows", action="store_true", help="a lateness longer than the data: no window closes")
    args = a.parse_args()
    stream = synth(days=args.days, customers=args.customers, terminals=2 * args.customers, seed=3)
    stream.scores = [s for s in stream.scores if s["model_version"] == "v-main"]
    events = stream.events()
    tmp = Path(tempfile.mkdtemp(prefix="monitor-throughput-"))
    m = Monitors(args.bootstrap, tmp, tmp / "bundles", args.horizon_days)
    KafkaAdminClient(bootstrap_servers=args.bootstrap).create_topics(
        [NewTopic(m.topics[n], 4, 1) for n in ("scores", "shadow_scores", "labels")])
    t = time.monotonic()
    publish_fast(args.bootstrap, m.topics, events)
    print(f"published {len(stream.scores)} scores and {len(stream.labels)} labels "
          f"({args.days} days of {args.customers} customers) in {time.monotonic() - t:.1f}s")
    extra = ["--lateness-ms", str(400 * 86_400_000)] if args.no_windows else []
    try:
        m.start("bench", *extra)
        while "rebuilt in" not in m.log("bench"):
            if m.procs["bench"].poll() is not None:
                print(m.log("bench")[-3000:])
                return 1
            time.sleep(0.5)
        line = next(x for x in m.log("bench").splitlines() if "rebuilt in" in x)
        seconds = float(re.search(r"rebuilt in ([0-9.]+)s", line).group(1))  # type: ignore[union-attr]
        n = len(events)
        print(line[line.index("rebuilt"):][:400])
        print(f"{n} records in {seconds:.1f}s: {n / seconds:,.0f} records/s, {len(stream.scores) / seconds:,.0f} "
              f"scores/s{' (no window closed)' if args.no_windows else ''}")
        _, text = m.get("bench", "/metrics")
        print("\n".join(x for x in text.splitlines() if "state_entries" in x or "windows_published_total" in x))
    finally:
        m.stop_all()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
