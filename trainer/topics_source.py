"""A training history read from the Kafka topics: what ``trainer.data.load_history`` builds from files.

``read_topics`` reads both topics from a start time (``offsets_for_times`` on the records' Kafka
timestamps) up to the end offsets taken when the read starts, so a run reads a fixed slice however
fast the producers are. Every record goes through the worker's own admission:

- transactions: ``workers.batch.admit_batch`` over per-partition ``workers.state.TxPartition``
  states (the batch decoder ``schemas.decode_batch``, the record key must be the customer id, a
  duplicate ``tx_id`` or an event later than the lateness behind its partition's newest is refused;
  a re-driven dead letter counts as its original), with the worker's ``--lateness-ms`` and
  ``--max-future-ms``; each record's Kafka timestamp is its "now", as in the worker;
- labels: ``schemas.decode_batch.decode_labels`` and the label worker's key rule (the key must be
  the terminal id).

A record the worker would dead-letter is skipped and counted under the worker's reason code
(``bad_json``, ``missing_field:amount``, ``key_mismatch`` ...). Then, what the trainer cannot use
from records the worker accepted, also skipped and counted: a second transaction with a tx_id
already read in another partition (``duplicate_tx_id``: the worker dedupes per partition, the
trainer needs unique ids), a label whose transaction was not read (``unknown_tx``: it happened before
the read's start, or was itself skipped) and a label whose customer, terminal or time disagree with
its transaction's (``label_disagrees``). Transactions older than the event-time window (``days``
whole UTC days ending with the newest event's day) are left out with their labels and counted as
``outside_window``: in a replay the Kafka timestamps say when it was replayed, not when it happened.

The columns then go through ``trainer.data``'s own assembly (``_assemble``): the same dtypes, the
same (ts, tx_id) order of the history and (reported_at, tx_id) order of the labels, and the same
final word per transaction (the label with the latest ``reported_at``, fraud winning a tie; the
history's ``is_fraud``), as ``load_history`` gives for the same rows written to Parquet files.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from schemas.errors import ConfigError
from schemas.kafka_auth import KafkaAuth
from trainer.data import DEFAULT_FEEDBACK_DELAY_DAYS, DataQualityError, LoadReport, _assemble
from trainer.simulate import DAY_MS, History, Labels

Log = Callable[[str], None]
POLL_RECORDS = 10_000
STALL_S = 60.0  # no record for this long while short of the end offsets: the read fails
UNKNOWN_TX = "unknown_tx"
LABEL_DISAGREES = "label_disagrees"
DUPLICATE = "duplicate_tx_id"
REDELIVERED = "redelivered"  # a re-driven dead letter of a transaction already read: the same record


@dataclass
class TopicCount:
    """What was read from one topic: records, accepted, skipped by reason, the Kafka timestamps seen."""

    topic: str
    partitions: int = 0
    records: int = 0
    accepted: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    outside_window: int = 0
    first_record_ms: int | None = None
    last_record_ms: int | None = None

    def seen(self, timestamps: list[int]) -> None:
        if timestamps:
            lo, hi = min(timestamps), max(timestamps)
            self.first_record_ms = lo if self.first_record_ms is None else min(lo, self.first_record_ms)
            self.last_record_ms = hi if self.last_record_ms is None else max(hi, self.last_record_ms)

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partitions": self.partitions, "records": self.records,
                "accepted": self.accepted, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": sum(self.skipped.values()), "outside_window": self.outside_window,
                "first_record": _iso(self.first_record_ms), "last_record": _iso(self.last_record_ms)}

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        return (f"{self.topic}: {self.records} records, {self.accepted} used, {skipped} skipped"
                f"{f' ({why})' if why else ''}, {self.outside_window} outside the window")


@dataclass(frozen=True)
class TopicsData:
    """The history and labels read, as ``load_history`` would give them, and what was read to get them."""

    history: History
    labels: Labels
    report: LoadReport
    transactions: TopicCount
    label_records: TopicCount
    since_ms: int                 # Kafka timestamps from here on were read
    window: tuple[int, int]       # event-time window of the history, [start, end) epoch ms
    seconds: float

    def to_json(self) -> dict[str, Any]:
        h, lab = self.history, self.labels
        return {
            "read_since": _iso(self.since_ms), "seconds": round(self.seconds, 2),
            "window": {"start": _iso(self.window[0]), "end": _iso(self.window[1])},
            "history": {"transactions": len(h), "frauds": int(h.is_fraud.sum()), "labels": len(lab),
                        "unlabelled": self.report.unlabelled,
                        "first_ts": _iso(int(h.ts[0])), "last_ts": _iso(int(h.ts[-1])),
                        "first_reported_at": _iso(int(lab.reported_at[0])) if len(lab) else None,
                        "last_reported_at": _iso(int(lab.reported_at[-1])) if len(lab) else None},
            "topics": {"transactions": self.transactions.to_json(), "labels": self.label_records.to_json()},
        }


def read_topics(bootstrap: str, auth: KafkaAuth, tx_topic: str, label_topic: str, since_ms: int, days: int, *,
                lateness_ms: int = 600_000, max_future_ms: int = 3_600_000, log: Log | None = None,
                client_id: str = "fraudstream-retrain") -> TopicsData:
    """Both topics from ``since_ms`` (Kafka timestamps) to their end offsets now; the transactions of the last
    ``days`` UTC days of event time (ending with the newest's day) and their labels, as History and Labels.
    ``DataQualityError`` when nothing usable was read."""
    t0 = time.monotonic()
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id, group_id=None,
                                 enable_auto_commit=False, max_poll_records=POLL_RECORDS, **auth.kafka_python())
    except KafkaError as exc:
        raise ConfigError(f"the broker at {bootstrap} does not answer ({exc!r})") from exc
    try:
        # Both ends first: the read is the slice that existed when it started.
        tx_plan = _plan(consumer, tx_topic, since_ms)
        label_plan = _plan(consumer, label_topic, since_ms)
        txs = _read_transactions(consumer, tx_topic, tx_plan, lateness_ms, max_future_ms)
        labs = _read_labels(consumer, label_topic, label_plan, max_future_ms)
    except KafkaError as exc:
        raise ConfigError(f"reading {tx_topic} and {label_topic} from {bootstrap} failed ({exc!r})") from exc
    finally:
        consumer.close()
    data = _build(txs, labs, days, tx_topic, label_topic, since_ms, time.monotonic() - t0)
    if log is not None:
        log(f"read {data.transactions.line()}")
        log(f"read {data.label_records.line()}")
    return data


# -- reading ---------------------------------------------------------------------------------


Plan = list[tuple[TopicPartition, int, int]]  # (partition, first offset, end offset)


def _plan(consumer: KafkaConsumer, topic: str, since_ms: int) -> Plan:
    parts = sorted(consumer.partitions_for_topic(topic) or ())
    if not parts:
        raise ConfigError(f"topic {topic!r} does not exist on the broker (or is not readable)")
    tps = [TopicPartition(topic, p) for p in parts]
    ends = consumer.end_offsets(tps)
    found = consumer.offsets_for_times({tp: since_ms for tp in tps})
    plan = []
    for tp in tps:
        at = found.get(tp)
        plan.append((tp, ends[tp] if at is None else min(at.offset, ends[tp]), ends[tp]))
    return plan


def _batches(consumer: KafkaConsumer, plan: Plan) -> Iterator[tuple[int, list[Any]]]:
    """(partition, its records in offset order) a fetch at a time, each partition up to its end offset."""
    todo = [(tp, start, end) for tp, start, end in plan if start < end]
    if not todo:
        return
    consumer.assign([tp for tp, _, _ in todo])
    for tp, start, _ in todo:
        consumer.seek(tp, start)
    ends = {tp: end for tp, _, end in todo}
    last = time.monotonic()
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        got = consumer.poll(timeout_ms=500)
        if got:
            last = time.monotonic()
        elif time.monotonic() - last > STALL_S:
            raise ConfigError(f"reading {todo[0][0].topic}: no record for {STALL_S:.0f}s short of its end offsets")
        for tp, records in got.items():
            inside = [r for r in records if r.offset < ends[tp]]
            if inside:
                yield tp.partition, inside
        for tp, end in ends.items():  # a partition at its end stops fetching
            if tp not in consumer.paused() and consumer.position(tp) >= end:
                consumer.pause(tp)


@dataclass
class _Columns:
    count: TopicCount
    parts: dict[str, list[npt.NDArray[Any]]] = field(default_factory=dict)

    def add(self, **cols: list[Any]) -> None:
        for name, values in cols.items():
            kind = np.str_ if values and isinstance(values[0], str) else np.int64
            self.parts.setdefault(name, []).append(np.asarray(values, dtype=kind))

    def column(self, name: str, dtype: Any) -> npt.NDArray[Any]:
        chunks = self.parts.get(name)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)


def _read_transactions(consumer: KafkaConsumer, topic: str, plan: Plan, lateness_ms: int,
                       max_future_ms: int) -> _Columns:
    from workers.batch import Admitted, Record, admit_batch, replay_of
    from workers.state import TxPartition

    out = _Columns(TopicCount(topic, partitions=len(plan)))
    states = {tp.partition: TxPartition(tp.partition, lateness_ms) for tp, _, _ in plan}
    for partition, records in _batches(consumer, plan):
        batch = [Record(partition, r.offset, r.timestamp, r.key, r.value, 0, replay_of(partition, r.headers))
                 for r in records]
        outcomes = admit_batch(batch, states, max_future_ms).outcomes
        states[partition].forget_old()  # the worker's memory bound (its replay does the same)
        out.count.records += len(batch)
        out.count.seen([r.timestamp for r in batch])
        new = [o.tx for o in outcomes if isinstance(o, Admitted) and o.new]
        for o in outcomes:
            if not isinstance(o, Admitted):
                out.count.skipped[o.reason] += 1
            elif not o.new:
                out.count.skipped[REDELIVERED] += 1
        if new:
            out.add(tx_id=[t.tx_id for t in new], ts=[t.ts for t in new], customer_id=[t.customer_id for t in new],
                    terminal_id=[t.terminal_id for t in new], amount=[t.cents for t in new],
                    record_ms=[o.record.timestamp for o in outcomes if isinstance(o, Admitted) and o.new])
    return out


def _read_labels(consumer: KafkaConsumer, topic: str, plan: Plan, max_future_ms: int) -> _Columns:
    from schemas.decode_batch import decode_labels
    from schemas.validate import Reject

    out = _Columns(TopicCount(topic, partitions=len(plan)))
    for _, records in _batches(consumer, plan):
        decoded = decode_labels([r.value for r in records], [r.timestamp for r in records], max_future_ms).outcomes()
        out.count.records += len(records)
        out.count.seen([r.timestamp for r in records])
        ok = []
        for r, got in zip(records, decoded, strict=True):
            if isinstance(got, Reject):
                out.count.skipped[got.reason] += 1
            elif r.key != got.terminal_id.encode():  # the label worker's rule (workers/labels.py)
                out.count.skipped["key_mismatch"] += 1
            else:
                ok.append(got)
        if ok:
            out.add(tx_id=[g.tx_id for g in ok], customer_id=[g.customer_id for g in ok],
                    terminal_id=[g.terminal_id for g in ok], ts=[g.ts for g in ok],
                    is_fraud=[g.is_fraud for g in ok], reported_at=[g.reported_at for g in ok])
    return out


# -- assembling ------------------------------------------------------------------------------


def _build(txs: _Columns, labs: _Columns, days: int, tx_topic: str, label_topic: str, since_ms: int,
           seconds: float) -> TopicsData:
    tx = {name: txs.column(name, np.str_ if "id" in name else np.int64)
          for name in ("tx_id", "ts", "customer_id", "terminal_id", "amount", "record_ms")}
    lab = {name: labs.column(name, np.str_ if "id" in name else np.int64)
           for name in ("tx_id", "customer_id", "terminal_id", "ts", "is_fraud", "reported_at")}
    tx = _unique(tx, txs.count)
    if not len(tx["ts"]):
        raise DataQualityError([f"topic {tx_topic}: no usable transaction since {_iso(since_ms)} "
                                f"({txs.count.line()})"], "nothing to train on")
    newest_day = int(tx["ts"].max()) // DAY_MS
    window = ((newest_day - days + 1) * DAY_MS, (newest_day + 1) * DAY_MS)
    lab = _usable_labels(tx, lab, window[0], labs.count)
    inside = tx["ts"] >= window[0]
    txs.count.outside_window = int((~inside).sum())
    tx = {name: col[inside] for name, col in tx.items()}
    txs.count.accepted = len(tx["ts"])
    labs.count.accepted = len(lab["ts"])
    if not len(lab["ts"]):
        raise DataQualityError([f"topic {label_topic}: no usable label of the {len(tx['ts'])} transactions read "
                                f"({labs.count.line()})"], "nothing to train on")
    lab["is_fraud"] = lab["is_fraud"].astype(np.int8)
    problems: list[str] = []
    loaded = _assemble(tx, lab, f"topic {tx_topic}", f"topic {label_topic}", DEFAULT_FEEDBACK_DELAY_DAYS, problems)
    if loaded is None or problems:
        raise DataQualityError(problems or ["the columns read could not be assembled"], "cannot use this history")
    return TopicsData(loaded.history, loaded.labels, loaded.report, txs.count, labs.count, since_ms, window, seconds)


def _unique(tx: dict[str, npt.NDArray[Any]], count: TopicCount) -> dict[str, npt.NDArray[Any]]:
    """The first transaction of each tx_id by Kafka timestamp (then read order), without the ``record_ms``
    column: the worker refuses a duplicate within its partition only, the trainer's history needs unique ids."""
    ids = tx["tx_id"]
    order = np.lexsort((np.arange(len(ids)), tx["record_ms"], ids))  # by id, then record time, then read order
    dup = np.zeros(len(ids), dtype=bool)
    dup[order[1:][ids[order][1:] == ids[order][:-1]]] = True
    if dup.any():
        count.skipped[DUPLICATE] += int(dup.sum())
    return {name: col[~dup] for name, col in tx.items() if name != "record_ms"}


def _usable_labels(tx: dict[str, npt.NDArray[Any]], lab: dict[str, npt.NDArray[Any]], start_ms: int,
                   count: TopicCount) -> dict[str, npt.NDArray[Any]]:
    """The labels of transactions in the window that agree with them; the others counted by why."""
    n = len(tx["tx_id"])
    by_id = np.argsort(tx["tx_id"], kind="stable")
    sorted_ids = tx["tx_id"][by_id]
    pos = np.minimum(np.searchsorted(sorted_ids, lab["tx_id"]), n - 1)
    known = sorted_ids[pos] == lab["tx_id"]
    row = by_id[pos]
    agrees = known.copy()
    for name in ("customer_id", "terminal_id", "ts"):
        agrees &= lab[name] == tx[name][row]
    inside = known & (tx["ts"][row] >= start_ms)
    for reason, n_bad in ((UNKNOWN_TX, int((~known).sum())), (LABEL_DISAGREES, int((known & ~agrees).sum()))):
        if n_bad:
            count.skipped[reason] += n_bad
    count.outside_window = int((agrees & ~inside).sum())
    keep = agrees & inside
    return {name: col[keep] for name, col in lab.items()}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
