"""Where the load generator's transactions come from: the simulator or Parquet files.

Either way the result is a ``History`` and its ``Labels``; ``ops.loadgen.replay.events`` turns
them into transactions keyed by customer and labels keyed by terminal, in event time.
"""

from __future__ import annotations

from pathlib import Path

from schemas.features import FEEDBACK_DELAY_DAYS
from trainer.simulate import History, Labels, SimConfig, labels_of, simulate


def simulated(cfg: SimConfig, feedback_delay_days: int = FEEDBACK_DELAY_DAYS) -> tuple[History, Labels]:
    h = simulate(cfg)
    return h, labels_of(h, feedback_delay_days)


def from_files(transactions: Path, labels: Path,
               feedback_delay_days: int = FEEDBACK_DELAY_DAYS) -> tuple[History, Labels]:
    """A user's history (checked by the trainer's loader; a bad file raises naming every problem)."""
    from trainer.data import load_history

    loaded = load_history(transactions, labels, feedback_delay_days=feedback_delay_days)
    return loaded.history, loaded.labels
