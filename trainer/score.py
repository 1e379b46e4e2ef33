"""``python -m trainer score``: every transaction of a Parquet history scored by a deployed bundle.

For backfills and audits: what would the model have said about these transactions? A row's score is
the one :func:`trainer.export.offline_scores` gives — the offline features
(``schemas.features.offline_features`` through :func:`trainer.simulate.history_features`) into the
bundle's ONNX graph on ONNX Runtime's CPU provider (:func:`trainer.export.onnx_scores`) — which is
what the worker publishes for the same transactions and labels (within 1e-5; the integration tests
hold it to that, ``tests/integration/test_worker.py``). Nothing here computes a feature or a score of
its own: this module reads, orders, chunks and writes.

Why in chunks: the features need the whole history at once (30-day windows behind a 7-day delay), so
they are computed in one pass; inference and writing then go ``chunk_rows`` rows at a time, one ONNX
Runtime call and one Parquet row group each, so progress can be reported per chunk and the output
never sits whole in memory beside the features.

Without labels the terminal risk features see no fraud (every terminal fraud count is 0): the scores
are those of a worker that never received a label. The log says so, and so does the file's metadata.

The output (:data:`SCHEMA`), in the input file's row order: ``tx_id``, ``customer_id``,
``terminal_id``, ``ts`` (epoch ms), ``amount``, ``score`` (float32, as the worker publishes it),
``flag`` (``score >= threshold``, compared as the worker does: the float32 score widened to float64),
``model_version``, ``threshold``. It is written to a temporary file beside ``out`` and renamed over
it: a reader sees the old file or the whole new one, never a part.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.bundle import Bundle
from schemas.errors import FraudstreamError
from schemas.features import FEATURE_VERSION
from trainer.data import (
    TX_COLUMNS,
    TX_REQUIRED,
    WARM_UP_DAYS,
    DataQualityError,
    Now,
    _check_transactions,
    _read_columns,
    load_history,
)
from trainer.export import onnx_scores
from trainer.simulate import DAY_MS, History, Ints, Labels, Strs, history_features

METADATA_KEY = b"fraudstream"
SCHEMA = pa.schema([
    ("tx_id", pa.string()),
    ("customer_id", pa.string()),
    ("terminal_id", pa.string()),
    ("ts", pa.int64()),
    ("amount", pa.float64()),
    ("score", pa.float32()),
    ("flag", pa.bool_()),
    ("model_version", pa.string()),
    ("threshold", pa.float64()),
])
NO_LABELS = "no labels: the terminal risk features see no fraud (as a worker that never received a label)"

Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (stage "read" | "score", rows done, rows in all)


@dataclass(frozen=True)
class Input:
    """A history to score, its labels, and where each input row is in it."""

    history: History  # canonical (ts, tx_id) order, as trainer.data builds it
    labels: Labels  # empty when no labels file was given
    rows: Ints  # rows[i]: the history row of the file's row i
    labelled: bool
    report: str


@dataclass(frozen=True)
class Summary:
    """What :func:`score_history` did, for the one-line summary and the README's measurements."""

    out: Path
    rows: int
    flags: int
    seconds: float
    stages: dict[str, float]  # read, features, score (inference and writing)

    def line(self) -> str:
        rate = self.flags / self.rows if self.rows else 0.0
        speed = self.rows / self.seconds if self.seconds > 0 else 0.0
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stages.items())
        return (f"scored {self.rows:,} rows: {self.flags:,} flags ({rate:.3%}) in {self.seconds:.1f}s, "
                f"{speed:,.0f} rows/s ({stages})")


