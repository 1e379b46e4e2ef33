"""How every topic fraudstream creates is replicated: one rule for the worker, the monitor, the
registry and the load generator.

``--replication-factor auto`` (0) is 3 on a cluster of three or more brokers, else 1 (a single
development broker); ``min.insync.replicas`` is 2 when the factor is 3 or more, so that a write
acknowledged with ``acks=all`` is on two brokers and one broker may be lost without refusing
writes; below 3 it is 1 (a factor of 2 with 2 in sync would refuse every write while one broker is
down). Topics that exist are left as they are.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import ConfigError

AUTO = 0
FULL = 3  # the factor ``auto`` picks on a cluster of three brokers or more


def parse_factor(value: str) -> int:
    """``auto`` (0) or a positive replication factor."""
    if value.strip().lower() == "auto":
        return AUTO
    n = int(value)
    if n < 1:
        raise ValueError(f"must be auto or a replication factor >= 1, got {value}")
    return n


def choose(requested: int, brokers: int) -> int:
    """The replication factor for a cluster of ``brokers``; a factor the cluster cannot hold fails here,
    at start, rather than at the first topic creation."""
    if requested == AUTO:
        return FULL if brokers >= FULL else 1
    if requested > brokers:
        raise ConfigError(f"--replication-factor {requested}: the cluster has {brokers} broker(s); "
                          f"use auto or at most {brokers}")
    return requested


def min_insync(factor: int) -> int:
    return 2 if factor >= FULL else 1


def topic_settings(factor: int) -> dict[str, str]:
    """Topic-level configs that go with a replication factor."""
    return {"min.insync.replicas": str(min_insync(factor))}


def cluster_factor(admin: Any, requested: int) -> int:
    """The factor for the cluster ``admin`` (a kafka-python ``KafkaAdminClient``) talks to."""
    brokers = len(admin.describe_cluster().get("brokers", ())) or 1
    return choose(requested, brokers)


__all__ = ["AUTO", "choose", "cluster_factor", "min_insync", "parse_factor", "topic_settings"]
