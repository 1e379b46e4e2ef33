"""Parquet files of history and labels, and the data-quality checks for a user's own files.

The documented schema (what :func:`write_history` writes and :func:`read_history` reads):

``transactions.parquet``
    ``tx_id`` string (or integer), ``ts`` int64 epoch milliseconds UTC (or a Parquet timestamp;
    a timestamp without a zone is taken as UTC; sub-millisecond digits are dropped),
    ``customer_id`` and ``terminal_id`` string (or integer), ``amount`` float64 (or integer or
    decimal) in currency units, sorted by ``ts``. Every row obeys the worker's rules
    (``schemas.rules``): ids of 1..64 printable ASCII characters without spaces, times from 2000
    and not after now (``--now`` for a replay), amounts above 0 and at most 1 000 000 in whole cents.
    Optional: ``is_fraud`` int8 0/1, ``scenario`` int8 (0 genuine, 1/2/3 simulated scenario, -1 fraud
    of unknown scenario).
``labels.parquet``
    ``tx_id``, ``is_fraud`` 0/1; optional ``customer_id``, ``terminal_id``, ``ts`` (checked against
    the transaction when present) and ``reported_at`` (when the outcome became known, not before
    ``ts``; default ``ts`` + 7 days; ``available_at`` is read as its older name). A transaction may
    have several labels (a review, then a chargeback): its truth is the label with the latest
    ``reported_at``, fraud winning a tie; unlabelled transactions count as genuine.

Bad data never raises a stack trace of ours: every problem found in one pass is collected into a
:class:`DataQualityError` whose message names the file, the column, the first offending rows
(counted from 0) and values, and how many there are in all.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import DataQualityError as _DataQualityError
from schemas.features import FEEDBACK_DELAY_DAYS, TERMINAL_HORIZON_DAYS
from schemas.messages import AMOUNT_MAX, ID_MAX_LEN, TS_MAX_MS, TS_MIN_MS
from schemas.rules import NOT_POSITIVE, SUB_CENT, TOO_LARGE, amount_checks, id_chars_ok, ts_ok
from trainer.simulate import DAY_MS, History, Labels, labels_of

log = logging.getLogger(__name__)

TRANSACTIONS_FILE = "transactions.parquet"
LABELS_FILE = "labels.parquet"
DEFAULT_FEEDBACK_DELAY_DAYS = 7
SHOW_ROWS = 5  # offending rows quoted per problem
CHUNK_ROWS = 1 << 20  # rows read at a time
WARM_UP_DAYS = TERMINAL_HORIZON_DAYS  # the features' longest look-back: whole windows need this much history
MAX_FUTURE_MS = 3_600_000  # the worker's default --max-future-ms
ID_PROBLEM = f"ids are not 1..{ID_MAX_LEN} printable ASCII characters without spaces (bad_id)"
AMOUNT_PROBLEMS = {
    NOT_POSITIVE: "amounts are not positive (zero, negative or NaN)",
    TOO_LARGE: f"amounts are above {AMOUNT_MAX:,.0f} (or infinite)",
    SUB_CENT: "amounts have digits past the cents",
}

Kind = Literal["id", "time", "amount", "flag", "scenario"]
Rows = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]  # (rows read, rows in the file)
Ints = npt.NDArray[np.int64]

TX_COLUMNS: dict[str, tuple[Kind, bool]] = {  # name: (kind, required)
    "tx_id": ("id", True),
    "ts": ("time", True),
    "customer_id": ("id", True),
    "terminal_id": ("id", True),
    "amount": ("amount", True),
    "is_fraud": ("flag", False),
    "scenario": ("scenario", False),
}
TX_REQUIRED = [name for name, (_, required) in TX_COLUMNS.items() if required]
LABEL_COLUMNS: dict[str, tuple[Kind, bool]] = {
    "tx_id": ("id", True),
    "is_fraud": ("flag", True),
    "customer_id": ("id", False),
    "terminal_id": ("id", False),
    "ts": ("time", False),
    "reported_at": ("time", False),
}
LEGACY_LABEL_NAMES = {"available_at": "reported_at"}
EXPECTED_TYPES: dict[Kind, str] = {
    "id": "string or integer",
    "time": "int64 epoch milliseconds or timestamp",
    "amount": "float64 (or integer/decimal) amount",
    "flag": "integer 0/1 or boolean",
    "scenario": "integer",
}


class DataQualityError(_DataQualityError):
    """Bad input data. ``str(err)`` is a readable multi-line report of every problem found."""

    def __init__(self, problems: Sequence[str], title: str = "data-quality check failed") -> None:
        self.problems = list(problems)
        head = f"{title}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_history` found, beyond the data itself."""

    transactions: int
    labels: int
    unlabelled: int  # transactions with no label: counted as genuine
    frauds: int
    reported_at_defaulted: bool  # labels had no reported_at column: ts + delay was used

    def __str__(self) -> str:
        rate = self.frauds / self.transactions if self.transactions else 0.0
        lines = [f"{self.transactions} transactions, {self.frauds} fraud ({rate:.2%}); {self.labels} labels"]
        if self.unlabelled:
            lines.append(f"{self.unlabelled} transactions have no label and count as genuine")
        if self.reported_at_defaulted:
            lines.append("labels have no reported_at: ts + feedback delay used")
        return "\n".join(lines)


