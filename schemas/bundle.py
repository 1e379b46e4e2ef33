"""The model bundle: a versioned directory the trainer writes and the worker loads.

Layout::

    <bundle>/
      model.json         manifest: format, model version, feature set, threshold, metrics, params,
                         data window, library versions, sha256 of every other file, signature
      model.onnx         TreeEnsembleClassifier graph (ai.onnx.ml): the CPU graph
      model_tensor.onnx  the same model from standard tensor ops only (padded perfect trees, level by
                         level; trainer/tensorize.py): the GPU graph, every node has a CUDA kernel.
                         Same input ``input`` [N, F] and output ``probabilities`` [N, 2]. Optional:
                         bundles written before issue 8 lack it (``Bundle.tensor_onnx_path`` is None)
      model.lgb.txt      the native LightGBM model
      report.md, report.json, roc.png, pr.png

The signature is HMAC-SHA256 (hex) over the canonical JSON of the manifest without its
``signature`` field; the manifest holds every file's sha256, so it covers them all. Loading
needs only the standard library (the worker reads ``model.lgb.txt`` with LightGBM only for the
reason codes of its flags, ``workers/explain.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.drift import Monitoring, parse_monitoring
from schemas.errors import BundleError
from schemas.features import FEATURE_DTYPE, FEATURE_NAMES, FEATURE_VERSION

BUNDLE_FORMAT = "fraudstream-bundle/1"
MANIFEST = "model.json"
ONNX_FILE = "model.onnx"
TENSOR_ONNX_FILE = "model_tensor.onnx"
LGB_FILE = "model.lgb.txt"


def env_key() -> bytes | None:
    """The HMAC signing key of bundles, from env ``FRAUDSTREAM_BUNDLE_KEY``; None when unset or empty."""
    key = os.environ.get("FRAUDSTREAM_BUNDLE_KEY") or None
    return key.encode() if key else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(manifest: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest()


def feature_set() -> dict[str, Any]:
    return {"version": FEATURE_VERSION, "names": list(FEATURE_NAMES), "dtype": FEATURE_DTYPE}


def seal(directory: Path, manifest: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """Add checksums of every file in ``directory`` (and a signature) and write ``model.json``."""
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    sealed = {**manifest, "format": BUNDLE_FORMAT, "feature_set": feature_set(), "files": files}
    sealed.pop("signature", None)
    if key:
        sealed["signature"] = {"alg": "HMAC-SHA256", "value": sign(sealed, key)}
    (directory / MANIFEST).write_text(json.dumps(sealed, indent=2, sort_keys=True))
    return sealed


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def tensor_onnx_path(self) -> Path | None:
        """The tensorized (GPU) graph; None for a bundle without one. Its checksum was verified at load."""
        return self.path / TENSOR_ONNX_FILE if TENSOR_ONNX_FILE in self.manifest.get("files", {}) else None

    @property
    def lgb_path(self) -> Path | None:
        """The native LightGBM model; None when the manifest lists none. Its checksum was verified at load."""
        return self.path / LGB_FILE if LGB_FILE in self.manifest.get("files", {}) else None

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]["value"])

    @property
    def signed(self) -> bool:
        return "signature" in self.manifest

    @property
    def monitoring(self) -> Monitoring | None:
        """Reference distributions and calibration (``schemas/drift.py``); None in bundles without them."""
        return parse_monitoring(self.manifest, FEATURE_NAMES)


def load_bundle(path: Path | str, key: bytes | None = None, require_signature: bool = False) -> Bundle:
    """Load and verify a bundle; raise ``BundleError`` naming the problem and what to do."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"model bundle {path} does not exist: train one with `python -m trainer run`")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing: {path} is not a model bundle")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}): the bundle is corrupt") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format is not {BUNDLE_FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or ONNX_FILE not in files:
        raise BundleError(f"{manifest_path} lists no {ONNX_FILE}: the bundle is incomplete")
    for name, digest in sorted(files.items()):
        f = path / name
        if not f.is_file():
            raise BundleError(f"bundle file {f} is missing")
        actual = sha256_file(f)
        if actual != digest:
            raise BundleError(f"bundle file {f} is corrupt: sha256 {actual[:16]}... != manifest {str(digest)[:16]}...")
    signature = manifest.get("signature")
    if require_signature and not signature:
        raise BundleError(f"bundle {path} is not signed but a signature is required: re-train with a signing key")
    if signature:
        if key is None:
            if require_signature:
                raise BundleError("a signature is required but no signing key is configured (FRAUDSTREAM_BUNDLE_KEY)")
        else:
            value = signature.get("value", "") if isinstance(signature, dict) else ""
            if not hmac.compare_digest(str(value), sign(manifest, key)):
                raise BundleError(f"bundle {path} has a wrong signature: it was altered or signed with another key")
    fs = manifest.get("feature_set", {})
    if fs.get("version") != FEATURE_VERSION or fs.get("names") != list(FEATURE_NAMES):
        raise BundleError(
            f"bundle {path} was built for feature set {fs.get('version')!r}, this worker computes "
            f"{FEATURE_VERSION!r}: re-train the bundle with this version of fraudstream"
        )
    bundle = Bundle(path, manifest)
    bundle.monitoring  # noqa: B018  (a malformed monitoring block is refused at load, not at first use)
    return bundle
