"""The replication rule every created topic follows (schemas/replication.py)."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from schemas.replication import AUTO, choose, min_insync, parse_factor, topic_settings
from workers.config import parse


def test_auto_is_three_on_a_cluster_of_three_or_more_else_one() -> None:
    assert [choose(AUTO, n) for n in (1, 2, 3, 5)] == [1, 1, 3, 3]


def test_an_explicit_factor_is_kept_when_the_cluster_holds_it_and_refused_when_not() -> None:
    assert choose(2, 3) == 2
    with pytest.raises(ConfigError, match="the cluster has 1 broker"):
        choose(3, 1)


def test_two_replicas_must_acknowledge_once_there_are_three() -> None:
    assert [min_insync(f) for f in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert topic_settings(3) == {"min.insync.replicas": "2"}


def test_the_flag_takes_auto_or_a_positive_factor() -> None:
    assert parse_factor("auto") == AUTO and parse_factor("3") == 3
    with pytest.raises(ValueError, match="auto or a replication factor"):
        parse_factor("0")


def test_worker_flags_for_replication_and_the_guarantee() -> None:
    s = parse(["--replication-factor", "3", "--guarantee", "exactly-once"])
    assert s.replication_factor == 3 and s.exactly_once
    d = parse([])
    assert d.replication_factor == AUTO and not d.exactly_once
    assert s.commit_interval_ms == 100 and d.commit_interval_ms == 1000  # exactly-once commits more often
    assert parse(["--guarantee", "exactly-once", "--commit-interval-ms", "500"]).commit_interval_ms == 500
    with pytest.raises(ConfigError, match="--guarantee 'exactly_once': choose one of at-least-once, exactly-once"):
        parse(["--guarantee", "exactly_once"])