@dataclass(frozen=True)
class Loaded:
    """A user's history, its labels (only the labelled transactions) and the load report."""

    history: History
    labels: Labels
    report: LoadReport


def write_history(
    h: History, directory: Path, *, feedback_delay_days: int | None = None
) -> tuple[Path, Path]:
    """Write ``transactions.parquet`` and ``labels.parquet`` into ``directory``; return both paths.
    Labels are reported at the simulator's realistic delays, or ``feedback_delay_days`` after their
    transaction when that is given."""
    directory.mkdir(parents=True, exist_ok=True)
    tx_path, labels_path = directory / TRANSACTIONS_FILE, directory / LABELS_FILE
    transactions = pa.table(
        {
            "tx_id": pa.array(h.tx_id, pa.string()),
            "ts": pa.array(h.ts, pa.int64()),
            "customer_id": pa.array(h.customer_id, pa.string()),
            "terminal_id": pa.array(h.terminal_id, pa.string()),
            "amount": pa.array(h.amount_cents / 100.0, pa.float64()),
            "is_fraud": pa.array(h.is_fraud, pa.int8()),
            "scenario": pa.array(h.scenario, pa.int8()),
        }
    )
    lab = labels_of(h, feedback_delay_days)
    labels = pa.table(
        {
            "tx_id": pa.array(lab.tx_id, pa.string()),
            "customer_id": pa.array(lab.customer_id, pa.string()),
            "terminal_id": pa.array(lab.terminal_id, pa.string()),
            "ts": pa.array(lab.ts, pa.int64()),
            "is_fraud": pa.array(lab.is_fraud, pa.int8()),
            "reported_at": pa.array(lab.reported_at, pa.int64()),
        }
    )
    pq.write_table(transactions, tx_path)
    pq.write_table(labels, labels_path)
    return tx_path, labels_path


def read_history(transactions: Path, labels: Path) -> History:
    """Read and check a user's history; raise :class:`DataQualityError` listing every problem."""
    loaded = load_history(transactions, labels)
    log.info("loaded %s and %s:\n%s", transactions, labels, loaded.report)
    return loaded.history


def load_history(transactions: Path, labels: Path, *, feedback_delay_days: int = DEFAULT_FEEDBACK_DELAY_DAYS,
                 now: Now | None = None, progress: Progress | None = None) -> Loaded:
    """Like :func:`read_history`, also returning the labels (with their ``reported_at``) and a report.
    ``now``: the time no event may be after (more than the worker's allowed skew); the wall clock by
    default. ``progress(rows read, rows in the file)`` is called after each chunk of each file."""
    problems: list[str] = []
    now = now or Now(int(time.time() * 1000))
    tx = _read_columns(transactions, TX_COLUMNS, problems, now, progress)
    lab = _read_columns(labels, LABEL_COLUMNS, problems, now, progress)
    if tx is not None:
        _check_transactions(tx, str(transactions), problems)
    if lab is not None:
        _check_labels(lab, str(labels), problems)
    loaded = None
    if tx is not None and lab is not None:
        loaded = _assemble(tx, lab, str(transactions), str(labels), feedback_delay_days, problems)
    if loaded is None or problems:
        raise DataQualityError(problems, "cannot use this history")
    return loaded


