"""The two baselines, on the worker's client stack (aiokafka) and producer settings.

- ``passthrough``: the ceiling. Batch consume -> produce the same bytes -> await every ack.
  No decode, no model: what moving the bytes costs.
- ``naive``: one message at a time, the way a plain Faust agent would: decode and validate
  (``schemas.validate``, labels too), online features (``schemas.features.OnlineState``), LightGBM's own
  ``predict`` on one row, the worker's score message, ``send`` without waiting (as Faust's
  ``topic.send``), acks awaited every ``ack_every`` sends. It reads labels too (terminal state).
  Faust's per-event machinery would only slow it down further, so c/b is conservative.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.features import OnlineState
from schemas.validate import Reject, decode_label, decode_transaction


def producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    """The worker's ``Publisher`` settings."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2,
                            max_batch_size=256 * 1024, client_id=client_id, request_timeout_ms=30000)


async def _assigned(bootstrap: str, topics: list[str], partitions: int) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def passthrough(bootstrap: str, src: str, dst: str, n: int, partitions: int, batch: int = 1000) -> float:
    """Copy ``n`` records of ``src`` to ``dst``; return the seconds it took (first fetch to last ack)."""
    consumer = await _assigned(bootstrap, [src], partitions)
    prod = producer(bootstrap, "bench-ceiling")
    await prod.start()
    done = 0
    t0 = time.perf_counter()
    try:
        while done < n:
            batches = await consumer.getmany(timeout_ms=100, max_records=batch)
            futures = [await prod.send(dst, value=r.value, key=r.key) for recs in batches.values() for r in recs]
            await asyncio.gather(*futures)
            done += len(futures)
    finally:
        await prod.stop()
        await consumer.stop()
    return time.perf_counter() - t0


async def naive(bootstrap: str, tx_topic: str, label_topic: str, dst: str, n: int, model_file: Path,
                threshold: float, partitions: int, ack_every: int = 1000) -> float:
    """Score ``n`` transactions one message at a time; return the seconds it took."""
    import lightgbm as lgb

    from workers.batch import Record, score_message

    booster = lgb.Booster(model_file=str(model_file))
    state = OnlineState(lateness_ms=600_000)
    consumer = await _assigned(bootstrap, [tx_topic, label_topic], partitions)
    prod = producer(bootstrap, "bench-naive")
    await prod.start()
    pending: list[Any] = []
    done = 0
    t0 = time.perf_counter()
    try:
        async for m in consumer:
            if m.topic == label_topic:
                lab = decode_label(m.value, m.timestamp)
                if not isinstance(lab, Reject):
                    state.label(lab.terminal_id, lab.ts, lab.tx_id, bool(lab.is_fraud), lab.reported_at)
                continue
            tx = decode_transaction(m.value, m.timestamp)
            done += 1
            if not isinstance(tx, Reject):
                row = state.transaction(tx.tx_id, tx.ts, tx.customer_id, tx.terminal_id, tx.cents)
                score = float(booster.predict(np.asarray([row], dtype=np.float32), num_threads=1)[0])
                rec = Record(m.partition, m.offset, m.timestamp, m.key, m.value, int(time.time() * 1000))
                msg = score_message(tx, rec, score, threshold, "naive", "naive", int(time.time() * 1000))
                pending.append(await prod.send(dst, value=msg, key=tx.tx_id.encode()))
            if len(pending) >= ack_every or done >= n:
                await asyncio.gather(*pending)
                pending.clear()
            if done >= n:
                break
    finally:
        await prod.stop()
        await consumer.stop()
    return time.perf_counter() - t0
