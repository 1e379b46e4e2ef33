"""Parquet files of history and labels, and the data-quality checks for a user's own files.

The documented schema (what :func:`write_history` writes and :func:`read_history` reads):

``transactions.parquet``
    ``tx_id`` string (or integer), ``ts`` int64 epoch milliseconds UTC (or a Parquet timestamp;
    a timestamp without a zone is taken as UTC; sub-millisecond digits are dropped),
    ``customer_id`` and ``terminal_id`` string (or integer), ``amount`` float64 in currency units
    with at most 2 decimals, sorted by ``ts``. Optional: ``is_fraud`` int8 0/1, ``scenario`` int8
    (0 genuine, 1/2/3 simulated scenario, -1 fraud of unknown scenario).
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import DataQualityError as _DataQualityError
from trainer.simulate import DAY_MS, History, Labels, labels_of

log = logging.getLogger(__name__)

TRANSACTIONS_FILE = "transactions.parquet"
LABELS_FILE = "labels.parquet"
DEFAULT_FEEDBACK_DELAY_DAYS = 7
SHOW_ROWS = 5  # offending rows quoted per problem
# Plausible epoch milliseconds: 1973-03-03 .. 2100-01-01. Catches seconds and microseconds.
TS_MIN_MS = 100_000_000_000
TS_MAX_MS = 4_102_444_800_000

Kind = Literal["id", "time", "amount", "flag", "scenario"]
Rows = npt.NDArray[np.int64]
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


def load_history(transactions: Path, labels: Path, *, feedback_delay_days: int = DEFAULT_FEEDBACK_DELAY_DAYS) -> Loaded:
    """Like :func:`read_history`, also returning the labels (with their ``reported_at``) and a report."""
    problems: list[str] = []
    tx = _read_columns(transactions, TX_COLUMNS, problems)
    lab = _read_columns(labels, LABEL_COLUMNS, problems)
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


# -- reading ---------------------------------------------------------------------------------


def _read_columns(
    path: Path, spec: dict[str, tuple[Kind, bool]], problems: list[str]
) -> dict[str, npt.NDArray[Any]] | None:
    """The columns of ``spec`` that are present and well typed; ``None`` when the file is unusable.

    Every problem found is appended to ``problems``; the columns that passed are returned anyway so
    that the row-level checks can still run on them.
    """
    where = str(path)
    if not path.exists():
        problems.append(f"{where}: file not found")
        return None
    if not path.is_file():
        problems.append(f"{where}: not a file")
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        problems.append(f"{where}: not a readable Parquet file ({err})")
        return None
    if table.num_rows == 0:
        problems.append(f"{where}: file is empty (0 rows)")
        return None
    table = _renamed_legacy(table, spec, where, problems)
    missing = [name for name, (_, required) in spec.items() if required and name not in table.column_names]
    if missing:
        problems.append(
            f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
            f" (found {', '.join(map(repr, table.column_names))})"
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for name, (kind, _) in spec.items():
        if name in table.column_names:
            values = _typed(table.column(name), kind, f"{where}, column '{name}'", problems)
            if values is not None:
                out[name] = values
    return out


def _renamed_legacy(table: pa.Table, spec: dict[str, tuple[Kind, bool]], where: str,
                    problems: list[str]) -> pa.Table:
    """Older column names read as their current ones (``available_at`` is ``reported_at``)."""
    names = list(table.column_names)
    for old, new in LEGACY_LABEL_NAMES.items():
        if new in spec and old in names:
            if new in names:
                problems.append(f"{where}: both {old!r} and {new!r} columns; keep {new!r} ({old!r} is its old name)")
            else:
                names[names.index(old)] = new
    return table.rename_columns(names)


def _typed(col: pa.ChunkedArray, kind: Kind, where: str, problems: list[str]) -> npt.NDArray[Any] | None:
    """The column as numpy in its canonical dtype, or ``None`` after reporting why not."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    t = col.type
    ok = {
        "id": pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t),
        "time": pa.types.is_integer(t) or pa.types.is_timestamp(t),
        "amount": pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
        "flag": pa.types.is_integer(t) or pa.types.is_boolean(t),
        "scenario": pa.types.is_integer(t),
    }[kind]
    if not ok:
        problems.append(f"{where}: bad type {t}, expected {EXPECTED_TYPES[kind]}")
        return None
    if col.null_count:
        rows = np.flatnonzero(col.is_null().to_numpy())
        problems.append(f"{where}: {len(rows)} null values{_rows(rows)}")
        return None
    if kind == "id":
        ids: npt.NDArray[np.str_] = np.asarray(col.to_numpy()).astype(np.str_)
        bad = np.flatnonzero(ids == "")
        if len(bad):
            problems.append(f"{where}: {len(bad)} empty ids{_rows(bad)}")
        return ids
    if kind == "time":
        ms = _epoch_ms(col)
        bad = np.flatnonzero((ms < TS_MIN_MS) | (ms >= TS_MAX_MS))
        if len(bad):
            problems.append(
                f"{where}: {len(bad)} times are not epoch milliseconds between 1973 and 2100"
                f" (seconds or microseconds?){_rows(bad, ms)}"
            )
        return ms
    if kind == "amount":
        return _amount(np.asarray(col.cast(pa.float64()).to_numpy(), dtype=np.float64), where, problems)
    values = np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)
    allowed = [0, 1] if kind == "flag" else [-1, 0, 1, 2, 3]
    bad = np.flatnonzero(~np.isin(values, allowed))
    if len(bad):
        problems.append(f"{where}: {len(bad)} values outside {allowed}{_rows(bad, values)}")
    return values.astype(np.int8)


def _epoch_ms(col: pa.ChunkedArray) -> Ints:
    if not pa.types.is_timestamp(col.type):
        return np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)
    raw = np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)
    unit = col.type.unit
    if unit == "s":
        return raw * 1000
    return raw // {"ms": 1, "us": 1000, "ns": 1_000_000}[unit]


def _amount(amount: npt.NDArray[np.float64], where: str, problems: list[str]) -> npt.NDArray[np.float64] | None:
    finite = np.isfinite(amount)
    cents = np.where(finite, amount, 0.0) * 100.0
    checks = [
        (~finite, "amounts are not finite"),
        (finite & (amount <= 0), "amounts are zero or negative"),
        (
            finite & (np.abs(cents - np.round(cents)) > 1e-6 * np.maximum(1.0, np.abs(cents))),
            "amounts have sub-cent digits",
        ),
    ]
    bad_any = False
    for mask, what in checks:
        rows = np.flatnonzero(mask)
        if len(rows):
            problems.append(f"{where}: {len(rows)} {what}{_rows(rows, amount)}")
            bad_any = True
    return None if bad_any else amount


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
        amount_cents=np.round(tx["amount"][order] * 100.0).astype(np.int64),
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