def check_windows(h: History, windows: Sequence[tuple[int, int]]) -> None:
    """Each [start_ms, end_ms) window must hold at least one transaction and one fraud."""
    problems: list[str] = []
    frauds = np.concatenate([[0], np.cumsum(h.is_fraud != 0)])
    span = f"the history spans {_iso(int(h.ts[0]))} .. {_iso(int(h.ts[-1]))}" if len(h) else "the history is empty"
    for i, (start, end) in enumerate(windows):
        name = f"window {i} [{_iso(start)}, {_iso(end)})"
        if end <= start:
            problems.append(f"{name}: ends before it starts")
            continue
        lo, hi = (int(x) for x in np.searchsorted(h.ts, [start, end], side="left"))
        if hi == lo:
            problems.append(f"{name}: no transactions ({span})")
        elif frauds[hi] == frauds[lo]:
            problems.append(f"{name}: {hi - lo} transactions but no fraud")
    if problems:
        raise DataQualityError(problems, "empty evaluation windows")


def history_shortfall(h: History, first_ms: int) -> str | None:
    """Why the history before ``first_ms`` (the first window the model is fitted or tuned on) is too short
    for whole feature windows; None when it is long enough."""
    have = (first_ms - int(h.ts[0])) / DAY_MS
    if have >= WARM_UP_DAYS:
        return None
    return (f"the history holds {max(have, 0):.1f} days before the first training window ({_iso(first_ms)}); the"
            f" features look back {WARM_UP_DAYS} days (30-day windows behind the {FEEDBACK_DELAY_DAYS}-day feedback"
            f" delay), so the model would learn from partial windows the stream never shows it: give"
            f" {WARM_UP_DAYS - have:.1f} more days of history, or --allow-short-history to train anyway (the report"
            f" then says so)")


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Now:
    """What "now" is for the event-time rule (``schemas.rules.ts_ok``): the wall clock, or ``--now``."""

    ms: int
    max_future_ms: int = MAX_FUTURE_MS


