"""Repeated library log lines are rate-limited, and the next one let through says how many were dropped."""

from __future__ import annotations

import logging

import pytest

from workers.logs import RepeatLimit, limit_library_logs


def _record(msg: str, level: int = logging.ERROR, name: str = "aiokafka.conn",
            args: tuple[object, ...] = ()) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_burst_passes_then_repeats_are_dropped_and_counted_in_the_next_window() -> None:
    now = [0.0]
    limit = RepeatLimit(burst=3, window_s=10, clock=lambda: now[0])
    passed = [limit.filter(_record("Unable connect to node with id %s")) for _ in range(50)]
    assert passed == [True] * 3 + [False] * 47
    assert limit.filter(_record("another message")), "each message has its own budget"
    now[0] = 10.0
    nxt = _record("Unable connect to node with id %s")
    assert limit.filter(nxt)
    assert "47 more like this" in str(nxt.msg)


def test_the_same_format_with_other_arguments_is_another_message() -> None:
    """"Discovered coordinator 2 for group g" must not hide "... for group g-labels" (a test reads the first)."""
    limit = RepeatLimit(burst=1, window_s=10, clock=lambda: 0.0)
    fmt = "Discovered coordinator %s for group %s"
    assert limit.filter(_record(fmt, logging.INFO, args=(2, "g-app")))
    assert not limit.filter(_record(fmt, logging.INFO, args=(2, "g-app")))
    assert limit.filter(_record(fmt, logging.INFO, args=(2, "g")))


def test_levels_and_loggers_are_counted_apart() -> None:
    limit = RepeatLimit(burst=1, window_s=10, clock=lambda: 0.0)
    assert limit.filter(_record("x", logging.ERROR))
    assert limit.filter(_record("x", logging.WARNING))
    assert limit.filter(_record("x", name="faust.transport"))
    assert not limit.filter(_record("x", logging.ERROR))


def test_installed_on_library_loggers_it_holds_whatever_the_handlers(caplog: pytest.LogCaptureFixture) -> None:
    import aiokafka.conn  # noqa: F401 - creates its logger

    limit = limit_library_logs(limit=RepeatLimit(burst=2, window_s=60))
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(100):
                logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", 1)
        assert len([r for r in caplog.records if r.name == "aiokafka.conn"]) == 2
    finally:
        for name in list(logging.Logger.manager.loggerDict):
            logger = logging.getLogger(name)
            if limit in logger.filters:
                logger.removeFilter(limit)
