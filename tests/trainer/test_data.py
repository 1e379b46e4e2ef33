"""Parquet round trip, a user's own files, and one test per data-quality problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.data import DataQualityError, check_windows, load_history, read_history, write_history
from trainer.simulate import DAY_MS, History, Labels, SimConfig, labels_of, simulate

T0 = 1_530_000_000_000  # 2018-06-26T08:00:00Z


@pytest.fixture(scope="module")
def history() -> History:
    return simulate(SimConfig(customers=200, terminals=400, days=20, seed=3))


def _tx_columns() -> dict[str, Any]:
    """A small, valid user transactions file: the five required columns."""
    return {
        "tx_id": ["a1", "a2", "a3", "a4", "a5", "a6"],
        "ts": [T0, T0 + 1000, T0 + 1000, T0 + 5000, T0 + 9000, T0 + 9000],
        "customer_id": ["c1", "c2", "c1", "c3", "c2", "c1"],
        "terminal_id": ["t1", "t2", "t3", "t1", "t2", "t2"],
        "amount": [10.5, 20.0, 3.99, 250.0, 0.01, 7.0],
    }


def _label_columns() -> dict[str, Any]:
    return {"tx_id": ["a1", "a2", "a3", "a4", "a5", "a6"], "is_fraud": [0, 0, 0, 1, 0, 1]}


def _write(path: Path, columns: dict[str, Any], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def _files(tmp_path: Path, tx: dict[str, Any] | None = None, lab: dict[str, Any] | None = None) -> tuple[Path, Path]:
    return (
        _write(tmp_path / "transactions.parquet", _tx_columns() if tx is None else tx),
        _write(tmp_path / "labels.parquet", _label_columns() if lab is None else lab),
    )


def _report(tx: Path, lab: Path) -> str:
    with pytest.raises(DataQualityError) as caught:
        read_history(tx, lab)
    return str(caught.value)


def _equal(a: History | Labels, b: History | Labels) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in type(a).__dataclass_fields__)


# -- round trip and user files ---------------------------------------------------------------


def test_round_trip(history: History, tmp_path: Path) -> None:
    tx, lab = write_history(history, tmp_path / "out")
    assert (tx.name, lab.name) == ("transactions.parquet", "labels.parquet")
    table = pq.read_table(tx)
    assert table.schema.field("amount").type == pa.float64()
    assert table.schema.field("is_fraud").type == pa.int8()
    assert pq.read_table(lab).column_names == ["tx_id", "customer_id", "terminal_id", "ts", "is_fraud", "reported_at"]
    loaded = load_history(tx, lab)
    assert _equal(read_history(tx, lab), history)
    assert _equal(loaded.labels, labels_of(history))  # the simulator's realistic delays, kept in the file
    assert loaded.report.unlabelled == 0 and loaded.report.transactions == len(history)


def test_user_files_minimal_schema(tmp_path: Path) -> None:
    tx_cols = _tx_columns()
    tx_cols["tx_id"] = [106, 102, 103, 104, 105, 101]  # integer ids; ties in ts resorted by tx_id
    tx_cols["customer_id"] = [1, 2, 1, 3, 2, 1]
    tx_cols["ts"] = pa.array([t * 1000 for t in tx_cols["ts"]], pa.timestamp("us", tz="UTC"))
    lab = {"tx_id": [104, 101, 106], "is_fraud": [1, 1, 0]}  # 102, 103, 105 unlabelled
    loaded = load_history(*_files(tmp_path, tx_cols, lab))
    h = loaded.history
    assert h.tx_id.tolist() == ["106", "102", "103", "104", "101", "105"]
    assert h.ts.tolist() == [T0, T0 + 1000, T0 + 1000, T0 + 5000, T0 + 9000, T0 + 9000]
    assert h.customer_id.tolist() == ["1", "2", "1", "3", "1", "2"]
    assert h.amount_cents.tolist() == [1050, 2000, 399, 25000, 700, 1]
    assert h.is_fraud.tolist() == [0, 0, 0, 1, 1, 0]
    assert h.scenario.tolist() == [0, 0, 0, -1, -1, 0]  # fraud of unknown scenario
    assert loaded.report.unlabelled == 3 and loaded.report.reported_at_defaulted
    assert "3 transactions have no label and count as genuine" in str(loaded.report)
    assert loaded.labels.tx_id.tolist() == ["106", "104", "101"]
    assert np.array_equal(loaded.labels.reported_at, loaded.labels.ts + 7 * DAY_MS)


# -- files ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _, lab = _files(tmp_path)
    report = _report(tmp_path / "nope.parquet", lab)
    assert "nope.parquet: file not found" in report


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    _, lab = _files(tmp_path)
    (tmp_path / "dir.parquet").mkdir()
    assert "dir.parquet: not a file" in _report(tmp_path / "dir.parquet", lab)


def test_not_parquet(tmp_path: Path) -> None:
    tx, _ = _files(tmp_path)
    bogus = tmp_path / "labels.csv"
    bogus.write_text("tx_id,is_fraud\na1,0\n")
    report = _report(tx, bogus)
    assert "labels.csv: not a readable Parquet file" in report


def test_empty_file(tmp_path: Path) -> None:
    schema = pa.schema([("tx_id", pa.string()), ("ts", pa.int64()), ("customer_id", pa.string()),
                        ("terminal_id", pa.string()), ("amount", pa.float64())])  # fmt: skip
    tx = _write(tmp_path / "tx.parquet", {name: [] for name in schema.names}, schema)
    _, lab = _files(tmp_path)
    assert "tx.parquet: file is empty (0 rows)" in _report(tx, lab)


# -- columns ----------------------------------------------------------------------------------


def test_missing_columns(tmp_path: Path) -> None:
    cols = _tx_columns()
    del cols["amount"], cols["terminal_id"]
    report = _report(*_files(tmp_path, cols))
    assert "transactions.parquet: missing columns 'terminal_id', 'amount'" in report


def test_bad_types(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["amount"] = [str(a) for a in cols["amount"]]
    cols["ts"] = [float(t) for t in cols["ts"]]
    report = _report(*_files(tmp_path, cols))
    assert "column 'amount': bad type string" in report
    assert "column 'ts': bad type double" in report


def test_nulls(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["customer_id"] = ["c1", None, "c1", "c3", None, "c1"]
    report = _report(*_files(tmp_path, cols))
    assert "column 'customer_id': 2 null values; first rows 1, 4" in report


def test_ts_in_seconds(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["ts"] = [t // 1000 for t in cols["ts"]]
    report = _report(*_files(tmp_path, cols))
    assert "column 'ts': 6 times are not epoch milliseconds" in report
    assert f"first rows 0 ({T0 // 1000})" in report


# -- amounts ----------------------------------------------------------------------------------


def test_non_finite_amounts(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["amount"] = [10.0, float("nan"), 1.0, float("inf"), 2.0, 3.0]
    report = _report(*_files(tmp_path, cols))
    assert "column 'amount': 1 amounts are not positive (zero, negative or NaN) (bad_amount:not_positive); " \
           "first rows 1 (nan)" in report
    assert "column 'amount': 1 amounts are above 1,000,000 (or infinite) (bad_amount:too_large); first rows 3 (inf)" \
           in report


def test_zero_or_negative_amounts(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["amount"] = [10.0, 0.0, 1.0, -4.5, 2.0, 3.0]
    report = _report(*_files(tmp_path, cols))
    assert "column 'amount': 2 amounts are not positive (zero, negative or NaN) (bad_amount:not_positive); " \
           "first rows 1 (0.0), 3 (-4.5)" in report


def test_sub_cent_amounts(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["amount"] = [10.0, 0.001, 1.0, 2.345, 12345.678, 999999.995]
    report = _report(*_files(tmp_path, cols))
    assert "column 'amount': 4 amounts have digits past the cents (bad_amount:sub_cent); first rows 1 (0.001), " \
           "3 (2.345), 4 (12345.678), 5 (999999.995)" in report


# -- rows -------------------------------------------------------------------------------------


def test_duplicate_tx_id(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["tx_id"] = ["a1", "a2", "a1", "a4", "a5", "a2"]
    report = _report(*_files(tmp_path, cols, {"tx_id": ["a1"], "is_fraud": [0]}))
    assert "transactions.parquet, column 'tx_id': 2 duplicate tx_id rows; first rows 2 ('a1'), 5 ('a2')" in report


def test_several_labels_per_transaction_latest_report_wins(tmp_path: Path) -> None:
    day = 86_400_000
    lab = {"tx_id": ["a4", "a2", "a4", "a2", "a6", "a6", "a1"],
           "is_fraud": [1, 0, 0, 1, 0, 1, 0],
           "reported_at": [T0 + 2 * day, T0 + 9 * day, T0 + 30 * day, T0 + 3 * day, T0 + day, T0 + day, T0]}
    loaded = load_history(*_files(tmp_path, lab=lab))
    h = loaded.history
    truth = dict(zip(h.tx_id.tolist(), h.is_fraud.tolist(), strict=True))
    # a4: fraud, overturned 28 days later; a2: fraud, then genuine; a6: a tie goes to fraud.
    assert (truth["a4"], truth["a2"], truth["a6"], truth["a1"]) == (0, 0, 1, 0)
    assert loaded.report.labels == 7 and not loaded.report.reported_at_defaulted
    assert loaded.labels.reported_at.tolist() == sorted(lab["reported_at"])  # every label kept, by report time


def test_available_at_is_read_as_reported_at(tmp_path: Path) -> None:
    lab = {"tx_id": ["a1", "a4"], "is_fraud": [0, 1], "available_at": [T0 + 5, T0 + 5000 + 7]}
    loaded = load_history(*_files(tmp_path, lab=lab))
    assert loaded.labels.reported_at.tolist() == [T0 + 5, T0 + 5007]
    both = dict(lab, reported_at=lab["available_at"])
    assert "both 'available_at' and 'reported_at' columns" in _report(*_files(tmp_path, lab=both))


def test_labels_reported_before_their_transaction(tmp_path: Path) -> None:
    lab = {"tx_id": ["a1", "a4"], "ts": [T0, T0 + 5000], "is_fraud": [0, 1], "reported_at": [T0, T0 + 4999]}
    report = _report(*_files(tmp_path, lab=lab))
    assert "column 'reported_at': 1 labels reported before their transaction; first rows 1" in report


def test_unsorted_time(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["ts"] = [T0, T0 + 1000, T0 + 500, T0 + 5000, T0 + 4000, T0 + 9000]
    report = _report(*_files(tmp_path, cols))
    assert "column 'ts': not sorted by ts: row 2 has ts" in report
    assert "earlier than row 1's" in report and "2 such inversions" in report


def test_labels_for_unknown_transactions(tmp_path: Path) -> None:
    lab = {"tx_id": ["a1", "zz", "a3", "yy"], "is_fraud": [0, 1, 0, 0]}
    report = _report(*_files(tmp_path, lab=lab))
    assert "labels.parquet, column 'tx_id': 2 labels for unknown transactions; first rows 1 ('zz'), 3 ('yy')" in report


def test_labels_disagree_with_transactions(tmp_path: Path) -> None:
    lab = {
        "tx_id": ["a1", "a2", "a3"],
        "customer_id": ["c1", "c9", "c1"],
        "terminal_id": ["t1", "t2", "t3"],
        "ts": [T0, T0 + 1000, T0 + 2000],
        "is_fraud": [0, 0, 0],
    }
    report = _report(*_files(tmp_path, lab=lab))
    assert "column 'customer_id': 1 labels disagree with the transaction's customer_id" in report
    assert "first rows 1 ('c9')" in report
    assert "column 'ts': 1 labels disagree with the transaction's ts" in report
    assert "terminal_id" not in report


def test_every_problem_in_one_report(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["amount"] = [10.0, -1.0, 1.0, 1.0, 2.0, 3.0]
    cols["tx_id"] = ["a1", "a1", "a3", "a4", "a5", "a6"]
    report = _report(*_files(tmp_path, cols, {"tx_id": ["a1", "a1", "zz"], "is_fraud": [0, 0, 1]}))
    assert report.startswith("cannot use this history: 3 problems")
    assert "not positive" in report and "duplicate tx_id rows" in report
    assert "1 labels for unknown transactions; first rows 2 ('zz')" in report
    assert "Traceback" not in report


# -- windows ----------------------------------------------------------------------------------


def test_check_windows(history: History) -> None:
    day = 24 * 3600 * 1000
    start = int(history.ts[0]) - int(history.ts[0]) % day
    check_windows(history, [(start, start + 7 * day), (start + 7 * day, start + 14 * day)])
    fraud_free = int(history.ts[np.flatnonzero(history.is_fraud == 0)[0]])
    with pytest.raises(DataQualityError) as caught:
        check_windows(
            history, [(start, start + 7 * day), (start - 9 * day, start - 2 * day), (fraud_free, fraud_free + 1)]
        )
    report = str(caught.value)
    assert "window 1 [2018-03-23T00:00:00Z, 2018-03-30T00:00:00Z): no transactions" in report
    assert "window 2 " in report and "but no fraud" in report
    assert "window 0" not in report


def test_fraud_truth_disagrees(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["is_fraud"] = pa.array([0, 0, 0, 1, 0, 0], pa.int8())
    cols["scenario"] = pa.array([0, 0, 0, 1, 0, 2], pa.int8())
    report = _report(*_files(tmp_path, cols))  # the labels say a6 is fraud
    assert "labels.parquet, column 'is_fraud': 1 labels disagree with column 'is_fraud'" in report
    assert "first rows 5 (0)" in report


def test_scenario_disagrees_with_fraud(tmp_path: Path) -> None:
    cols = _tx_columns()
    cols["scenario"] = pa.array([0, 2, 0, 1, 0, 0], pa.int8())
    report = _report(*_files(tmp_path, cols))
    assert "column 'scenario': 2 rows where scenario (0 = genuine) and fraud truth disagree" in report
    assert "first rows 1 (2), 5 (0)" in report