class _Bad:
    """Offending rows of one problem across a file's chunks: how many, and the first few with a value."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[tuple[int, object]] = []

    def add(self, rows: Rows, values: Sequence[object], offset: int) -> None:
        self.count += len(rows)
        room = SHOW_ROWS - len(self.first)
        self.first += [(offset + int(r), v) for r, v in zip(rows[:room], values[:room], strict=True)]

    def text(self) -> str:
        shown = ", ".join(f"{r}" if v is None else f"{r} ({_show(v)})" for r, v in self.first)
        more = f" and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        return f"; first rows {shown}{more}"


def _read_columns(
    path: Path, spec: dict[str, tuple[Kind, bool]], problems: list[str], now: Now,
    progress: Progress | None = None,
) -> dict[str, npt.NDArray[Any]] | None:
    """The columns of ``spec`` that are present and well typed; ``None`` when the file is unusable.

    The file is read a chunk of rows at a time (never whole as Arrow beside the numpy columns), ids are
    checked on Arrow's buffers before they become numpy strings (a 1 MB id is refused, not allocated
    for every row). Every problem found is appended to ``problems``; the columns that passed are
    returned anyway so that the cross-row checks can still run on them.
    """
    where = str(path)
    pf = _open(path, where, problems)
    if pf is None:
        return None
    columns = _present(pf.schema_arrow, spec, where, problems)
    chunks: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in columns}
    bad: dict[tuple[str, str], _Bad] = {}
    offset = 0
    for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=list(columns.values())):
        for name, source in columns.items():
            values = _chunk(batch.column(source), spec[name][0], offset, name, bad)
            if values is not None and name in chunks:
                chunks[name].append(values)
        offset += batch.num_rows
        if progress is not None:
            progress(offset, pf.metadata.num_rows)
    for (name, what), b in bad.items():
        problems.append(f"{where}, column '{name}': {b.count} {what}{b.text()}")
        chunks.pop(name, None)
    out: dict[str, npt.NDArray[Any]] = {}
    for name, parts in chunks.items():
        values = _checked(np.concatenate(parts), spec[name][0], f"{where}, column '{name}'", problems, now)
        if values is not None:
            out[name] = values
    return out


def _open(path: Path, where: str, problems: list[str]) -> pq.ParquetFile | None:
    if not path.exists():
        problems.append(f"{where}: file not found")
        return None
    if not path.is_file():
        problems.append(f"{where}: not a file")
        return None
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        problems.append(f"{where}: not a readable Parquet file ({err})")
        return None
    if pf.metadata.num_rows == 0:
        problems.append(f"{where}: file is empty (0 rows)")
        return None
    return pf


def _present(schema: pa.Schema, spec: dict[str, tuple[Kind, bool]], where: str,
             problems: list[str]) -> dict[str, str]:
    """Our name -> the file's column name, for the columns of ``spec`` present with a usable type
    (older names read as their current ones: ``available_at`` is ``reported_at``)."""
    names = {n: n for n in schema.names}
    for old, new in LEGACY_LABEL_NAMES.items():
        if new in spec and old in names:
            if new in names:
                problems.append(f"{where}: both {old!r} and {new!r} columns; keep {new!r} ({old!r} is its old name)")
            else:
                names[new] = names.pop(old)
    missing = [name for name, (_, required) in spec.items() if required and name not in names]
    if missing:
        problems.append(
            f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
            f" (found {', '.join(map(repr, schema.names))})"
        )
    out: dict[str, str] = {}
    for name, (kind, _) in spec.items():
        if name in names:
            t = schema.field(names[name]).type
            if _type_ok(t.value_type if pa.types.is_dictionary(t) else t, kind):
                out[name] = names[name]
            else:
                problems.append(f"{where}, column '{name}': bad type {t}, expected {EXPECTED_TYPES[kind]}")
    return out


def _type_ok(t: pa.DataType, kind: Kind) -> bool:
    ok: bool = {
        "id": pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t),
        "time": pa.types.is_integer(t) or pa.types.is_timestamp(t),
        "amount": pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
        "flag": pa.types.is_integer(t) or pa.types.is_boolean(t),
        "scenario": pa.types.is_integer(t),
    }[kind]
    return ok


def _chunk(arr: pa.Array, kind: Kind, offset: int, name: str,
           bad: dict[tuple[str, str], _Bad]) -> npt.NDArray[Any] | None:
    """One chunk of a column as numpy in its canonical dtype (ids checked first), or ``None`` after
    recording its bad rows (a column with a bad row is not converted any further)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if arr.null_count:
        rows = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
        bad.setdefault((name, "null values"), _Bad()).add(rows, [None] * len(rows), offset)
        return None
    if kind == "id":
        return _id_chunk(arr, offset, name, bad)
    if kind == "time":
        return _epoch_ms(arr)
    if kind == "amount":
        return np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _id_chunk(arr: pa.Array, offset: int, name: str, bad: dict[tuple[str, str], _Bad]) -> npt.NDArray[Any] | None:
    """The ids of a chunk as numpy strings when each is 1..ID_MAX_LEN printable ASCII characters
    without space (``schemas.rules``), checked on Arrow's offsets and bytes."""
    if pa.types.is_integer(arr.type):
        arr = arr.cast(pa.string())
    offs_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    buffers = arr.buffers()
    offs = np.frombuffer(buffers[1], dtype=offs_type)[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offs)
    ok = (lengths > 0) & (lengths <= ID_MAX_LEN) & id_chars_ok(data[offs[0]:offs[-1]], offs[1:] - offs[0])
    if ok.all():
        if (name, ID_PROBLEM) in bad:
            return None
        return np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.str_)
    rows = np.flatnonzero(~ok)
    shown = [_id_shown(data[offs[r]:offs[r + 1]].tobytes()) for r in rows[:SHOW_ROWS].tolist()]
    bad.setdefault((name, ID_PROBLEM), _Bad()).add(rows, shown, offset)
    return None


