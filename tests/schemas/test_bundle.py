"""Bundle loading refuses what is missing, corrupt, unsigned, wrongly signed or incompatible."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.bundle import MANIFEST, TENSOR_ONNX_FILE, load_bundle, seal, sha256_file
from schemas.errors import BundleError

KEY = b"s3cret-key"


def _bundle(tmp_path: Path, key: bytes | None = None) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"onnx bytes")
    (d / "model.lgb.txt").write_text("tree")
    seal(d, {"model_version": "m1", "threshold": {"value": 0.5}}, key=key)
    return d


def test_good_bundle_loads(tmp_path: Path) -> None:
    b = load_bundle(_bundle(tmp_path))
    assert b.model_version == "m1" and b.threshold == 0.5 and not b.signed
    assert set(b.manifest["files"]) == {"model.onnx", "model.lgb.txt"}


def test_missing_bundle_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match=r"model\.json is missing"):
        load_bundle(tmp_path)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    d = _bundle(tmp_path)
    (d / "model.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(BundleError, match=r"model\.onnx is corrupt"):
        load_bundle(d)


def test_missing_file_and_corrupt_manifest(tmp_path: Path) -> None:
    d = _bundle(tmp_path)
    (d / "model.lgb.txt").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(d)
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(d)


def test_wrong_feature_version_is_refused(tmp_path: Path) -> None:
    d = _bundle(tmp_path)
    m = json.loads((d / MANIFEST).read_text())
    m["feature_set"]["version"] = "fs0-old"
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="feature set 'fs0-old'"):
        load_bundle(d)


def test_signatures(tmp_path: Path) -> None:
    unsigned = _bundle(tmp_path)
    with pytest.raises(BundleError, match="not signed"):
        load_bundle(unsigned, key=KEY, require_signature=True)
    signed_dir = tmp_path / "s"
    signed_dir.mkdir()
    signed = _bundle(signed_dir, key=KEY)
    assert load_bundle(signed, key=KEY, require_signature=True).signed
    with pytest.raises(BundleError, match="wrong signature"):
        load_bundle(signed, key=b"other", require_signature=True)
    # Tampering with the manifest (e.g. the threshold) breaks the signature.
    m = json.loads((signed / MANIFEST).read_text())
    m["threshold"]["value"] = 0.99
    (signed / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="wrong signature"):
        load_bundle(signed, key=KEY)
    with pytest.raises(BundleError, match="no signing key"):
        load_bundle(signed, key=None, require_signature=True)


def _bundle_with_tensor(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"onnx bytes")
    (d / TENSOR_ONNX_FILE).write_bytes(b"tensor onnx bytes")
    (d / "model.lgb.txt").write_text("tree")
    seal(d, {"model_version": "m1", "threshold": {"value": 0.5}})
    return d


def test_both_graphs_are_listed_checksummed_and_exposed(tmp_path: Path) -> None:
    b = load_bundle(_bundle_with_tensor(tmp_path))
    files = b.manifest["files"]
    assert {"model.onnx", TENSOR_ONNX_FILE} <= set(files)
    assert files[TENSOR_ONNX_FILE] == sha256_file(b.path / TENSOR_ONNX_FILE) != files["model.onnx"]
    assert b.onnx_path == b.path / "model.onnx" and b.tensor_onnx_path == b.path / TENSOR_ONNX_FILE


def test_bundle_without_a_tensor_graph_loads_with_none(tmp_path: Path) -> None:
    d = _bundle(tmp_path)
    assert load_bundle(d).tensor_onnx_path is None
    # A tensor graph dropped in later without re-sealing is not trusted: it is not exposed.
    (d / TENSOR_ONNX_FILE).write_bytes(b"unlisted")
    assert load_bundle(d).tensor_onnx_path is None


def test_tampered_tensor_graph_is_refused(tmp_path: Path) -> None:
    d = _bundle_with_tensor(tmp_path)
    (d / TENSOR_ONNX_FILE).write_bytes(b"tensor onnx bytez")
    with pytest.raises(BundleError, match=r"model_tensor\.onnx is corrupt"):
        load_bundle(d)
    (d / TENSOR_ONNX_FILE).unlink()
    with pytest.raises(BundleError, match=r"model_tensor\.onnx is missing"):
        load_bundle(d)


def _monitoring() -> dict[str, Any]:
    bins = {"edges": [1.0, 2.0], "expected": [0.25, 0.5, 0.25]}
    return {
        "reference": {"rows": 100, "features": {"TX_AMOUNT": dict(bins)}, "score": dict(bins),
                      "excluded": ["TX_DURING_WEEKEND", "TX_DURING_NIGHT"]},
        "calibration": {"method": "isotonic", "x": [0.0, 0.5, 1.0], "y": [0.0, 0.2, 0.9]},
        "expected_alert_rate": 0.01,
        "expected_precision": 0.5,
    }


def _with_monitoring(tmp_path: Path, block: dict[str, Any]) -> Path:
    d = _bundle(tmp_path)
    seal(d, {**json.loads((d / MANIFEST).read_text()), "monitoring": block})
    return d


def test_bundle_without_a_monitoring_block_loads_with_none(tmp_path: Path) -> None:
    assert load_bundle(_bundle(tmp_path)).monitoring is None


def test_monitoring_block_is_parsed_at_load(tmp_path: Path) -> None:
    m = load_bundle(_with_monitoring(tmp_path, _monitoring())).monitoring
    assert m is not None and list(m.features) == ["TX_AMOUNT"] and m.rows == 100
    assert m.excluded == ("TX_DURING_WEEKEND", "TX_DURING_NIGHT")
    assert m.calibration([0.25, 2.0]).tolist() == [0.1, 0.9]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, leaf = path.split(".")

    def change(block: dict[str, Any]) -> None:
        for key in parents:
            block = block[key]
        if value is _DROP:
            del block[leaf]
        else:
            block[leaf] = value

    return change


_DROP = object()


@pytest.mark.parametrize(("change", "message"), [
    (_set("reference.features.TX_AMOUNT.expected", [0.5, 0.5, 0.5]), r"'TX_AMOUNT'.*sum to 1"),
    (_set("reference.features.TX_AMOUNT.edges", [2.0, 1.0]), r"'TX_AMOUNT'.*finite and increasing"),
    (_set("reference.score.edges", [1.0]), r"'score'.*1 edges need 2 shares"),
    (_set("reference.features.NO_SUCH_FEATURE", {"edges": [], "expected": [1.0]}), "unknown features"),
    (_set("calibration.y", [0.0, 0.2, 1.5]), r"y must be probabilities in \[0, 1\]"),
    (_set("calibration.x", [0.0, 1.0, 0.5]), "x must be increasing"),
    (_set("calibration", {"x": [0.0, 1.0]}), "calibration is malformed"),
    (_set("expected_alert_rate", _DROP), "monitoring block is malformed.*expected_alert_rate"),
])
def test_malformed_monitoring_block_is_refused_at_load(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                                                       message: str) -> None:
    block = _monitoring()
    change(block)
    with pytest.raises(BundleError, match=message):
        load_bundle(_with_monitoring(tmp_path, block))
