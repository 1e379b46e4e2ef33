"""Fixtures of the worker integration tests (the broker itself comes from tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.bundle import Bundle, load_bundle
from schemas.features import FEEDBACK_DELAY_DAYS
from tests.integration.harness import Run
from trainer.simulate import History, Labels, SimConfig, labels_of, simulate


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("bundle")
    done = subprocess.run([sys.executable, "-m", "trainer", "run", "--quick", "--folds", "0", "--out",
                           str(root / "b"), "--data-dir", str(root / "d")], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return load_bundle(Path(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="session")
def history() -> tuple[History, Labels]:
    h = simulate(SimConfig(customers=150, terminals=300, days=50, seed=3))
    return h, labels_of(h, FEEDBACK_DELAY_DAYS)


@pytest.fixture
def run(kafka_bootstrap: str, bundle: Bundle, tmp_path: Path) -> Iterator[Run]:
    tag = uuid.uuid4().hex[:8]
    names = ("transactions", "labels", "flags", "scores", "stats", "dlq", "terminal_days")
    yield Run(kafka_bootstrap, {n: f"{n}-{tag}" for n in names}, f"g-{tag}", bundle, tmp_path)


