"""The registry's records: a bundle chunked and reassembled byte for byte, every corruption refused; the
control state's promote, shadow and rollback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas.bundle import MANIFEST, Bundle, load_bundle, seal
from schemas.errors import BundleError
from schemas.registry import BundleIndex, Control, assemble, bundle_records, chunk_key, index_key


def renamed(bundle: Bundle, version: str, root: Path, key: bytes | None = None) -> Bundle:
    """A copy of ``bundle`` under another model version (same model), re-sealed."""
    out = root / version
    shutil.copytree(bundle.path, out)
    manifest = json.loads((out / MANIFEST).read_text())
    seal(out, {**manifest, "model_version": version}, key)
    return load_bundle(out, key=key)


def _records(bundle: Bundle, chunk_bytes: int = 100_000) -> dict[bytes, bytes]:
    return dict(bundle_records(bundle, chunk_bytes))


def test_a_bundle_comes_back_whole_and_verifies(bundle: Bundle, tmp_path: Path) -> None:
    records = list(bundle_records(bundle, 100_000))
    assert records[-1][0] == index_key(bundle.model_version), "the index comes last"
    assert all(len(v) <= 100_000 for _, v in records[:-1])
    index = BundleIndex.from_json(records[-1][1])
    assert set(index.files) == {MANIFEST, *bundle.manifest["files"]}
    assert index.metrics["threshold"] == bundle.threshold and "auc" in index.metrics
    out = assemble(index, dict(records), tmp_path / "reg")
    assert out == tmp_path / "reg" / bundle.model_version
    for name in index.files:
        assert (out / name).read_bytes() == (bundle.path / name).read_bytes(), name
    assert load_bundle(out).model_version == bundle.model_version
    assert [p.name for p in (tmp_path / "reg").iterdir()] == [bundle.model_version], "no temporary left behind"


def test_a_tampered_or_missing_chunk_and_a_forged_index_are_refused(bundle: Bundle, tmp_path: Path) -> None:
    records = _records(bundle)
    index = BundleIndex.from_json(records[index_key(bundle.model_version)])
    k = chunk_key(bundle.model_version, "model.onnx", 1)
    tampered = {**records, k: records[k][:-1] + bytes([records[k][-1] ^ 1])}
    with pytest.raises(BundleError, match=r"chunk 1 of model.onnx is corrupt"):
        assemble(index, tampered, tmp_path / "reg")
    missing = {key: v for key, v in records.items() if key != k}
    with pytest.raises(BundleError, match=r"chunk 1 of model.onnx is missing"):
        assemble(index, missing, tmp_path / "reg")
    assert not (tmp_path / "reg" / bundle.model_version).exists(), "nothing half-written"
    forged = json.loads(records[index_key(bundle.model_version)])
    forged["files"]["model.onnx"]["size"] += 1
    with pytest.raises(BundleError, match="checksum does not match"):
        BundleIndex.from_json(json.dumps(forged).encode())
    with pytest.raises(BundleError, match="malformed"):
        BundleIndex.from_json(b"{not json")
    evil = BundleIndex(index.version, {**index.files, "../x": index.files[MANIFEST]}, False, "")
    with pytest.raises(BundleError, match="outside the bundle"):
        assemble(evil, {**records, chunk_key(index.version, "../x", 0): records[chunk_key(index.version, MANIFEST, 0)]},
                 tmp_path / "reg")


def test_a_signature_travels_in_the_manifest(bundle: Bundle, tmp_path: Path) -> None:
    signed = renamed(bundle, "v-signed", tmp_path / "src", key=b"k1")
    out = assemble(BundleIndex.from_json(_records(signed)[index_key("v-signed")]), _records(signed), tmp_path / "r")
    assert load_bundle(out, key=b"k1", require_signature=True).signed
    with pytest.raises(BundleError, match="wrong signature"):
        load_bundle(out, key=b"other", require_signature=True)
    unsigned = renamed(bundle, "v-unsigned", tmp_path / "src")
    out = assemble(BundleIndex.from_json(_records(unsigned)[index_key("v-unsigned")]), _records(unsigned),
                   tmp_path / "r")
    with pytest.raises(BundleError, match="not signed"):
        load_bundle(out, key=b"k1", require_signature=True)


def test_control_promote_shadow_and_rollback() -> None:
    c = Control().promote("a", 1, "me")
    assert (c.champion, c.shadow, c.previous) == ("a", None, ())
    c = c.with_shadow("b", 2, "me")
    assert (c.champion, c.shadow) == ("a", "b")
    with pytest.raises(BundleError, match="its own shadow"):
        c.with_shadow("a", 3, "me")
    c = c.promote("b", 4, "you", "better AP")
    assert (c.champion, c.shadow, c.previous, c.by, c.reason) == ("b", None, ("a",), "you", "better AP")
    c = c.promote("c", 5, "me").rollback(6, "me")
    assert (c.champion, c.previous) == ("b", ("a",)) and c.reason == "rollback from c"
    assert Control.from_json(c.to_json()) == c
    back = c.rollback(7, "me")
    assert (back.champion, back.previous) == ("a", ())
    with pytest.raises(BundleError, match="nothing to roll back"):
        back.rollback(8, "me")
    assert Control().promote("a", 1, "me").promote("a", 2, "me").previous == (), "re-promoting adds no history"
