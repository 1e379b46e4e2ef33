"""The model registry on Kafka: bundles as chunked records, and which version is champion and shadow.

Two compacted topics, no server:

- ``model-bundles``: each bundle (schemas/bundle.py) as records keyed ``{version}|{file}|{chunk:05d}``
  (at most ``CHUNK_BYTES`` each, under the broker's default 1 MB message size), then one index record
  keyed ``{version}|index`` (``BundleIndex``): every file's size, sha256 and the sha256 of each of its
  chunks, and the sha256 of the index's file list as a whole. The index is written last, so a reader
  that sees it has every chunk before it (same partition: the topic has one). The bundle's HMAC
  signature travels inside its ``model.json``, checked by ``load_bundle`` after reassembly.
- ``model-control``: one key (``CONTROL_KEY``), each record the whole state (``Control``): the champion,
  the shadow, the champions before (for ``rollback``), who changed it and when. Compaction keeps the
  latest; a worker that starts reads it and follows it.

Pure: bytes in, bytes out; the Kafka edges are ``trainer/registry.py`` (publish, promote, rollback,
models) and ``workers/registry.py`` (the worker's fetch and follow).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from schemas.bundle import MANIFEST, Bundle
from schemas.errors import BundleError

BUNDLES_TOPIC = "model-bundles"
CONTROL_TOPIC = "model-control"
CONTROL_KEY = b"control"
CHUNK_BYTES = 512 * 1024
INDEX = "index"
HISTORY = 20  # champions remembered for rollback


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_key(version: str, name: str, i: int) -> bytes:
    return f"{version}|{name}|{i:05d}".encode()


def index_key(version: str) -> bytes:
    return f"{version}|{INDEX}".encode()


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str
    chunks: tuple[str, ...]  # sha256 of each chunk, in order


@dataclass(frozen=True)
class BundleIndex:
    version: str
    files: dict[str, FileEntry]
    signed: bool
    created: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """The sha256 of the whole: every file's name, size and sha256, canonically."""
        body = {n: [f.size, f.sha256, list(f.chunks)] for n, f in sorted(self.files.items())}
        return _sha(json.dumps([self.version, body], sort_keys=True, separators=(",", ":")).encode())

    def to_json(self) -> bytes:
        return json.dumps({"version": self.version, "signed": self.signed, "created": self.created,
                           "metrics": self.metrics, "sha256": self.digest(),
                           "files": {n: {"size": f.size, "sha256": f.sha256, "chunks": list(f.chunks)}
                                     for n, f in sorted(self.files.items())}}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BundleIndex:
        try:
            d = json.loads(raw)
            files = {str(n): FileEntry(int(f["size"]), str(f["sha256"]), tuple(str(c) for c in f["chunks"]))
                     for n, f in d["files"].items()}
            index = cls(str(d["version"]), files, bool(d["signed"]), str(d["created"]), dict(d.get("metrics", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"a registry index record is malformed ({exc!r})") from exc
        if index.digest() != d.get("sha256"):
            raise BundleError(f"model {index.version}: the registry index's checksum does not match its content")
        if MANIFEST not in index.files:
            raise BundleError(f"model {index.version}: the registry index lists no {MANIFEST}")
        return index


def bundle_records(bundle: Bundle, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every chunk of every file of ``bundle``, then its index record, in publish order."""
    names = [MANIFEST, *sorted(bundle.manifest.get("files", {}))]
    files: dict[str, FileEntry] = {}
    for name in names:
        data = (bundle.path / name).read_bytes()
        parts = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
        for i, part in enumerate(parts):
            yield chunk_key(bundle.model_version, name, i), part
        files[name] = FileEntry(len(data), _sha(data), tuple(_sha(p) for p in parts))
    yield index_key(bundle.model_version), BundleIndex(bundle.model_version, files, bundle.signed,
                                                       str(bundle.manifest.get("created_at", "")),
                                                       headline(bundle)).to_json()


def headline(bundle: Bundle) -> dict[str, Any]:
    """What ``trainer models`` lists of a version: its threshold and the model's test metrics."""
    runs = bundle.manifest.get("metrics") or [{}]
    test = runs[0].get("test", {}) if isinstance(runs, list) and isinstance(runs[0], dict) else {}
    return {"threshold": bundle.threshold, **{k: test[k] for k in ("auc", "ap", "cp100") if k in test}}


def assemble(index: BundleIndex, chunks: Mapping[bytes, bytes], root: Path) -> Path:
    """Write the bundle of ``index`` from its ``chunks`` (key -> bytes) to ``root/<version>``, every chunk
    and file checked against the index (``BundleError`` naming the first that fails); the directory
    appears whole or not at all. ``load_bundle`` then checks the manifest (checksums, signature, features)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / index.version
    tmp = Path(tempfile.mkdtemp(prefix=f".{index.version}.", dir=root))
    try:
        for name, entry in index.files.items():
            if "/" in name or name in (".", ".."):
                raise BundleError(f"model {index.version}: the registry names a file {name!r} outside the bundle")
            parts = []
            for i, want in enumerate(entry.chunks):
                part = chunks.get(chunk_key(index.version, name, i))
                if part is None:
                    raise BundleError(f"model {index.version}: chunk {i} of {name} is missing from the registry")
                if _sha(part) != want:
                    raise BundleError(f"model {index.version}: chunk {i} of {name} is corrupt (sha256 mismatch)")
                parts.append(part)
            data = b"".join(parts)
            if len(data) != entry.size or _sha(data) != entry.sha256:
                raise BundleError(f"model {index.version}: {name} reassembled does not match its checksum")
            (tmp / name).write_bytes(data)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass(frozen=True)
class Control:
    """Which versions serve: the champion scores and flags, the shadow only scores (to ``shadow-scores``)."""

    champion: str | None = None
    shadow: str | None = None
    previous: tuple[str, ...] = ()   # earlier champions, the latest last
    at: int = 0                      # epoch ms of the change
    by: str = ""
    reason: str = ""

    def promote(self, version: str, at: int, by: str, reason: str = "") -> Control:
        if version == self.champion:
            return replace(self, at=at, by=by, reason=reason or "already champion")
        previous = (*self.previous, self.champion) if self.champion else self.previous
        return Control(version, None if self.shadow == version else self.shadow, previous[-HISTORY:], at, by,
                       reason or "promote")

    def with_shadow(self, version: str | None, at: int, by: str, reason: str = "") -> Control:
        if version is not None and version == self.champion:
            raise BundleError(f"{version} is the champion: it cannot be its own shadow")
        return replace(self, shadow=version, at=at, by=by, reason=reason or ("shadow" if version else "no shadow"))

    def rollback(self, at: int, by: str, reason: str = "") -> Control:
        if not self.previous:
            raise BundleError("nothing to roll back to: no earlier champion in model-control")
        return Control(self.previous[-1], self.shadow if self.shadow != self.previous[-1] else None,
                       self.previous[:-1], at, by, reason or f"rollback from {self.champion}")

    def to_json(self) -> bytes:
        return json.dumps({"champion": self.champion, "shadow": self.shadow, "previous": list(self.previous),
                           "at": self.at, "by": self.by, "reason": self.reason}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Control:
        try:
            d = json.loads(raw)
            return cls(d.get("champion"), d.get("shadow"), tuple(d.get("previous", ())), int(d.get("at", 0)),
                       str(d.get("by", "")), str(d.get("reason", "")))
        except (ValueError, TypeError, AttributeError) as exc:
            raise BundleError(f"a model-control record is malformed ({exc!r})") from exc
