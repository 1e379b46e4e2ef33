"""``python -m ops.clientbench``: the pass-through ceiling of each Python Kafka client, measured side by
side in one run on this machine (runs interleaved, medians quoted), with Kafka's JVM perf tools as
the physical anchor. Records of ``--size`` bytes in a ``--partitions`` topic filled once by the JVM
producer (itself measured); every pass-through reads it all under a fresh group into a fresh topic."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.clientbench", description=__doc__)
    p.add_argument("--bootstrap", default=None, help="a running broker (else one is started)")
    p.add_argument("--records", type=int, default=1_000_000, help="records (default 1 000 000)")
    p.add_argument("--size", type=int, default=200, help="record size in bytes (default 200)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--runs", type=int, default=3, help="interleaved runs of each client (default 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from ops.bench.kafka_io import create_topics
    from ops.clientbench import jvm
    from ops.clientbench.passthrough import aiokafka_rate, confluent_rate

    broker = None
    bootstrap = a.bootstrap
    if not bootstrap:
        from ops.kafka import LocalBroker

        broker = LocalBroker(Path(tempfile.mkdtemp(prefix="fraudstream-clientbench-")) / "kafka")
        bootstrap = broker.start(port=0).bootstrap
    tag = f"cb-{uuid.uuid4().hex[:8]}"
    src = f"{tag}-in"
    rates: dict[str, list[float]] = {"jvm producer": [], "jvm consumer": [], "aiokafka pass-through": [],
                                     "confluent-kafka pass-through": []}
    try:
        create_topics(bootstrap, [src], a.partitions)
        rates["jvm producer"].append(jvm.produce(bootstrap, src, a.records, a.size))
        for run in range(a.runs):
            rates["jvm consumer"].append(jvm.consume(bootstrap, src, a.records))
            for name, measure in (("aiokafka pass-through", aiokafka_rate),
                                  ("confluent-kafka pass-through", confluent_rate)):
                dst = f"{tag}-out-{name.split()[0]}-{run}"
                create_topics(bootstrap, [dst], a.partitions)
                rates[name].append(measure(bootstrap, src, dst, a.records, f"{dst}-g"))
                print(f"[clientbench] run {run}: {name} {rates[name][-1]:,.0f} rec/s", file=sys.stderr)
    finally:
        if broker is not None:
            broker.stop()
    print(f"{a.records:,} records of {a.size} bytes, {a.partitions} partitions, {a.runs} runs (median; all)")
    print("| measurement | records/s (median) | runs |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
