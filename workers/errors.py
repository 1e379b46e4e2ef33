"""The worker's own exceptions, below the project's tree (``schemas.errors``), and the one place
that decides whether a Kafka client error is worth retrying.

    FraudstreamError
    └── WorkerError
        ├── OutputRefused        the broker refused an output for good (non-retriable): names the topic
        ├── PublishInterrupted   the drain bound (SIGTERM, or a fatal error) ended a retry loop: the
        │                        outputs were not acknowledged, so nothing past them is committed
        └── ComponentDied        a supervised background task ended (``workers.health.Supervisor``)

Each of them stops the worker: it exits non-zero and a process supervisor restarts it (compose's
restart policy, systemd, Kubernetes), rather than the worker retrying forever or freezing silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import NoReturn

from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from schemas.errors import FraudstreamError

AUTHORIZATION = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError, TransactionalIdAuthorizationFailed,
                 AuthenticationFailedError, SaslAuthenticationFailed)


class WorkerError(FraudstreamError):
    pass


class OutputRefused(WorkerError):
    """A non-retriable produce error on an output that cannot be replaced by a stub."""

    def __init__(self, topic: str, cause: BaseException, records: int = 1) -> None:
        self.topic, self.cause = topic, cause
        super().__init__(f"the broker refused {records} output record(s) to topic {topic!r} for good "
                         f"({type(cause).__name__}: {cause}); not retried: fix the topic (size limit, ACLs) and "
                         f"restart the worker, whose uncommitted input is then processed again")


class PublishInterrupted(WorkerError):
    def __init__(self, unacknowledged: int, last: BaseException | None = None, topics: Iterable[str] = ()) -> None:
        self.unacknowledged, self.topics = unacknowledged, sorted(set(topics))
        # The topics are what an operator looks at first: the one that would not take the records.
        where = f" to {', '.join(repr(t) for t in self.topics)}" if self.topics else ""
        why = f" (last error: {last!r})" if last is not None else ""
        super().__init__(f"stopping: {unacknowledged} output record(s){where} not acknowledged{why}; no offset past "
                         f"them is committed, so they are processed again after the restart")


class ComponentDied(WorkerError):
    def __init__(self, component: str, cause: BaseException | None) -> None:
        self.component, self.cause = component, cause
        what = "was cancelled" if cause is None else f"raised {type(cause).__name__}: {cause}"
        super().__init__(f"component {component} died: it {what}")


def retriable(exc: BaseException) -> bool:
    """Whether a produce/metadata error may succeed if tried again: aiokafka's ``retriable`` flag,
    plus ``KafkaTimeoutError`` — the producer's delivery timeout, raised after it retried retriable
    errors in vain (aiokafka leaves the flag False on it; Java's TimeoutException is retriable)."""
    if isinstance(exc, AUTHORIZATION):
        return False
    if isinstance(exc, KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


async def step_forever(step: Callable[[], Awaitable[None]], what: str, log: logging.Logger) -> NoReturn:
    """Run ``step`` again and again; a retriable Kafka error waits (0.5 s, doubling up to 10 s) and
    goes on, anything else ends the loop (and the component, which its supervisor reports)."""
    backoff = 0.5
    while True:
        try:
            await step()
            backoff = 0.5
        except KafkaError as exc:
            if not retriable(exc):
                raise
            log.warning("%s: %r; retrying in %.1fs", what, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
