"""``python -m trainer score``: a history's offline scores with a bundle, in the file's order, written atomically.

Parity with the stream: the worker's published scores equal ``trainer.export.offline_scores`` within 1e-5
(``tests/integration/test_worker.py::test_worker_scores_everything_once_with_offline_parity``, the same
comparison in ``test_labels.py`` and ``test_idle.py``); here ``trainer score`` is held to ``offline_scores``
itself, exactly, with labels and without.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import trainer.score
from schemas.bundle import Bundle
from trainer.cli import main
from trainer.data import Loaded, load_history, write_history
from trainer.export import offline_scores, onnx_scores
from trainer.score import SCHEMA, chunks, no_labels
from trainer.simulate import SimConfig, simulate

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small simulated history's transactions and labels files (about 10k transactions)."""
    h = simulate(SimConfig(customers=150, terminals=300, days=45, seed=7))
    return write_history(h, tmp_path_factory.mktemp("history"))


@pytest.fixture(scope="module")
def loaded(files: tuple[Path, Path]) -> Loaded:
    return load_history(*files)


def _score(*args: str | Path) -> int:
    return main(["score", *map(str, args)])


def _by_id(table: pa.Table) -> dict[str, float]:
    return dict(zip(table.column("tx_id").to_pylist(), table.column("score").to_pylist(), strict=True))


def _expected(scores: dict[str, float], ids: list[str]) -> npt.NDArray[np.float32]:
    return np.array([scores[i] for i in ids], dtype=np.float32)


