"""Event-time replay of a history: transactions keyed by customer, labels keyed by terminal,
each label published when the replay reaches its ``reported_at`` (when the feedback became known),
its JSON carrying ``reported_at``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson
from kafka import KafkaProducer

from schemas.kafka_auth import KafkaAuth
from trainer.simulate import History, Labels

TX, LABEL = 1, 0  # on equal times a label goes first: it had arrived when the transaction happened


@dataclass(frozen=True)
class Event:
    time_ms: int
    kind: int
    key: bytes
    value: bytes


def transaction_value(tx_id: str, ts: int, customer_id: str, terminal_id: str, cents: int) -> bytes:
    return orjson.dumps({"tx_id": tx_id, "ts": ts, "customer_id": customer_id, "terminal_id": terminal_id,
                         "amount": cents / 100})


def label_value(tx_id: str, customer_id: str, terminal_id: str, ts: int, is_fraud: int, reported_at: int) -> bytes:
    """A Label record value (``schemas/Label``): ``is_fraud`` the integer 0 or 1, ``reported_at`` >= ``ts``."""
    return orjson.dumps({"tx_id": tx_id, "customer_id": customer_id, "terminal_id": terminal_id, "ts": ts,
                         "is_fraud": 1 if is_fraud else 0, "reported_at": reported_at})


def events(h: History, labels: Labels | None, start: int = 0, stop: int | None = None) -> Iterator[Event]:
    """Transactions ``start:stop`` (by index) and the labels reported in that span (``reported_at`` from
    the ``start``-th transaction's ts, before the ``stop``-th's), each at its ``reported_at``."""
    n = len(h.ts)
    stop = n if stop is None else min(stop, n)
    lo = int(h.ts[start]) if 0 < start < n else None
    hi = int(h.ts[stop]) if stop < n else None
    out = [Event(int(h.ts[i]), TX, str(h.customer_id[i]).encode(),
                 transaction_value(str(h.tx_id[i]), int(h.ts[i]), str(h.customer_id[i]), str(h.terminal_id[i]),
                                   int(h.amount_cents[i])))
           for i in range(start, stop)]
    if labels is not None:
        reported = np.asarray(labels.reported_at)
        mask = np.ones(len(reported), dtype=bool)
        if lo is not None:
            mask &= reported >= lo
        if hi is not None:
            mask &= reported < hi
        for j in np.flatnonzero(mask):
            value = label_value(str(labels.tx_id[j]), str(labels.customer_id[j]), str(labels.terminal_id[j]),
                                int(labels.ts[j]), int(labels.is_fraud[j]), int(reported[j]))
            out.append(Event(int(reported[j]), LABEL, str(labels.terminal_id[j]).encode(), value))
    yield from sorted(out, key=lambda e: (e.time_ms, e.kind))


def produce(bootstrap: str, tx_topic: str, label_topic: str, stream: Iterator[Event], linger_ms: int = 5,
            extra: list[tuple[str, bytes | None, bytes]] | None = None) -> tuple[int, int]:
    """Send every event (and ``extra`` raw (topic, key, value) records) and wait for all acks."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **KafkaAuth.from_env().kafka_python(), acks="all",
                             linger_ms=linger_ms,
                             batch_size=256 * 1024, compression_type=None)
    n_tx = n_lab = 0
    try:
        for e in stream:
            producer.send(tx_topic if e.kind == TX else label_topic, key=e.key, value=e.value)
            if e.kind == TX:
                n_tx += 1
            else:
                n_lab += 1
        for topic, key, value in extra or []:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
    finally:
        producer.close()
    return n_tx, n_lab
