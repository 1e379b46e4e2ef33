"""The scoring core for one micro-batch, with no Kafka in it.

records -> decode + validate -> admit into partition state (idempotent) -> feature rows (float32,
the bundle's order) -> scores -> output messages. Bad records come back as values with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.decode_batch import decode_transactions
from schemas.features import (
    CUSTOMER_WINDOWS_MS,
    DAY_MS,
    FAMILIAR_COL,
    N_FEATURES,
    RATIO_COL,
    TERMINAL_WINDOWS_DAYS,
    calendar_columns,
    customer_columns,
    familiar_column,
    terminal_columns,
)
from schemas.messages import SCHEMA_VERSION
from schemas.validate import Reject, Tx, decode_transaction
from workers.explain import Explanation
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
    outcomes: list[Admitted | Reject] = field(default_factory=list)   # per record, in input order
    closures: list[tuple[int, Partial]] = field(default_factory=list)

    @property
    def admitted(self) -> list[Admitted]:
        return [o for o in self.outcomes if isinstance(o, Admitted)]

    @property
    def dead(self) -> list[tuple[Record, Reject]]:
        return [(r, o) for r, o in zip(self.records, self.outcomes, strict=True) if isinstance(o, Reject)]

    records: list[Record] = field(default_factory=list)


def needed_day(tx: Tx) -> int:
    """The transaction's day: its features are final once the table is ready through it
    (``TerminalTable.ready_through``: transaction days through ``day - 8``, report slots through ``day``)."""
    return tx.ts // DAY_MS


def admit_one(rec: Record, state: TxPartition, max_future_ms: int) -> Tx | Reject:
    """The per-record reference of admission: decode, check the key, apply to the partition state."""
    return _apply(rec, decode_transaction(rec.value, rec.timestamp, max_future_ms), state)


def _apply(rec: Record, got: Tx | Reject, state: TxPartition) -> Tx | Reject:
    if isinstance(got, Reject):
        return got
    if rec.key is not None and rec.key != got.customer_id.encode():
        return Reject("key_mismatch", f"record key {rec.key[:80]!r} is not customer_id {got.customer_id!r}")
    # A re-driven dead letter is the same record as its original offset (not a duplicate tx_id).
    outcome = state.admit(got, rec.offset if rec.replay_of is None else rec.replay_of)
    if isinstance(outcome, Reject):
        return outcome
    return got


def admit_batch_reference(records: list[Record], states: dict[int, TxPartition], max_future_ms: int) -> Admission:
    """The per-record reference of ``admit_batch``: each record decoded, checked and applied on its own."""
    out = Admission(records=records)
    for rec in records:
        state = states[rec.partition]
        before = len(state.seen)
        got = admit_one(rec, state, max_future_ms)
        out.outcomes.append(got if isinstance(got, Reject) else Admitted(rec, got, new=len(state.seen) > before))
        state.next_offset = rec.offset + 1
    for p in sorted({r.partition for r in records}):
        states[p].sync()
        out.closures.extend((p, partial) for partial in states[p].close_days())
    return out


def decode_all(records: Sequence[Record], max_future_ms: int) -> list[Tx | Reject]:
    """Every record's transaction or reason, the whole batch decoded at once (``schemas.decode_batch``:
    the reference's results, record for record)."""
    return decode_transactions([r.value for r in records], [r.timestamp for r in records], max_future_ms).outcomes()


def admit_records(records: Sequence[Record], state: TxPartition, max_future_ms: int) -> int:
    """Apply records of one partition to its state (a replay); returns how many were read."""
    if records:
        work: list[Any] = [_key_checked(r, g) for r, g in zip(records, decode_all(records, max_future_ms), strict=True)]
        _admit_rows(list(records), work, list(range(len(records))), state)
        state.sync()
    return len(records)


def admit_batch(records: list[Record], states: dict[int, TxPartition], max_future_ms: int,
                decoded: list[Tx | Reject] | None = None) -> Admission:
    """Admit a batch into partition state: decoded at once, each partition's valid transactions applied
    in one go when they are plainly new (``TxPartition.admit_many``), else record by record in offset
    order (``decoded``: the per-record reference's results, for the tests that compare both)."""
    got = decoded if decoded is not None else decode_all(records, max_future_ms)
    out = Admission(records=records)
    work: list[Any] = [_key_checked(r, g) for r, g in zip(records, got, strict=True)]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        g = groups.get(r.partition)
        if g is None:
            g = groups[r.partition] = []
        g.append(i)
    for p, rows in groups.items():
        _admit_rows(records, work, rows, states[p])
    out.outcomes = work
    for p in sorted({r.partition for r in records}):
        states[p].sync()
        out.closures.extend((p, partial) for partial in states[p].close_days())
    return out


def _key_checked(rec: Record, got: Tx | Reject) -> Tx | Reject:
    if isinstance(got, Tx) and rec.key is not None and rec.key != got.customer_id.encode():
        return Reject("key_mismatch", f"record key {rec.key[:80]!r} is not customer_id {got.customer_id!r}")
    return got


