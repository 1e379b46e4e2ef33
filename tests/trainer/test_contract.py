"""One contract for training and serving: the same hostile rows fed to the trainer's file reader and to
the worker's decoders (per record and columnar) are accepted or refused alike, with the same reason;
a huge id is refused without allocating it per row; labels are never used before their report time."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.decode_batch import decode_transactions
from schemas.features import DAY_MS, FEATURE_NAMES
from schemas.validate import Reject, decode_transaction
from trainer.data import DataQualityError, Now, load_history, write_history
from trainer.simulate import SimConfig, history_features, simulate

T0 = 1_530_000_000_000  # 2018-06-26T08:00:00Z
NOW = Now(T0 + 30 * DAY_MS)
GOOD = {"tx_id": "ok1", "ts": T0, "customer_id": "c1", "terminal_id": "t1", "amount": 12.5}

HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("plain", {}),
    ("integer amount", {"amount": 7}),
    ("float noise on a cent amount", {"amount": 0.1 + 0.2}),
    ("the largest amount", {"amount": 1_000_000.0}),
    ("amount 1e17", {"amount": 1e17}),
    ("amount 1e300", {"amount": 1e300}),
    ("just above the limit", {"amount": 1_000_000.01}),
    ("sub-cent at 12 345", {"amount": 12345.678}),
    ("sub-cent at 999 999", {"amount": 999999.995}),
    ("sub-cent small", {"amount": 0.001}),
    ("zero amount", {"amount": 0.0}),
    ("negative amount", {"amount": -4.5}),
    ("id with a space", {"customer_id": "c 1"}),
    ("unicode id", {"terminal_id": "térm"}),
    ("id of 64", {"customer_id": "c" * 64}),
    ("id of 65", {"customer_id": "c" * 65}),
    ("id of 100", {"tx_id": "x" * 100}),
    ("control character", {"terminal_id": "t\t1"}),
    ("ts in 1999", {"ts": 915_148_800_000}),
    ("ts in seconds", {"ts": T0 // 1000}),
    ("ts in 2030", {"ts": 1_893_456_000_000}),
    ("ts an hour ahead of now", {"ts": NOW.ms + 3_600_000}),
    ("ts just past the allowed skew", {"ts": NOW.ms + 3_600_001}),
]


def _worker(row: dict[str, Any]) -> tuple[str | None, int | None]:
    """The worker's verdict: (reject category, cents) from both decoders, which must agree."""
    raw = orjson.dumps(row)
    one = decode_transaction(raw, NOW.ms)
    many = decode_transactions([raw], [NOW.ms]).outcomes()[0]
    assert one == many
    if isinstance(one, Reject):
        return one.reason, None
    return None, one.cents


def _trainer(row: dict[str, Any], tmp_path: Path) -> tuple[str | None, int | None]:
    """The trainer's verdict on a file of that row after a good one: (the problem's text, cents)."""
    cols = {k: [GOOD[k] if k != "tx_id" else "ok0", row[k]] for k in GOOD}
    tx, lab = tmp_path / "tx.parquet", tmp_path / "lab.parquet"
    pq.write_table(pa.table(cols), tx)
    pq.write_table(pa.table({"tx_id": ["ok0"], "is_fraud": [0]}), lab)
    try:
        loaded = load_history(tx, lab, now=NOW)
    except DataQualityError as err:
        assert len(err.problems) == 1, err.problems
        return err.problems[0], None
    return None, int(loaded.history.amount_cents[loaded.history.tx_id == row["tx_id"]][0])


