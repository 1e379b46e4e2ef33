"""``make demo``: the local story end to end.

For now (the skeleton): start a local broker on free ports, create the topics, send a few
transactions and read them back, stop the broker. Later issues grow this into
train -> workers -> load -> report.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from ops.kafka import BrokerError, LocalBroker

DEMO_TOPICS = {"transactions": 4, "fraud-labels": 4, "fraud-flags": 4, "scores": 4,
               "latency-stats": 1, "transactions.dlq": 4}


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="fraudstream-demo-"))
    broker = LocalBroker(state / "kafka")
    try:
        t0 = time.monotonic()
        info = broker.start(port=0)
        print(f"[demo] broker ready at {info.bootstrap} in {time.monotonic() - t0:.1f}s (log {broker.log})")
        admin = KafkaAdminClient(bootstrap_servers=info.bootstrap)
        admin.create_topics([NewTopic(n, num_partitions=p, replication_factor=1) for n, p in DEMO_TOPICS.items()])
        admin.close()
        print(f"[demo] topics: {', '.join(f'{n}({p})' for n, p in DEMO_TOPICS.items())}")
        producer = KafkaProducer(bootstrap_servers=info.bootstrap, acks="all")
        sent: list[dict[str, str | int | float]] = []
        for i in range(10):
            tx: dict[str, str | int | float] = {
                "tx_id": uuid.uuid4().hex, "ts": 1522540800000 + i * 60_000, "customer_id": i % 3,
                "terminal_id": 100 + i, "amount": round(10.5 + i * 3.25, 2)}
            producer.send("transactions", key=str(tx["customer_id"]).encode(), value=orjson.dumps(tx)).get(30)
            sent.append(tx)
        producer.close()
        consumer = KafkaConsumer("transactions", bootstrap_servers=info.bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=10000)
        got: list[dict[str, str | int | float]] = []
        for rec in consumer:
            got.append(orjson.loads(rec.value))
            print(f"[demo] read p{rec.partition}@{rec.offset} key={rec.key.decode()} {got[-1]}")
            if len(got) == len(sent):
                break
        consumer.close()
        ok = sorted(str(t["tx_id"]) for t in got) == sorted(str(t["tx_id"]) for t in sent)
        print(f"[demo] sent {len(sent)}, read back {len(got)}: {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    except BrokerError as exc:
        print(f"[demo] error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[demo] interrupted", file=sys.stderr)
        return 130
    finally:
        broker.stop()
        print("[demo] broker stopped")


if __name__ == "__main__":
    sys.exit(main())
