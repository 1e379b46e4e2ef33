"""Rate-limited library logs: while a broker is away, aiokafka and Faust log every failed connection,
metadata request and fetch — thousands of lines a minute per worker, which bury the one line that
says what is wrong. Each repeated message of those libraries (same logger, level and text, arguments
included: "coordinator 2 for group g" and "... for group g-labels" are two messages) is let through
``burst`` times per ``window_s``; the next one let through says how many were dropped.

The filter sits on the libraries' loggers themselves (not on a handler), so it holds whatever
handlers Faust installs when it starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

LIBRARIES = ("aiokafka", "kafka", "faust", "mode")
BURST = 5
WINDOW_S = 30.0


class RepeatLimit(logging.Filter):
    def __init__(self, burst: int = BURST, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self.seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        key = (record.name, record.levelno, text)
        now = self.clock()
        entry = self.seen.get(key)
        if entry is None or now - entry[0] >= self.window_s:
            dropped = 0 if entry is None else int(entry[2])
            self.seen[key] = [now, 1, 0]
            if len(self.seen) > 10_000:  # bounded: the oldest windows go first
                for k in sorted(self.seen, key=lambda k: self.seen[k][0])[:5_000]:
                    del self.seen[k]
            if dropped:
                record.msg, record.args = f"{text} [{dropped} more like this in the last {self.window_s:.0f}s were " \
                                          f"not logged]", None
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


def limit_library_logs(prefixes: Iterable[str] = LIBRARIES, limit: RepeatLimit | None = None) -> RepeatLimit:
    """Attach one ``RepeatLimit`` to every logger of those libraries created so far (they create theirs when
    imported: call this after importing them)."""
    limit = limit or RepeatLimit()
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in set(prefixes)]
    for name in [*prefixes, *names]:
        logger = logging.getLogger(name)
        if limit not in logger.filters:
            logger.addFilter(limit)
    return limit


__all__ = ["RepeatLimit", "limit_library_logs"]
