"""Consume -> produce the same bytes -> wait for the acks -> commit, one fetch at a time (the
worker's loop without the worker), with each Python client. Returns records/s from the first fetch
to the last commit."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def _aiokafka(bootstrap: str, src: str, dst: str, n: int, group: str) -> float:
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2,
                                max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    seen, t0 = 0, 0.0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if not batches:
                continue
            t0 = t0 or time.perf_counter()
            futures = []
            for tp, records in batches.items():
                batch = producer.create_batch()
                for r in records:
                    if batch.append(key=r.key, value=r.value, timestamp=None) is None:
                        batch.close()
                        futures.append(await producer.send_batch(batch, dst, partition=tp.partition))
                        batch = producer.create_batch()
                        batch.append(key=r.key, value=r.value, timestamp=None)
                batch.close()
                futures.append(await producer.send_batch(batch, dst, partition=tp.partition))
                seen += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        return seen / (time.perf_counter() - t0)
    finally:
        await producer.stop()
        await consumer.stop()


def aiokafka_rate(bootstrap: str, src: str, dst: str, n: int, group: str) -> float:
    """aiokafka: ``getmany`` fetches, ``send_batch`` per partition, acks awaited, then ``commit``."""
    return asyncio.run(_aiokafka(bootstrap, src, dst, n, group))


def confluent_rate(bootstrap: str, src: str, dst: str, n: int, group: str) -> float:
    """confluent-kafka (librdkafka): ``consume(num_messages=2000)``, ``produce`` with a delivery
    callback, ``flush`` (every ack), then an asynchronous ``commit`` of the fetched offsets."""
    from confluent_kafka import Consumer, KafkaException, Producer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 2, "batch.size": 262_144})
    failed: list[object] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    consumer.subscribe([src])
    seen, t0 = 0, 0.0
    try:
        while seen < n:
            msgs = consumer.consume(num_messages=2000, timeout=0.5)
            if not msgs:
                continue
            t0 = t0 or time.perf_counter()
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                while True:
                    try:
                        producer.produce(dst, m.value(), m.key(), partition=m.partition() or 0, on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.01)
            seen += len(msgs)
            producer.flush()
            if failed:
                raise KafkaException(failed[0])
            consumer.commit(asynchronous=True)
        return seen / (time.perf_counter() - t0)
    finally:
        consumer.close()