def score_history(bundle: Bundle, transactions: Path, labels: Path | None, out: Path, *,
                  chunk_rows: int, now: Now | None = None, log: Log = lambda _: None,
                  progress: Progress | None = None) -> Summary:
    """Score every transaction of ``transactions`` with ``bundle`` (features with the labels of
    ``labels``, none when it is None) and write :data:`SCHEMA` rows to ``out`` in the file's order,
    ``chunk_rows`` rows per ONNX Runtime call and row group."""
    if out.is_dir():
        raise FraudstreamError(f"{out} is a directory: name the scores file to write, e.g. {out / 'scores.parquet'}")
    t0 = time.monotonic()
    data = load(transactions, labels, now, progress)
    log(f"loaded {transactions}{f', {labels}' if labels else ''} ({time.monotonic() - t0:.1f}s): {data.report}")
    if not data.labelled:
        log(f"warning: {NO_LABELS}")
    partial = warm_up_rows(data.history)
    if partial:
        log(f"warning: {partial:,} transactions of the first {WARM_UP_DAYS} days have partial feature windows "
            f"(a worker that saw the days before them would score them otherwise)")
    t1 = time.monotonic()
    x = history_features(data.history, data.labels)
    t2 = time.monotonic()
    log(f"features: {x.shape[0]:,} rows x {x.shape[1]} ({t2 - t1:.1f}s)")
    flags = write_scores(bundle, data, x, out, chunk_rows, _metadata(bundle, transactions, labels), progress)
    t3 = time.monotonic()
    return Summary(out, len(data.rows), flags, t3 - t0, {"read": t1 - t0, "features": t2 - t1, "score": t3 - t2})


def load(transactions: Path, labels: Path | None, now: Now | None = None,
         progress: Progress | None = None) -> Input:
    """Read and check the files as the trainer does (``trainer.data``; a :class:`DataQualityError` lists
    every problem); without ``labels``, the transactions alone with an empty label set."""
    read = None if progress is None else (lambda done, total: progress("read", done, total))
    if labels is not None:
        loaded = load_history(transactions, labels, now=now, progress=read)
        h = loaded.history
        return Input(h, loaded.labels, input_rows(h, _file_ids(transactions)), True, str(loaded.report))
    h, ids = _transactions_only(transactions, now or Now(int(time.time() * 1000)), read)
    return Input(h, no_labels(), input_rows(h, ids), False, f"{len(h)} transactions, no labels")


def _transactions_only(path: Path, now: Now, progress: Callable[[int, int], None] | None) -> tuple[History, Strs]:
    """The transactions file alone, read and checked by ``trainer.data``'s own reader and row checks
    (``load_history`` needs a labels file), in canonical (ts, tx_id) order; and its ids in file order."""
    problems: list[str] = []
    tx = _read_columns(path, TX_COLUMNS, problems, now, progress)
    if tx is not None:
        _check_transactions(tx, str(path), problems)
    if tx is None or problems or any(name not in tx for name in TX_REQUIRED):
        raise DataQualityError(problems, "cannot use this history")
    n = len(tx["tx_id"])
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(tx["tx_id"], kind="stable")] = np.arange(n)
    order = np.lexsort((rank, tx["ts"]))  # (ts, tx_id), as trainer.data orders a history
    zeros = np.zeros(n, dtype=np.int8)  # the truth columns: no feature reads them
    h = History(tx_id=tx["tx_id"][order], ts=tx["ts"][order], customer_id=tx["customer_id"][order],
                terminal_id=tx["terminal_id"][order], amount_cents=tx["amount"][order],
                is_fraud=tx.get("is_fraud", zeros)[order], scenario=tx.get("scenario", zeros)[order])
    return h, tx["tx_id"]


def no_labels() -> Labels:
    """The empty label set: no label event, so every terminal fraud count is 0."""
    s, i = np.zeros(0, dtype=np.str_), np.zeros(0, dtype=np.int64)
    return Labels(tx_id=s, customer_id=s, terminal_id=s, ts=i, is_fraud=np.zeros(0, dtype=np.int8), reported_at=i)


def _file_ids(path: Path) -> Strs:
    """The ``tx_id`` column of a transactions file in row order, as strings (as ``trainer.data`` reads it)."""
    column = pq.read_table(path, columns=["tx_id"]).column("tx_id")
    return np.asarray(column.cast(pa.string()).to_numpy()).astype(np.str_)


