"""Fixtures of the worker integration tests (the broker itself comes from tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.bundle import Bundle
from tests.integration.harness import Run
from trainer.simulate import History, Labels, SimConfig, labels_of, simulate


@pytest.fixture(scope="session")
def history() -> tuple[History, Labels]:
    """50 days of a small population, with labels reported as they really are: delays spread over days
    and weeks (the simulator's report-delay distribution), so out of transaction-time order."""
    h = simulate(SimConfig(customers=150, terminals=300, days=50, seed=3))
    return h, labels_of(h)


@pytest.fixture
def run(kafka_bootstrap: str, bundle: Bundle, tmp_path: Path) -> Iterator[Run]:
    tag = uuid.uuid4().hex[:8]
    names = ("transactions", "labels", "flags", "scores", "stats", "dlq", "terminal_days", "shadow_scores")
    yield Run(kafka_bootstrap, {n: f"{n}-{tag}" for n in names}, f"g-{tag}", bundle, tmp_path)