@pytest.mark.parametrize(("name", "change"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_trainer_and_worker_agree(name: str, change: dict[str, Any], tmp_path: Path) -> None:
    row = {**GOOD, **change}
    reason, cents = _worker(row)
    problem, trainer_cents = _trainer(row, tmp_path)
    if reason is None:
        assert problem is None, f"the worker scores it, the trainer refuses it: {problem}"
        assert trainer_cents == cents
        return
    assert problem is not None, f"the worker dead-letters it ({reason}), the trainer learns from it"
    field = reason.split(":")[-1] if reason.startswith("bad_id") else {"bad_amount": "amount"}.get(
        reason.split(":")[0], "ts")
    assert f"column '{field}'" in problem and "first rows 1" in problem, problem
    if reason.startswith(("bad_amount", "bad_id")):
        assert f"({reason.split(':')[0] if reason.startswith('bad_id') else reason})" in problem, problem


def test_a_huge_id_is_refused_without_allocating_it_per_row(tmp_path: Path) -> None:
    n = 300
    cols: dict[str, Any] = {"tx_id": [f"tx{i}" for i in range(n)], "ts": [T0 + i for i in range(n)],
                            "customer_id": ["c1"] * n, "terminal_id": ["t1"] * n, "amount": [1.0] * n}
    cols["customer_id"][7] = "c" * 1_000_000
    tx, lab = tmp_path / "tx.parquet", tmp_path / "lab.parquet"
    pq.write_table(pa.table(cols), tx)
    pq.write_table(pa.table({"tx_id": ["tx0"], "is_fraud": [0]}), lab)
    tracemalloc.start()
    try:
        with pytest.raises(DataQualityError) as caught:
            load_history(tx, lab, now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Fixed-width strings of the longest id would take 300 x 4 MB here.
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    text = str(caught.value)
    assert "column 'customer_id': 1 ids are not 1..64 printable ASCII" in text
    assert "first rows 7 ('cccccccccccccccccccc... (1000000 bytes)')" in text


def test_the_cli_refuses_hostile_files_without_a_traceback_or_a_bundle(tmp_path: Path) -> None:
    tx, lab = tmp_path / "tx.parquet", tmp_path / "lab.parquet"
    pq.write_table(pa.table({k: [GOOD[k] if k != "tx_id" else "a", v] for k, v in
                             {**GOOD, "tx_id": "b", "amount": 1e17}.items()}), tx)
    pq.write_table(pa.table({"tx_id": ["a"], "is_fraud": [0]}), lab)
    out = tmp_path / "bundles"
    got = subprocess.run([sys.executable, "-m", "trainer", "train", "--transactions", str(tx), "--labels", str(lab),
                          "--out", str(out), "--now", "2018-07-30"], capture_output=True, text=True, timeout=120)
    assert got.returncode == 2, got.stderr
    assert "Traceback" not in got.stderr
    assert f"{tx}, column 'amount': 1 amounts are above 1,000,000" in got.stderr
    assert not out.exists() or not any(out.iterdir())


def _late_label_files(tmp_path: Path, delay_days: int) -> tuple[Path, Path]:
    """A fraud on terminal t1 on day 0 reported ``delay_days`` later; a genuine tx at t1 every day after."""
    days = range(40)
    cols = {"tx_id": [f"tx{d:02d}" for d in days], "ts": [T0 + d * DAY_MS for d in days],
            "customer_id": [f"c{d}" for d in days], "terminal_id": ["t1"] * len(days), "amount": [10.0] * len(days)}
    tx, lab = tmp_path / f"tx{delay_days}.parquet", tmp_path / f"lab{delay_days}.parquet"
    pq.write_table(pa.table(cols), tx)
    pq.write_table(pa.table({"tx_id": ["tx00"], "is_fraud": [1], "reported_at": [T0 + delay_days * DAY_MS]}), lab)
    return tx, lab


def test_labels_are_never_used_before_their_report_time(tmp_path: Path) -> None:
    risk = FEATURE_NAMES.index("TERMINAL_ID_RISK_30DAY_WINDOW")
    by_delay = {}
    for delay in (1, 20):
        loaded = load_history(*_late_label_files(tmp_path, delay), now=Now(T0 + 100 * DAY_MS))
        x = history_features(loaded.history, loaded.labels)
        by_delay[delay] = x[:, risk]
    day = np.arange(40)
    # Day 0's transaction is in the 30-day window of days 8..37 (the window is [d - 37, d - 8]).
    seen = (day >= 8) & (day <= 37)
    assert (by_delay[1][seen] > 0).all(), "reported the next day: counted from day 8 on"
    assert (by_delay[20][seen & (day <= 20)] == 0).all(), "reported on day 20: not known to transactions before"
    assert (by_delay[20][seen & (day > 20)] > 0).all(), "counted once reported"


def test_too_little_history_is_refused_or_trained_with_a_warning(tmp_path: Path) -> None:
    h = simulate(SimConfig(customers=300, terminals=600, days=35, seed=4))
    tx, lab = write_history(h, tmp_path / "data")
    out = tmp_path / "bundles"
    cmd = [sys.executable, "-m", "trainer", "train", "--transactions", str(tx), "--labels", str(lab), "--out", str(out),
           "--folds", "0"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr
    assert "too little history for this split" in refused.stderr and "--allow-short-history" in refused.stderr
    assert "Traceback" not in refused.stderr and not out.exists()
    trained = subprocess.run([*cmd, "--allow-short-history"], capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    report = next(out.glob("*/report.json")).read_text()
    assert "trained with --allow-short-history" in report