def input_rows(h: History, ids: Strs) -> Ints:
    """For each of the file's ids (unique: the checks refuse duplicates), its row in ``h``."""
    by_id = np.argsort(h.tx_id, kind="stable")
    rows = by_id[np.minimum(np.searchsorted(h.tx_id, ids, sorter=by_id), max(len(h) - 1, 0))]
    if len(ids) != len(h) or not np.array_equal(h.tx_id[rows], ids):
        raise FraudstreamError("the transactions file changed while it was read: score it again")
    return rows.astype(np.int64)


def warm_up_rows(h: History) -> int:
    """Transactions within the features' look-back of the history's first one: their windows are partial."""
    return int(np.searchsorted(h.ts, int(h.ts[0]) + WARM_UP_DAYS * DAY_MS, side="left")) if len(h) else 0


def chunks(n: int, chunk_rows: int) -> list[slice]:
    """``n`` rows in nearly equal parts of at most ``chunk_rows``: no small last part (ONNX Runtime's tree
    ensemble parallelises a small batch over trees instead of rows, which could round otherwise)."""
    parts = max(1, -(-n // chunk_rows))
    return [slice(a, b) for a, b in pairwise(i * n // parts for i in range(parts + 1))]


def write_scores(bundle: Bundle, data: Input, x: npt.NDArray[np.float32], out: Path, chunk_rows: int,
                 metadata: dict[bytes, bytes], progress: Progress | None = None) -> int:
    """Score the feature rows ``x`` chunk by chunk in the file's row order, one row group each, into
    ``out`` (atomically); return the number of flags."""
    flags, done, n = 0, 0, len(data.rows)
    with _atomic(out) as tmp, pq.ParquetWriter(tmp, SCHEMA.with_metadata(metadata)) as writer:
        for part in chunks(n, chunk_rows):
            rows = data.rows[part]
            scores = onnx_scores(bundle.onnx_path, x[rows])
            table = score_table(data.history, rows, scores, bundle.model_version, bundle.threshold)
            writer.write_table(table)
            flags += int(np.count_nonzero(table.column("flag").to_numpy()))
            done += len(rows)
            if progress is not None:
                progress("score", done, n)
    return flags


def score_table(h: History, rows: Ints, scores: npt.NDArray[np.float32], model_version: str,
                threshold: float) -> pa.Table:
    """:data:`SCHEMA` rows for the history rows ``rows`` and their scores. The flag is the worker's
    comparison: the float32 score as a float64 against the float64 threshold."""
    n = len(rows)
    return pa.table({
        "tx_id": pa.array(h.tx_id[rows], pa.string()),
        "customer_id": pa.array(h.customer_id[rows], pa.string()),
        "terminal_id": pa.array(h.terminal_id[rows], pa.string()),
        "ts": pa.array(h.ts[rows], pa.int64()),
        "amount": pa.array(h.amount_cents[rows] / 100, pa.float64()),
        "score": pa.array(scores, pa.float32()),
        "flag": pa.array(scores.astype(np.float64) >= threshold, pa.bool_()),
        "model_version": pa.repeat(pa.scalar(model_version, pa.string()), n),
        "threshold": pa.array(np.full(n, threshold, dtype=np.float64), pa.float64()),
    }, schema=SCHEMA)


def _metadata(bundle: Bundle, transactions: Path, labels: Path | None) -> dict[bytes, bytes]:
    """The file's key-value metadata: what was scored with what (for an audit's record)."""
    facts = {"model_version": bundle.model_version, "threshold": bundle.threshold, "feature_version": FEATURE_VERSION,
             "transactions": str(transactions), "labels": None if labels is None else str(labels),
             "note": None if labels is not None else NO_LABELS}
    return {METADATA_KEY: json.dumps(facts).encode()}


@contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out``, renamed over it when the block ends without an error, else removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