def _admit_rows(records: list[Record], outcomes: list[Any], rows: list[int], state: TxPartition) -> None:
    """The records ``rows`` (of one partition, in offset order): their valid transactions become ``Admitted``."""
    valid = [i for i in rows if isinstance(outcomes[i], Tx)]
    if valid and all(records[i].replay_of is None for i in valid) and state.admit_many(
            [outcomes[i] for i in valid], [records[i].offset for i in valid]):
        for i in valid:
            outcomes[i] = Admitted(records[i], outcomes[i], new=True)
    else:
        for i in valid:
            rec = records[i]
            before = len(state.seen)
            r = state.admit(outcomes[i], rec.offset if rec.replay_of is None else rec.replay_of)
            outcomes[i] = r if isinstance(r, Reject) else Admitted(rec, outcomes[i], new=len(state.seen) > before)
    state.next_offset = records[rows[-1]].offset + 1


def feature_rows(admitted: list[Admitted], states: dict[int, TxPartition],
                 table: TerminalTable) -> npt.NDArray[np.float32]:
    """The feature matrix of a batch, column by column with the trainer's arithmetic
    (``schemas.features``: ``calendar_columns``, ``customer_columns``, ``terminal_columns``); customer
    windows from each partition's columnar store, terminal windows from the table's columnar cells."""
    n = len(admitted)
    out = np.empty((n, N_FEATURES), dtype=np.float64)
    if n == 0:
        return out.astype(np.float32)
    txs = [a.tx for a in admitted]
    ts = np.fromiter((t.ts for t in txs), np.int64, n)
    cents = np.fromiter((t.cents for t in txs), np.int64, n)
    out[:, :3] = calendar_columns(ts, cents)
    c0, c1 = 3, 3 + 2 * len(CUSTOMER_WINDOWS_MS)
    part = np.fromiter((a.record.partition for a in admitted), np.int64, n)
    for p in np.unique(part).tolist():
        rows = np.flatnonzero(part == p)
        state = states[p]
        wins, slots = state.windows([txs[i] for i in rows.tolist()])
        out[rows, c0:c1], out[rows, RATIO_COL] = customer_columns(wins.counts, wins.totals, cents[rows])
        out[rows, FAMILIAR_COL] = familiar_column(wins.familiar)
        state.evict_scored(slots, ts[rows])
    tcounts, tfrauds = table.windows_many([t.terminal_id for t in txs], ts // DAY_MS)
    out[:, c1:c1 + 2 * len(TERMINAL_WINDOWS_DAYS)] = terminal_columns(tcounts, tfrauds)
    return out.astype(np.float32)


class _Timing(msgspec.Struct):
    input_ts: int
    consumed_at: int
    scored_at: int


class _Source(msgspec.Struct):
    partition: int
    offset: int


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
    source: _Source


class _Flag(_Score):
    """The Flag message (schemas/json/Flag.schema.json): the Score message and why (``workers.explain``)."""

    explanation: Explanation


_ENCODER = msgspec.json.Encoder()


def score_messages(ready: list[Admitted], scores: npt.NDArray[np.float32], threshold: float, model_version: str,
                   worker_id: str, scored_at: int) -> list[bytes]:
    """The score messages of a batch, encoded in one call (newline-delimited JSON, split: a newline
    inside a string is always escaped)."""
    structs = [_Score(SCHEMA_VERSION, a.tx.tx_id, a.tx.customer_id, a.tx.terminal_id, a.tx.ts, a.tx.cents / 100,
                      score, threshold, score >= threshold, model_version, worker_id,
                      _Timing(a.record.timestamp, a.record.consumed_at, scored_at),
                      _Source(a.record.partition, a.record.offset))
               for a, score in zip(ready, scores.tolist(), strict=True)]
    return _ENCODER.encode_lines(structs).split(b"\n")[:-1] if structs else []


def flag_messages(flagged: list[Admitted], scores: npt.NDArray[np.float32], explanations: list[Explanation],
                  threshold: float, model_version: str, worker_id: str, scored_at: int) -> list[bytes]:
    """The flags of a batch with their explanations, encoded in one call (as ``score_messages``)."""
    structs = [_Flag(SCHEMA_VERSION, a.tx.tx_id, a.tx.customer_id, a.tx.terminal_id, a.tx.ts, a.tx.cents / 100,
                     score, threshold, score >= threshold, model_version, worker_id,
                     _Timing(a.record.timestamp, a.record.consumed_at, scored_at),
                     _Source(a.record.partition, a.record.offset), e)
               for a, score, e in zip(flagged, scores.tolist(), explanations, strict=True)]
    return _ENCODER.encode_lines(structs).split(b"\n")[:-1] if structs else []


def score_message(tx: Tx, rec: Record, score: float, threshold: float, model_version: str, worker_id: str,
                  scored_at: int) -> bytes:
    """One score message (the naive baseline's path; the worker encodes whole batches)."""
    return _ENCODER.encode(_Score(SCHEMA_VERSION, tx.tx_id, tx.customer_id, tx.terminal_id, tx.ts, tx.cents / 100,
                                  score, threshold, score >= threshold, model_version, worker_id,
                                  _Timing(rec.timestamp, rec.consumed_at, scored_at),
                                  _Source(rec.partition, rec.offset)))


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