def _id_shown(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= 24 else f"{text[:20]}... ({len(raw)} bytes)"


def _checked(values: npt.NDArray[Any], kind: Kind, where: str, problems: list[str],
             now: Now) -> npt.NDArray[Any] | None:
    """The whole column's value checks (the contract's rules for times and amounts)."""
    if kind == "id":
        return values
    if kind == "time":
        return _times(values, where, problems, now)
    if kind == "amount":
        return _amount(values, where, problems)
    allowed = [0, 1] if kind == "flag" else [-1, 0, 1, 2, 3]
    bad = np.flatnonzero(~np.isin(values, allowed))
    if len(bad):
        problems.append(f"{where}: {len(bad)} values outside {allowed}{_rows(bad, values)}")
    return values.astype(np.int8)


def _epoch_ms(arr: pa.Array) -> Ints:
    raw = np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    if not pa.types.is_timestamp(arr.type):
        return raw
    unit = arr.type.unit
    if unit == "s":
        return raw * 1000
    return raw // {"ms": 1, "us": 1000, "ns": 1_000_000}[unit]


def _times(ms: Ints, where: str, problems: list[str], now: Now) -> Ints | None:
    in_range = (ms >= TS_MIN_MS) & (ms < TS_MAX_MS)
    out = np.flatnonzero(~in_range)
    if len(out):
        problems.append(f"{where}: {len(out)} times are not epoch milliseconds between {_iso(TS_MIN_MS)[:10]} and "
                        f"{_iso(TS_MAX_MS)[:10]} (seconds or microseconds?){_rows(out, ms)}")
    ahead = np.flatnonzero(in_range & ~ts_ok(ms, now.ms, now.max_future_ms))
    if len(ahead):
        problems.append(f"{where}: {len(ahead)} times are more than {now.max_future_ms // 1000}s after now "
                        f"({_iso(now.ms)}; a replay of a later history: --now){_rows(ahead, ms)}")
    return None if len(out) or len(ahead) else ms


def _amount(amount: npt.NDArray[np.float64], where: str, problems: list[str]) -> Ints | None:
    """Integer cents by the contract's amount rules, or ``None`` after naming every refused row with
    the reason code the worker dead-letters it with."""
    cents, *refused = amount_checks(amount)
    for mask, (code, what) in zip(refused, AMOUNT_PROBLEMS.items(), strict=True):
        rows = np.flatnonzero(mask)
        if len(rows):
            problems.append(f"{where}: {len(rows)} {what} (bad_amount:{code}){_rows(rows, amount)}")
    return None if any(m.any() for m in refused) else cents


# -- checks ----------------------------------------------------------------------------------


def _check_transactions(tx: dict[str, npt.NDArray[Any]], where: str, problems: list[str]) -> None:
    """Row checks within the transactions file, on whichever columns could be read."""
    if "tx_id" in tx:
        dup = _duplicate_rows(tx["tx_id"])
        if len(dup):
            problems.append(f"{where}, column 'tx_id': {len(dup)} duplicate tx_id rows{_rows(dup, tx['tx_id'])}")
    if "ts" not in tx:
        return
    ts = tx["ts"]
    inversions = np.flatnonzero(ts[1:] < ts[:-1]) + 1
    if len(inversions):
        r = int(inversions[0])
        problems.append(
            f"{where}, column 'ts': not sorted by ts: row {r} has ts {ts[r]} ({_iso(int(ts[r]))}), earlier than"
            f" row {r - 1}'s {ts[r - 1]} ({_iso(int(ts[r - 1]))}); {len(inversions)} such inversions"
        )


def _check_labels(lab: dict[str, npt.NDArray[Any]], where: str, problems: list[str]) -> None:
    """Row checks within the labels file, on whichever columns could be read. Several labels of one
    transaction are allowed (see :func:`_final_word`)."""
    if "ts" in lab and "reported_at" in lab:
        early = np.flatnonzero(lab["reported_at"] < lab["ts"])
        if len(early):
            problems.append(
                f"{where}, column 'reported_at': {len(early)} labels reported before their transaction"
                f"{_rows(early, lab['reported_at'])}"
            )


def _assemble(
    tx: dict[str, npt.NDArray[Any]],
    lab: dict[str, npt.NDArray[Any]],
    tx_where: str,
    lab_where: str,
    delay_days: int,
    problems: list[str],
) -> Loaded | None:
    """Join labels to transactions, cross-check them, and build History + Labels in canonical order.

    Cross-file problems are appended to ``problems``; ``None`` when there are any, here or before.
    """
    if "tx_id" not in tx or "tx_id" not in lab:
        return None
    n = len(tx["tx_id"])
    by_id = np.argsort(tx["tx_id"], kind="stable")
    sorted_ids = tx["tx_id"][by_id]
    pos = np.minimum(np.searchsorted(sorted_ids, lab["tx_id"]), n - 1)
    known = sorted_ids[pos] == lab["tx_id"]
    unknown = np.flatnonzero(~known)
    if len(unknown):
        problems.append(
            f"{lab_where}, column 'tx_id': {len(unknown)} labels for unknown transactions{_rows(unknown, lab['tx_id'])}"
        )
    row = by_id[pos]  # the labelled transaction's row, where known
    for name in ("customer_id", "terminal_id", "ts"):
        if name in lab and name in tx:
            differ = np.flatnonzero(known & (lab[name] != tx[name][row]))
            if len(differ):
                problems.append(
                    f"{lab_where}, column '{name}': {len(differ)} labels disagree with the transaction's {name}"
                    f" in {tx_where}{_rows(differ, lab[name])}"
                )
    if problems or any(name not in tx for name in TX_REQUIRED) or "is_fraud" not in lab:
        return None
    ts_all = tx["ts"][row]
    reported = lab["reported_at"] if "reported_at" in lab else ts_all + np.int64(delay_days) * DAY_MS
    labelled = np.zeros(n, dtype=np.bool_)
    labelled[row[known]] = True
    label_fraud = _final_word(n, row[known], reported[known], lab["is_fraud"][known])
    if "is_fraud" in tx:
        is_fraud = tx["is_fraud"]
        differ = np.flatnonzero(labelled & (label_fraud != is_fraud))
        if len(differ):
            problems.append(
                f"{lab_where}, column 'is_fraud': {len(differ)} labels disagree with column 'is_fraud' of"
                f" {tx_where} (rows of {tx_where}){_rows(differ, is_fraud)}"
            )
    else:
        is_fraud = label_fraud
    if "scenario" in tx:
        scenario = tx["scenario"]
        odd = np.flatnonzero((scenario != 0) != (is_fraud == 1))
        if len(odd):
            problems.append(
                f"{tx_where}, column 'scenario': {len(odd)} rows where scenario (0 = genuine) and fraud truth"
                f" disagree{_rows(odd, scenario)}"
            )
    else:
        scenario = np.where(is_fraud == 1, -1, 0).astype(np.int8)
    if problems:
        return None

    rank = np.empty(n, dtype=np.int64)
    rank[by_id] = np.arange(n)
    order = np.lexsort((rank, tx["ts"]))  # (ts, tx_id)
    history = History(
        tx_id=tx["tx_id"][order],
        ts=tx["ts"][order],
        customer_id=tx["customer_id"][order],
        terminal_id=tx["terminal_id"][order],
        amount_cents=tx["amount"][order],
        is_fraud=is_fraud[order].astype(np.int8),
        scenario=scenario[order].astype(np.int8),
    )
    lrow = row[known]
    lorder = np.lexsort((rank[lrow], reported[known]))  # (reported_at, tx_id)
    labels = Labels(
        tx_id=tx["tx_id"][lrow][lorder],
        customer_id=tx["customer_id"][lrow][lorder],
        terminal_id=tx["terminal_id"][lrow][lorder],
        ts=tx["ts"][lrow][lorder],
        is_fraud=lab["is_fraud"][known][lorder].astype(np.int8),
        reported_at=np.asarray(reported[known], dtype=np.int64)[lorder],
    )
    report = LoadReport(
        transactions=n,
        labels=len(lrow),
        unlabelled=int(n - labelled.sum()),
        frauds=int(history.is_fraud.sum()),
        reported_at_defaulted="reported_at" not in lab,
    )
    return Loaded(history, labels, report)


def _final_word(n: int, row: Rows, reported_at: Ints, is_fraud: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """Per transaction row (``n`` of them), the word of its latest label, fraud winning a tie
    (``schemas.features``'s rule); 0 where there is no label."""
    out = np.zeros(n, dtype=np.int8)
    order = np.lexsort((is_fraud, reported_at, row))  # the last of each row is its final word
    last = np.append(row[order][1:] != row[order][:-1], True)
    out[row[order][last]] = is_fraud[order][last]
    return out


# -- helpers ---------------------------------------------------------------------------------


def _duplicate_rows(ids: npt.NDArray[Any]) -> Rows:
    """Rows whose id already appeared in an earlier row."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    return np.sort(order[1:][s[1:] == s[:-1]]).astype(np.int64)


def _rows(rows: npt.NDArray[Any], values: npt.NDArray[Any] | None = None) -> str:
    """``; first rows 3 (value), 7 (value) …`` — the first few offending rows, counted from 0."""
    shown = [f"{int(r)}" + (f" ({_show(values[int(r)])})" if values is not None else "") for r in rows[:SHOW_ROWS]]
    more = f" and {len(rows) - SHOW_ROWS} more" if len(rows) > SHOW_ROWS else ""
    return f"; first rows {', '.join(shown)}{more}"


def _show(value: object) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _iso(ms: int) -> str:
    """``2018-04-01T00:00:00Z`` (milliseconds shown only when not zero)."""
    try:
        text = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
    return text.replace(".000+00:00", "Z").replace("+00:00", "Z")
