"""The trainer end to end through its CLI: quick run -> a bundle a worker can load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.bundle import load_bundle
from schemas.errors import BundleError, ExportError
from schemas.features import FEATURE_NAMES
from trainer.export import check_parity, onnx_scores, to_onnx

KEY = "a-test-signing-key-of-some-length"


def _trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, check=False)


@pytest.fixture(scope="module")
def quick_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    done = _trainer("run", "--quick", "--folds", "1", "--out", str(root / "bundles"),
                    "--data-dir", str(root / "data"), "--sign", env={"FRAUDSTREAM_BUNDLE_KEY": KEY})
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def test_quick_run_writes_a_verified_bundle(quick_bundle: Path) -> None:
    b = load_bundle(quick_bundle, key=KEY.encode(), require_signature=True)
    files = set(b.manifest["files"])
    assert {"model.onnx", "model.lgb.txt", "report.md", "report.json", "roc.png", "pr.png"} <= files
    m = b.manifest
    assert m["feature_set"]["names"] == list(FEATURE_NAMES)
    assert 0 < m["threshold"]["value"] < 1 and m["threshold"]["expected_alerts_per_day"] <= 100
    assert m["parity"]["max_abs_diff"] <= 1e-5 and m["parity"]["edge_rows"] > 0
    assert set(m["data_window"]) == {"validation", "train", "delay", "test"}
    assert "lightgbm" in m["library_versions"]
    report = json.loads((quick_bundle / "report.json").read_text())
    assert len(report["models"]) == 2
    assert (quick_bundle.parent / "latest").resolve() == quick_bundle.resolve()
    assert (quick_bundle.parent.parent / "data" / "transactions.parquet").is_file()


def test_bundle_onnx_agrees_with_native_model(quick_bundle: Path) -> None:
    booster = lgb.Booster(model_file=str(quick_bundle / "model.lgb.txt"))
    x = np.random.default_rng(1).gamma(2.0, 30.0, size=(3000, len(FEATURE_NAMES))).astype(np.float32)
    x[::50, 3] = np.nan
    diff = np.abs(onnx_scores(quick_bundle / "model.onnx", x) - booster.predict(x))
    assert diff.max() <= 1e-5


def test_wrong_key_and_tampering_are_refused(quick_bundle: Path) -> None:
    with pytest.raises(BundleError, match="wrong signature"):
        load_bundle(quick_bundle, key=b"another key entirely", require_signature=True)


def test_parity_check_fails_a_broken_export(quick_bundle: Path) -> None:
    booster = lgb.Booster(model_file=str(quick_bundle / "model.lgb.txt"))
    model = to_onnx(booster)
    for node in model.graph.node:
        if node.op_type == "TreeEnsembleClassifier":
            values = next(a for a in node.attribute if a.name == "nodes_values").floats
            for i in range(0, len(values), 3):
                values[i] = values[i] * 1.5 + 1.0
    x = np.random.default_rng(2).gamma(2.0, 30.0, size=(2000, len(FEATURE_NAMES))).astype(np.float32)
    with pytest.raises(ExportError, match="parity failed"):
        check_parity(booster, model, x)


def test_export_subcommand_reseals(quick_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(quick_bundle, copy)
    done = _trainer("export", str(copy), env={"FRAUDSTREAM_BUNDLE_KEY": KEY})
    assert done.returncode == 0, done.stderr
    assert load_bundle(copy, key=KEY.encode(), require_signature=True).manifest["parity"]["max_abs_diff"] <= 1e-5


def test_bad_training_files_give_a_report_and_no_bundle(tmp_path: Path) -> None:
    tx = tmp_path / "tx.parquet"
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"tx_id": ["a", "a"], "ts": [2, 1], "customer_id": ["c", "c"],
                             "terminal_id": ["t", "t"], "amount": [1.0, -2.0]}), tx)
    pq.write_table(pa.table({"tx_id": ["zz"], "customer_id": ["c"], "terminal_id": ["t"], "ts": [1],
                             "is_fraud": [1]}), labels)
    out = tmp_path / "bundles"
    done = _trainer("train", "--transactions", str(tx), "--labels", str(labels), "--out", str(out))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for what in ("duplicate", "amount", "zz"):
        assert what in done.stderr, done.stderr
    assert not out.exists() or not any(out.iterdir())


def test_help_documents_env_variables() -> None:
    done = _trainer("train", "--help")
    assert done.returncode == 0
    for env in ("FRAUDSTREAM_ROUNDS", "FRAUDSTREAM_LEARNING_RATE", "FRAUDSTREAM_MAX_DEPTH", "FRAUDSTREAM_ALERT_BUDGET",
                "FRAUDSTREAM_TRANSACTIONS", "FRAUDSTREAM_BUNDLES"):
        assert env in done.stdout.replace("\n", " ").replace("  ", " ") or env in done.stdout, env


def test_bad_env_value_is_a_clear_error() -> None:
    done = _trainer("train", "--help", env={"FRAUDSTREAM_ROUNDS": "many"})
    assert done.returncode == 2 and "FRAUDSTREAM_ROUNDS='many'" in done.stderr


def test_bundle_carries_the_tensorized_graph(quick_bundle: Path) -> None:
    import onnx

    b = load_bundle(quick_bundle, key=KEY.encode(), require_signature=True)
    assert b.tensor_onnx_path == quick_bundle / "model_tensor.onnx" and "model_tensor.onnx" in b.manifest["files"]
    entry = b.manifest["tensor_onnx"]
    assert entry["file"] == "model_tensor.onnx" and entry["input"] == "input" and entry["output"] == "probabilities"
    assert entry["parity"]["max_abs_diff"] <= 1e-5 and entry["parity"]["edge_rows"] > 0
    assert 1 <= entry["depth"] <= 8 and entry["trees"] >= 1
    model = onnx.load(str(b.tensor_onnx_path))
    assert all(n.domain == "" for n in model.graph.node)
    booster = lgb.Booster(model_file=str(quick_bundle / "model.lgb.txt"))
    assert entry["trees"] == booster.num_trees()
    x = np.random.default_rng(4).gamma(2.0, 30.0, size=(3000, len(FEATURE_NAMES))).astype(np.float32)
    x[::40, 5] = np.nan
    x[::33, 2] = 0.0
    tensor, tree, native = onnx_scores(b.tensor_onnx_path, x), onnx_scores(b.onnx_path, x), booster.predict(x)
    assert np.abs(tensor - native).max() <= 1e-5 and np.abs(tensor - tree).max() <= 1e-5


def test_failing_tensorized_parity_writes_no_bundle(quick_bundle: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from trainer import pipeline
    from trainer.export import to_tensor_onnx

    booster = lgb.Booster(model_file=str(quick_bundle / "model.lgb.txt"))

    def broken(b: lgb.Booster) -> object:
        model = to_tensor_onnx(b)
        leaves = next(t for t in model.graph.initializer if t.name == "leaves")
        values = np.frombuffer(leaves.raw_data, np.float32).copy() + 0.5
        leaves.raw_data = values.tobytes()
        return model

    monkeypatch.setattr(pipeline, "to_tensor_onnx", broken)
    monkeypatch.setattr(pipeline, "test_mask", lambda ds, split: slice(None))
    x = np.random.default_rng(5).gamma(2.0, 30.0, size=(500, len(FEATURE_NAMES))).astype(np.float32)
    trained = SimpleNamespace(booster=booster, ds=SimpleNamespace(x=x), split=None)
    out = tmp_path / "bundles"
    with pytest.raises(ExportError, match="tensorized ONNX parity failed"):
        pipeline.write_bundle(trained, out, None, lambda _: None)  # type: ignore[arg-type]
    assert not out.exists() or not any(out.iterdir())


def test_export_subcommand_adds_the_tensorized_graph_to_an_old_bundle(quick_bundle: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from schemas.bundle import MANIFEST, seal

    old = tmp_path / "old"
    shutil.copytree(quick_bundle, old)
    (old / "model_tensor.onnx").unlink()
    manifest = json.loads((old / MANIFEST).read_text())
    manifest.pop("tensor_onnx")
    seal(old, manifest, KEY.encode())
    assert load_bundle(old, key=KEY.encode()).tensor_onnx_path is None
    done = _trainer("export", str(old), env={"FRAUDSTREAM_BUNDLE_KEY": KEY})
    assert done.returncode == 0, done.stderr
    b = load_bundle(old, key=KEY.encode(), require_signature=True)
    assert b.tensor_onnx_path is not None and b.manifest["tensor_onnx"]["parity"]["max_abs_diff"] <= 1e-5
