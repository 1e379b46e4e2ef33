"""The core's ports: what it needs of a scorer, a sink and a source, as typed Protocols.

The worker's edge implements them with ONNX Runtime (``workers.score.Scorer``) and aiokafka
(``workers.publish.Publisher``, ``workers.consume.DirectConsumer``); the unit tests with
in-memory doubles.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np
import numpy.typing as npt

# topic, key, value (None: a tombstone on a compacted topic), headers
Out = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]
F32 = npt.NDArray[np.float32]


class ScorerPort(Protocol):
    provider: str
    graph: str

    def score(self, rows: F32) -> F32:
        """Fraud probabilities of float32 feature rows; raises ``schemas.errors.ScoringError``."""
        ...


class SinkPort(Protocol):
    async def send_all(self, records: Iterable[Out]) -> list[int]:
        """Send and return once every record is acknowledged: each one's acknowledgement time (epoch ms)."""
        ...

    def interrupt(self) -> None:
        """End retry loops at their next wait (stop, fatal error elsewhere)."""
        ...


class SourcePort(Protocol):
    async def commit(self, offsets: dict[int, int]) -> None:
        """Commit, per transactions partition, the offset of the next record to read."""
        ...
