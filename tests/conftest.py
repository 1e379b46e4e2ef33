"""Shared fixtures: a real Kafka broker for the session, and uuid-named topics and groups.

The broker, in order: ``KAFKA_BOOTSTRAP`` when set; a testcontainers Kafka container when a
Docker engine answers; else the project's own launcher (``ops.kafka``) on free ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from ops.kafka import LocalBroker, broker_answers
from schemas.bundle import Bundle, load_bundle


def _docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no engine, no socket, no client: all mean "no Docker here"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        assert broker_answers(external, timeout_s=10.0), f"KAFKA_BOOTSTRAP={external} does not answer"
        yield external
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    info = broker.start(port=0)
    try:
        yield info.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="fraudstream-tests")
    yield admin
    admin.close()


@pytest.fixture
def new_topic(kafka_admin: KafkaAdminClient) -> Callable[..., str]:
    """Factory: ``new_topic(partitions=1, prefix="t", **configs)`` creates a uuid-named topic."""

    def make(partitions: int = 1, prefix: str = "t", **configs: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1,
                         topic_configs={k.replace("_", "."): v for k, v in configs.items()})
        kafka_admin.create_topics([topic])
        return name

    return make


@pytest.fixture
def new_group() -> Callable[[], str]:
    """Factory: a fresh consumer-group id per call."""
    return lambda: f"g-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A quick model bundle (``python -m trainer run --quick``), trained once per session."""
    root = tmp_path_factory.mktemp("bundle")
    done = subprocess.run([sys.executable, "-m", "trainer", "run", "--quick", "--folds", "0", "--out",
                           str(root / "b"), "--data-dir", str(root / "d")], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return load_bundle(Path(done.stdout.strip().splitlines()[-1]))
