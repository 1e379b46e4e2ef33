"""The scoring core for one micro-batch, with no Kafka in it.

records -> decode + validate -> admit into partition state (idempotent) -> feature rows (float32,
the bundle's order) -> scores -> output messages. Bad records come back as values with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.features import DAY_MS, N_FEATURES, online_row
from schemas.messages import SCHEMA_VERSION
from schemas.validate import Reject, Tx, decode_transaction
from workers.state import Partial, TxPartition
from workers.terminals import TerminalTable


@dataclass(slots=True)
class Record:
    partition: int
    offset: int
    timestamp: int        # the input record's Kafka timestamp, epoch ms
    key: bytes | None
    value: bytes | None
    consumed_at: int      # epoch ms when the worker took it
    replay_of: int | None = None  # the offset this record had before it was dead-lettered and re-driven


def replay_of(partition: int, headers: object) -> int | None:
    """The original offset of a record re-driven by ``ops.dlq replay`` into the same partition."""
    if not headers:
        return None
    h = dict(headers)  # type: ignore[call-overload]
    if "dlq.replayed-from" not in h:
        return None
    try:
        if int(h["dlq.source.partition"]) != partition:
            return None
        return int(h["dlq.source.offset"])
    except (KeyError, ValueError):
        return None


@dataclass(slots=True)
class Admitted:
    record: Record
    tx: Tx
    new: bool             # False: a redelivery of an offset already in state (same features)


@dataclass
class Admission:
    admitted: list[Admitted] = field(default_factory=list)
    dead: list[tuple[Record, Reject]] = field(default_factory=list)
    closures: list[tuple[int, Partial]] = field(default_factory=list)


def needed_day(tx: Tx) -> int:
    """The transaction's day: its features are final once the table is ready through it
    (``TerminalTable.ready_through``: transaction days through ``day - 8``, report slots through ``day``)."""
    return tx.ts // DAY_MS


def admit_one(rec: Record, state: TxPartition, max_future_ms: int) -> Tx | Reject:
    got = decode_transaction(rec.value, rec.timestamp, max_future_ms)
    if isinstance(got, Reject):
        return got
    if rec.key is not None and rec.key != got.customer_id.encode():
        return Reject("key_mismatch", f"record key {rec.key[:80]!r} is not customer_id {got.customer_id!r}")
    # A re-driven dead letter is the same record as its original offset (not a duplicate tx_id).
    outcome = state.admit(got, rec.offset if rec.replay_of is None else rec.replay_of)
    if isinstance(outcome, Reject):
        return outcome
    return got


def admit_batch(records: list[Record], states: dict[int, TxPartition], max_future_ms: int) -> Admission:
    out = Admission()
    for rec in records:
        state = states[rec.partition]
        before = len(state.seen)
        got = admit_one(rec, state, max_future_ms)
        if isinstance(got, Reject):
            out.dead.append((rec, got))
        else:
            out.admitted.append(Admitted(rec, got, new=len(state.seen) > before))
        state.next_offset = rec.offset + 1
    for p in sorted({r.partition for r in records}):
        out.closures.extend((p, partial) for partial in states[p].close_days())
    return out


def feature_rows(admitted: list[Admitted], states: dict[int, TxPartition],
                 table: TerminalTable) -> npt.NDArray[np.float32]:
    rows = np.empty((len(admitted), N_FEATURES), dtype=np.float32)
    windows = table.windows
    for i, a in enumerate(admitted):
        tx = a.tx
        state = states[a.record.partition]
        rows[i] = online_row(tx.ts, tx.tx_id, tx.cents, state.customers[tx.customer_id], tx.terminal_id, windows)
        state.evict_for(tx)
    return rows


class _Timing(msgspec.Struct):
    input_ts: int
    consumed_at: int
    scored_at: int


class _Score(msgspec.Struct):
    """The Score message (schemas/Score.json), field for field in its order."""

    schema_version: int
    tx_id: str
    customer_id: str
    terminal_id: str
    ts: int
    amount: float
    score: float
    threshold: float
    flag: bool
    model_version: str
    worker_id: str
    timing: _Timing


_ENCODER = msgspec.json.Encoder()


def score_messages(ready: list[Admitted], scores: npt.NDArray[np.float32], threshold: float, model_version: str,
                   worker_id: str, scored_at: int) -> list[bytes]:
    """The score messages of a batch, encoded in one call (newline-delimited JSON, split: a newline
    inside a string is always escaped)."""
    structs = [_Score(SCHEMA_VERSION, a.tx.tx_id, a.tx.customer_id, a.tx.terminal_id, a.tx.ts, a.tx.cents / 100,
                      score, threshold, score >= threshold, model_version, worker_id,
                      _Timing(a.record.timestamp, a.record.consumed_at, scored_at))
               for a, score in zip(ready, scores.tolist(), strict=True)]
    return _ENCODER.encode_lines(structs).split(b"\n")[:-1] if structs else []


def score_message(tx: Tx, rec: Record, score: float, threshold: float, model_version: str, worker_id: str,
                  scored_at: int) -> bytes:
    """One score message (the naive baseline's path; the worker encodes whole batches)."""
    return _ENCODER.encode(_Score(SCHEMA_VERSION, tx.tx_id, tx.customer_id, tx.terminal_id, tx.ts, tx.cents / 100,
                                  score, threshold, score >= threshold, model_version, worker_id,
                                  _Timing(rec.timestamp, rec.consumed_at, scored_at)))


def dead_letter_headers(partition: int, offset: int, reject: Reject, topic: str,
                        worker_id: str) -> list[tuple[str, bytes]]:
    """The dead-letter headers (schemas.messages.DEAD_LETTER) of the record at ``topic/partition/offset``."""
    return [
        ("dlq.reason", reject.reason.encode()),
        ("dlq.detail", reject.detail.encode("utf-8", "replace")[:1000]),
        ("dlq.source.topic", topic.encode()),
        ("dlq.source.partition", str(partition).encode()),
        ("dlq.source.offset", str(offset).encode()),
        ("dlq.worker", worker_id.encode()),
    ]
