"""Create the load generator's topics when they are missing."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas.kafka_auth import KafkaAuth
from schemas.replication import AUTO, cluster_factor, topic_settings


def ensure_topics(bootstrap: str, names: list[str], partitions: int, configs: dict[str, str] | None = None,
                  replication: int = AUTO) -> None:
    """Create the missing ones (``configs``: topic-level settings for those created), replicated as the
    worker's (``schemas.replication``: 3 on a cluster of three brokers or more, else 1)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **KafkaAuth.from_env().kafka_python(),
                             client_id="fraudstream-loadgen-admin")
    try:
        existing = set(admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        factor = cluster_factor(admin, replication) if missing else 1
        for name in missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=factor,
                                              topic_configs={**topic_settings(factor), **(configs or {})})])
    finally:
        admin.close()
