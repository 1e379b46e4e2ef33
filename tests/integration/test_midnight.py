"""A live stream across a UTC midnight: event time = wall clock (shifted so that midnight falls a minute
into the run), labels reported live and out of order. Nothing is dead-lettered, and the first minute
after midnight is scored as fast as the minute before: no transaction waits for the new day's
terminal state (its label cut-off closed an hour before midnight).
"""

from __future__ import annotations

import random
import time

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from schemas.features import DAY_MS
from tests.integration.harness import Run, output_count, stop, wait_for_scores

pytestmark = pytest.mark.integration

RATE = 100          # transactions a second
SPAN_S = 60         # seconds on each side of midnight
SLACK_MS = 50       # scheduling noise on a shared 2-core machine, on top of the 2x bound


def send_live(bootstrap: str, run: Run, offset_ms: int, seconds: float) -> int:
    """Transactions at RATE with ts = wall clock + offset; a tenth of them labelled 1-3 s later (live)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    rng = random.Random(5)
    pending: list[tuple[float, bytes, bytes]] = []  # (send at, key, label value)
    start = time.time()
    n = 0
    try:
        while time.time() - start < seconds:
            due = int((time.time() - start) * RATE)
            while n < due:
                now = int(time.time() * 1000) + offset_ms
                c, t = f"c{rng.randrange(200)}", f"t{rng.randrange(100)}"
                value = {"tx_id": f"m{n}", "ts": now, "customer_id": c, "terminal_id": t,
                         "amount": round(rng.uniform(1, 300), 2)}
                producer.send(run.topics["transactions"], key=c.encode(), value=orjson.dumps(value))
                if n % 10 == 0:
                    pending.append((time.time() + rng.uniform(1, 3), t.encode(),
                                    orjson.dumps({**{k: value[k] for k in ("tx_id", "ts", "customer_id",
                                                                             "terminal_id")},
                                                  "is_fraud": int(rng.random() < 0.3)})))
                n += 1
            ready = [p for p in pending if p[0] <= time.time()]
            for p in ready:  # reported now: out of transaction-time order by their random delays
                label = {**orjson.loads(p[2]), "reported_at": int(time.time() * 1000) + offset_ms}
                producer.send(run.topics["labels"], key=p[1], value=orjson.dumps(label))
                pending.remove(p)
            time.sleep(0.01)
        producer.flush(30)
    finally:
        producer.close()
    return n


def test_live_stream_crosses_midnight_without_waiting(run: Run, kafka_admin: KafkaAdminClient) -> None:
    # The scores topic stamps each record when the broker appends it: latency = append - send.
    kafka_admin.create_topics([NewTopic(run.topics["scores"], 4, 1,
                                        topic_configs={"message.timestamp.type": "LogAppendTime"})])
    now = int(time.time() * 1000)
    midnight = (now // DAY_MS + 1) * DAY_MS
    offset = midnight - (SPAN_S + 5) * 1000 - now  # midnight falls SPAN_S + 5 s into the run
    run.extra = [*run.extra, "--max-future-ms", str(offset + 3_600_000), "--max-wait-ms", "5"]
    worker = run.start("w1")
    try:
        time.sleep(8)  # the worker joins its groups before the live minute before midnight starts
        sent = send_live(run.bootstrap, run, offset, 2 * SPAN_S + 10)
        scores = wait_for_scores(run, sent, worker, timeout_s=120)
        dead = output_count(run, "dlq")
    finally:
        assert stop(worker) == 0, run.log("w1")[-3000:]
    assert dead == 0, f"{dead} records dead-lettered: {run.log('w1')[-2000:]}"
    assert len({s["tx_id"] for s in scores}) == sent
    ts = np.array([int(s["ts"]) for s in scores])  # type: ignore[call-overload]
    latency = np.array([int(s["_record_ts"]) - int(s["timing"]["input_ts"]) for s in scores])  # type: ignore[call-overload,index]
    before = latency[(ts >= midnight - SPAN_S * 1000) & (ts < midnight)]
    after = latency[(ts >= midnight) & (ts < midnight + SPAN_S * 1000)]
    assert len(before) > RATE * SPAN_S // 2 and len(after) > RATE * SPAN_S // 2
    p99_before, p99_after = np.percentile(before, 99), np.percentile(after, 99)
    assert p99_after <= 2 * p99_before + SLACK_MS, (
        f"p99 {p99_after:.0f} ms in the first minute after midnight vs {p99_before:.0f} ms the minute before")
