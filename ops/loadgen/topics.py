"""Create the load generator's topics when they are missing."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas.kafka_auth import KafkaAuth


def ensure_topics(bootstrap: str, names: list[str], partitions: int, configs: dict[str, str] | None = None) -> None:
    """Create the missing ones (``configs``: topic-level settings for those created)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **KafkaAuth.from_env().kafka_python(),
                             client_id="fraudstream-loadgen-admin")
    try:
        existing = set(admin.list_topics())
        for name in dict.fromkeys(names):
            if name not in existing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                  topic_configs=configs or {})])
    finally:
        admin.close()