def test_the_cli_scores_equal_offline_scores_exactly(bundle: Bundle, files: tuple[Path, Path], loaded: Loaded,
                                                      tmp_path: Path) -> None:
    tx, lab = files
    out = tmp_path / "scores.parquet"
    done = subprocess.run([sys.executable, "-m", "trainer", "score", "--bundle", str(bundle.path), "--transactions",
                           str(tx), "--labels", str(lab), "--out", str(out), "--chunk-rows", "3000"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    summary = done.stderr.strip().splitlines()[-1]
    assert f"scored {len(loaded.history):,} rows:" in summary and "flags (" in summary and "rows/s" in summary
    table = pq.read_table(out)
    expected = offline_scores(loaded.history, loaded.labels, bundle.onnx_path)
    ids = table.column("tx_id").to_pylist()
    assert sorted(ids) == sorted(expected)
    np.testing.assert_array_equal(table.column("score").to_numpy(), _expected(expected, ids))
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == len(chunks(len(ids), 3000)) > 1
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]  # no temporary file left behind


def test_without_labels_the_scores_are_a_label_less_workers(bundle: Bundle, files: tuple[Path, Path],
                                                             loaded: Loaded, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """No labels: the features see no fraud, as a worker that never received a label; the output is named
    by its env variable here, and the log and the file's metadata say that no labels were used."""
    out = tmp_path / "sub" / "unlabelled.parquet"
    monkeypatch.setenv("FRAUDSTREAM_SCORES_OUT", str(out))
    assert _score("--bundle", bundle.path, "--transactions", files[0]) == 0
    table = pq.read_table(out)
    expected = offline_scores(loaded.history, no_labels(), bundle.onnx_path)
    got, ids = table.column("score").to_numpy(), table.column("tx_id").to_pylist()
    assert np.abs(got - _expected(expected, ids)).max() <= 1e-5
    np.testing.assert_array_equal(got, _expected(expected, ids))
    with_labels = offline_scores(loaded.history, loaded.labels, bundle.onnx_path)
    assert _by_id(table) != with_labels  # the labels matter: without them it is another score
    assert "no labels: the terminal risk features see no fraud" in capsys.readouterr().err
    assert b"no labels" in pq.read_schema(out).metadata[b"fraudstream"]


def test_columns_types_order_and_flags(bundle: Bundle, loaded: Loaded, tmp_path: Path) -> None:
    """Rows come out in the file's order (here ties of ts in descending tx_id, not the canonical order);
    the flag is the worker's comparison of the float32 score with the threshold."""
    h = loaded.history
    ts = h.ts - h.ts % HOUR_MS  # many ties
    rank = np.argsort(np.argsort(h.tx_id))
    order = np.lexsort((-rank, ts))
    tx = tmp_path / "tx.parquet"
    pq.write_table(pa.table({"tx_id": h.tx_id[order], "ts": ts[order], "customer_id": h.customer_id[order],
                             "terminal_id": h.terminal_id[order], "amount": h.amount_cents[order] / 100}), tx)
    out = tmp_path / "scores.parquet"
    assert _score("--bundle", bundle.path, "--transactions", tx, "--out", out, "--chunk-rows", "2500") == 0
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.column_names == ["tx_id", "customer_id", "terminal_id", "ts", "amount", "score", "flag",
                                  "model_version", "threshold"]
    source = pq.read_table(tx)
    for name in ("tx_id", "customer_id", "terminal_id", "ts", "amount"):
        assert table.column(name).to_pylist() == source.column(name).to_pylist(), name
    score = table.column("score").to_numpy()
    flag = table.column("flag").to_numpy()
    np.testing.assert_array_equal(flag, score.astype(np.float64) >= bundle.threshold)
    assert 0 < flag.sum() < len(flag)
    assert set(table.column("model_version").to_pylist()) == {bundle.model_version}
    assert set(table.column("threshold").to_pylist()) == {bundle.threshold}


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary(bundle: Bundle, files: tuple[Path, Path],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"the previous scores")
    calls: list[int] = []

    def failing(model: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        calls.append(len(x))
        if len(calls) == 2:
            raise MemoryError("out of memory in the second chunk")
        return onnx_scores(model, x)

    monkeypatch.setattr(trainer.score, "onnx_scores", failing)
    with pytest.raises(MemoryError):
        _score("--bundle", bundle.path, "--transactions", files[0], "--out", out, "--chunk-rows", "3000")
    assert out.read_bytes() == b"the previous scores"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def _refused(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    assert _score(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err[err.index("error: "):]  # after the log lines, if any


def test_bad_input_exits_2_with_a_line_that_names_the_fix(bundle: Bundle, files: tuple[Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    tx, lab = files
    out = tmp_path / "scores.parquet"
    err = _refused(capsys, "--bundle", bundle.path, "--transactions", tmp_path / "nope.parquet", "--out", out)
    assert "--transactions" in err and "no such file" in err and "python -m trainer simulate" in err
    assert err.count("\n") == 1
    err = _refused(capsys, "--bundle", bundle.path, "--transactions", tx, "--labels", tmp_path / "l.parquet",
                   "--out", out)
    assert "no such file" in err and "leave --labels out" in err
    err = _refused(capsys, "--bundle", tmp_path / "no-bundle", "--transactions", tx, "--out", out)
    assert "does not exist: train one with `python -m trainer run`" in err and err.count("\n") == 1
    err = _refused(capsys, "--bundle", bundle.path, "--transactions", tx)
    assert "--out is required (or env FRAUDSTREAM_SCORES_OUT)" in err
    err = _refused(capsys, "--bundle", bundle.path, "--transactions", tx, "--out", out, "--require-signature")
    assert "not signed" in err and "signing key" in err
    broken = tmp_path / "broken"
    shutil.copytree(bundle.path, broken)
    with open(broken / "model.onnx", "ab") as f:
        f.write(b"\0")
    err = _refused(capsys, "--bundle", broken, "--transactions", tx, "--labels", lab, "--out", out)
    assert "model.onnx is corrupt" in err and err.count("\n") == 1
    assert not out.exists()


def test_bad_rows_are_reported_as_the_trainer_reports_them(bundle: Bundle, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    tx = tmp_path / "tx.parquet"
    pq.write_table(pa.table({"tx_id": ["a", "b"], "ts": [1_530_000_000_000, 1_530_000_001_000],
                             "customer_id": ["c", "c"], "terminal_id": ["t", "t"], "amount": [1.0, -2.0]}), tx)
    out = tmp_path / "scores.parquet"
    err = _refused(capsys, "--bundle", bundle.path, "--transactions", tx, "--out", out)
    assert "cannot use this history" in err and "bad_amount" in err and "row" in err
    assert not out.exists()


@pytest.mark.parametrize(("n", "size"), [(1, 100_000), (100_000, 100_000), (100_001, 100_000), (250_000, 7)])
def test_chunks_cover_every_row_in_nearly_equal_parts(n: int, size: int) -> None:
    parts = chunks(n, size)
    lengths = [p.stop - p.start for p in parts]
    assert parts[0].start == 0 and parts[-1].stop == n and sum(lengths) == n
    assert all(a.stop == b.start for a, b in pairwise(parts))
    assert max(lengths) <= size and max(lengths) - min(lengths) <= 1


def test_help_names_every_env_variable() -> None:
    done = subprocess.run([sys.executable, "-m", "trainer", "score", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for env in ("FRAUDSTREAM_BUNDLE", "FRAUDSTREAM_TRANSACTIONS", "FRAUDSTREAM_LABELS", "FRAUDSTREAM_SCORES_OUT",
                "FRAUDSTREAM_SCORE_CHUNK_ROWS", "FRAUDSTREAM_NOW", "FRAUDSTREAM_REQUIRE_SIGNATURE"):
        assert f"env {env};" in text, env
