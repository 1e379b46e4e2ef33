"""The registry's Kafka edge (kafka-python, blocking): used by ``python -m trainer publish|promote|...`` and
by the worker (its start-up fetch, and ``asyncio.to_thread`` calls while it follows ``model-control``).

What goes on the topics is ``schemas/registry.py``'s; here, reading and writing them.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.bundle import Bundle, load_bundle
from schemas.errors import BundleError, ConfigError
from schemas.kafka_auth import KafkaAuth
from schemas.registry import (
    BUNDLES_TOPIC,
    CHUNK_BYTES,
    CONTROL_KEY,
    CONTROL_TOPIC,
    INDEX,
    BundleIndex,
    Control,
    assemble,
    bundle_records,
    index_key,
)
from schemas.replication import AUTO, cluster_factor, topic_settings

# Compacted: the latest record of a key is its word. Big enough for a chunk and its overhead.
TOPIC_CONFIG = {"cleanup.policy": "compact", "max.message.bytes": str(2 * CHUNK_BYTES)}


class Registry:
    def __init__(self, bootstrap: str, auth: KafkaAuth | None = None, bundles_topic: str = BUNDLES_TOPIC,
                 control_topic: str = CONTROL_TOPIC, client_id: str = "fraudstream-registry") -> None:
        self.bootstrap, self.auth = bootstrap, auth or KafkaAuth.from_env()
        self.bundles_topic, self.control_topic, self.client_id = bundles_topic, control_topic, client_id
        self._control: KafkaConsumer | None = None
        self._control_state: Control | None = None

    def _kw(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "client_id": self.client_id, **self.auth.kafka_python()}

    def ensure_topics(self) -> None:
        """Both topics, compacted, one partition (the index after its chunks; one order of control records)."""
        try:
            admin = KafkaAdminClient(**self._kw())
        except KafkaError as exc:
            raise ConfigError(f"the broker at {self.bootstrap} does not answer ({exc!r})") from exc
        try:
            existing = set(admin.list_topics())
            missing = [t for t in (self.bundles_topic, self.control_topic) if t not in existing]
            factor = cluster_factor(admin, AUTO) if missing else 1
            new = [NewTopic(t, 1, factor, topic_configs={**topic_settings(factor), **TOPIC_CONFIG}) for t in missing]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(new)
        finally:
            admin.close()

    def read_all(self, topic: str, timeout_s: float = 30.0) -> list[tuple[bytes, bytes]]:
        """Every (key, value) now in ``topic``, in offset order."""
        consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, fetch_max_bytes=64 << 20,
                                 max_partition_fetch_bytes=4 * CHUNK_BYTES, **self._kw())
        try:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not parts:
                return []
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            return _drain(consumer, parts, timeout_s)
        finally:
            consumer.close()

    # -- bundles ----------------------------------------------------------------------------------

    def indexes(self) -> dict[str, BundleIndex]:
        """Every published version's index (a malformed one is skipped: it names no usable bundle)."""
        out: dict[str, BundleIndex] = {}
        for key, value in self.read_all(self.bundles_topic):
            if key.endswith(b"|" + INDEX.encode()) and value:
                try:
                    index = BundleIndex.from_json(value)
                except BundleError:
                    continue
                out[index.version] = index
        return out

    def publish(self, bundle: Bundle) -> tuple[BundleIndex, bool]:
        """Write ``bundle`` to the bundles topic (acks=all, idempotent); (its index, whether it was written:
        False when the same version with the same content is there already)."""
        self.ensure_topics()
        records = list(bundle_records(bundle))
        index = BundleIndex.from_json(records[-1][1])
        have = self.indexes().get(bundle.model_version)
        if have is not None and have.digest() == index.digest():
            return have, False
        producer = KafkaProducer(acks="all", max_request_size=2 * CHUNK_BYTES, linger_ms=5, **self._kw())
        try:
            for key, value in records:
                producer.send(self.bundles_topic, key=key, value=value)
            producer.flush()
        finally:
            producer.close()
        return index, True

    def fetch_verified(self, version: str, root: Path, key: bytes | None, require_signature: bool = False) -> Bundle:
        """``fetch``, then ``load_bundle``'s checks (file checksums, signature, feature set): what a worker
        serves."""
        return load_bundle(self.fetch(version, root), key=key, require_signature=require_signature)

    def verify(self, version: str, key: bytes | None, require_signature: bool = False) -> None:
        """Fetch ``version`` into a temporary directory and check it as a worker will (``BundleError`` if not)."""
        with tempfile.TemporaryDirectory(prefix="fraudstream-verify-") as tmp:
            self.fetch_verified(version, Path(tmp), key, require_signature)

    def fetch(self, version: str, root: Path) -> Path:
        """Reassemble ``version`` under ``root`` (checked chunk by chunk); ``BundleError`` if it is not there whole."""
        records = self.read_all(self.bundles_topic)
        prefix = f"{version}|".encode()
        chunks = {k: v for k, v in records if k.startswith(prefix)}
        raw = chunks.get(index_key(version))
        if raw is None:
            raise BundleError(f"model {version} is not in the registry ({self.bundles_topic}): publish it with "
                              f"`python -m trainer publish BUNDLE`")
        return assemble(BundleIndex.from_json(raw), chunks, root)

    # -- control ----------------------------------------------------------------------------------

    def control(self) -> Control:
        """The latest control record (an empty one when there is none yet)."""
        latest = Control()
        for key, value in self.read_all(self.control_topic):
            if key == CONTROL_KEY and value:
                latest = Control.from_json(value)
        return latest

    def write_control(self, c: Control) -> None:
        self.ensure_topics()
        producer = KafkaProducer(acks="all", **self._kw())
        try:
            producer.send(self.control_topic, key=CONTROL_KEY, value=c.to_json()).get(timeout=30)
        finally:
            producer.close()

    def poll_control(self, timeout_ms: int = 1000) -> Control | None:
        """Follow the control topic: the latest state once it is known, re-read only as new records come
        (one consumer kept between calls; call from one thread at a time)."""
        if self._control is None:
            consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **self._kw())
            tp = TopicPartition(self.control_topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            self._control = consumer
        for records in self._control.poll(timeout_ms=timeout_ms).values():
            for r in records:
                if r.key == CONTROL_KEY and r.value:
                    self._control_state = Control.from_json(r.value)
        return self._control_state

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None


def _drain(consumer: KafkaConsumer, parts: Iterable[TopicPartition], timeout_s: float) -> list[tuple[bytes, bytes]]:
    parts = list(parts)
    ends = consumer.end_offsets(parts)
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while any(consumer.position(tp) < ends[tp] for tp in parts):
        if time.monotonic() > deadline:
            raise BundleError(f"reading {parts[0].topic} timed out after {timeout_s:.0f}s")
        for records in consumer.poll(timeout_ms=500).values():
            out.extend((r.key or b"", r.value or b"") for r in records)
    return out
