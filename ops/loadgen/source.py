"""Where the load generator's transactions come from: the simulator or Parquet files.

Either way the result is a ``History`` and its ``Labels``; ``ops.loadgen.replay.events`` turns
them into transactions keyed by customer and labels keyed by terminal, in event time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from schemas.features import FEEDBACK_DELAY_DAYS
from trainer.simulate import History, Labels, SimConfig, labels_of, simulate


def simulated(cfg: SimConfig, feedback_delay_days: int | None = None,
              transform: Callable[[History], History] | None = None) -> tuple[History, Labels]:
    """The simulator's history and labels: reported at the simulator's realistic delays, or all
    ``feedback_delay_days`` after their transaction when given. ``transform`` (drift, ``ops.loadgen.drift``)
    changes the history before its labels are made, so that they follow it."""
    h = simulate(cfg)
    if transform is not None:
        h = transform(h)
    return h, labels_of(h, feedback_delay_days)


def from_files(transactions: Path, labels: Path, feedback_delay_days: int | None = None) -> tuple[History, Labels]:
    """A user's history (checked by the trainer's loader; a bad file raises naming every problem). Labels
    without ``reported_at`` (nor its legacy alias ``available_at``) are reported ``feedback_delay_days``
    (default 7) after their transaction."""
    from trainer.data import load_history

    loaded = load_history(transactions, labels, feedback_delay_days=feedback_delay_days or FEEDBACK_DELAY_DAYS)
    return loaded.history, loaded.labels
