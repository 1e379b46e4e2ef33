"""The batch policy, apart from the model call: how many records to take and how long to wait for them.

Fixed (``--latency-target-ms 0``): each fetch takes at most ``--batch-size`` records and waits at
most ``--max-wait-ms`` for them; the broker holds a fetch request until about a batch's bytes
arrived or that wait passed (a light load then costs a fetch per wait, not per record).

Adaptive (``--latency-target-ms T``), in the spirit of Triton's dynamic batcher and its queue
delay: a batch is filled for at most a wait ``w`` from its first record, then processed; the
records' time in the worker is about ``w`` plus the batch's processing time ``S``. The policy
keeps a moving estimate of ``S`` (per batch, from fetch to outputs handed to the producer) and
sets ``w = T/2 - S`` (never below 0), the broker holding a fetch up to ``T/4``: at a low load the
batch grows to what arrives within the wait (fewer, larger batches: less CPU a transaction); at
a high load the cap is reached first. When a batch still takes longer than ``T`` the cap is
halved; when batches fill within half the target the cap doubles again, up to ``--batch-size``.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_CAP = 16
QUIET_FETCH_WAIT_MS = 500  # aiokafka's default: an idle consumer's fetch requests, two a second
QUIET_AFTER_S = 1.0        # no record for this long: back to the quiet fetch settings
RECORD_BYTES = 128   # about a transaction record on the wire: what the broker-side wait is sized by
_SMOOTHING = 0.2   # weight of the newest batch in the moving estimate of the processing time


@dataclass
class BatchPolicy:
    batch_size: int            # the cap's ceiling (--batch-size)
    max_wait_ms: float         # fixed mode: the fetch's wait
    target_ms: float = 0.0     # 0: fixed mode
    cap: int = 0               # the current batch cap (adaptive)
    service_ms: float = 0.0    # moving estimate of one batch's processing time

    def __post_init__(self) -> None:
        self.cap = self.batch_size

    @property
    def adaptive(self) -> bool:
        return self.target_ms > 0

    def max_records(self) -> int:
        return self.cap if self.adaptive else self.batch_size

    def fill_wait_ms(self) -> float:
        """How long a batch may wait to fill after its first record arrived."""
        if not self.adaptive:
            return 0.0
        return max(self.target_ms / 2 - self.service_ms, 0.0)

    def fetch_wait_ms(self) -> float:
        """How long one fetch waits for records when none have arrived yet."""
        return self.max_wait_ms if not self.adaptive else max(min(self.target_ms / 2, self.max_wait_ms), 1.0)

    def fetch_options(self, busy: bool) -> dict[str, int]:
        """The consumer's fetch settings. Busy (records arrived lately): the broker holds a fetch until about
        a batch's bytes arrived or the wait passed, so that a light load costs a fetch request per wait
        rather than per record. Quiet: it answers as soon as anything arrives, else after half a second,
        so that an idle worker costs two fetch requests a second, not one per wait."""
        if not busy:
            return {"fetch_max_wait_ms": QUIET_FETCH_WAIT_MS, "fetch_min_bytes": 1}
        wait = self.max_wait_ms if not self.adaptive else self.target_ms / 4
        return {"fetch_max_wait_ms": max(int(wait), 1), "fetch_min_bytes": min(self.batch_size * RECORD_BYTES, 1 << 20)}

    def observe(self, size: int, service_ms: float, in_worker_ms: float) -> None:
        """A batch of ``size`` records was processed in ``service_ms``; its first record spent
        ``in_worker_ms`` in the worker (fill wait included)."""
        if not self.adaptive or size == 0:
            return
        self.service_ms += _SMOOTHING * (service_ms - self.service_ms)
        if in_worker_ms > self.target_ms:
            self.cap = max(self.cap // 2, MIN_CAP)
        elif size >= self.cap and in_worker_ms < self.target_ms / 2:
            self.cap = min(self.cap * 2, self.batch_size)
