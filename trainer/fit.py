"""Fitting the LightGBM classifier: bounded depth, class-imbalance handling, early stopping.

Early stopping watches the validation window only; the test window is never seen here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from schemas.features import FEATURE_NAMES

F32 = npt.NDArray[np.float32]
TRAIN_DAYS = 28
"""The training window: four weeks ending one feedback delay before the test, chosen on the validation
folds of both generators (BENCHMARKS.md, "Model quality on two generators"); the handbook trains on one."""
HANDBOOK_TRAIN_DAYS = 7


@dataclass(frozen=True)
class FitParams:
    """Hyperparameters; every field is a CLI option of ``python -m trainer`` (see ``--help``)."""

    rounds: int = 600
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_depth: int = 8                 # bounded: the tensorized GPU graph pads trees to this depth
    min_child_samples: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    class_weight: str = "none"         # none | sqrt | balanced: weight of the fraud class
    early_stopping: int = 60
    seed: int = 0
    threads: int = 0                   # 0: LightGBM's default (all cores)

    def lgb_params(self, pos_weight: float) -> dict[str, Any]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2,
            "scale_pos_weight": pos_weight,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbosity": -1,
            "metric": ["average_precision", "auc"],
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def positive_weight(y: npt.NDArray[np.integer], rule: str) -> float:
    pos = int(np.sum(y))
    neg = len(y) - pos
    if pos == 0:
        raise ValueError("the training window has no fraud: widen it or check the labels")
    ratio = neg / pos
    if rule == "none":
        return 1.0
    if rule == "sqrt":
        return float(np.sqrt(ratio))
    if rule == "balanced":
        return float(ratio)
    raise ValueError(f"class_weight must be none, sqrt or balanced, not {rule!r}")


@dataclass(frozen=True)
class Fitted:
    booster: lgb.Booster
    best_iteration: int
    pos_weight: float

    def predict(self, x: F32) -> npt.NDArray[np.float64]:
        return np.asarray(self.booster.predict(x, num_iteration=self.best_iteration), dtype=np.float64)


Progress = Callable[[int, int, dict[str, float]], None]


def fit(x_train: F32, y_train: npt.NDArray[np.integer], x_valid: F32, y_valid: npt.NDArray[np.integer],
        params: FitParams, progress: Progress | None = None) -> Fitted:
    """Train with early stopping on the validation window; ``progress(iter, total, metrics)``."""
    pos_weight = positive_weight(y_train, params.class_weight)
    names = list(FEATURE_NAMES)
    train = lgb.Dataset(x_train, label=y_train, feature_name=names, free_raw_data=False)
    valid = lgb.Dataset(x_valid, label=y_valid, reference=train, feature_name=names, free_raw_data=False)

    def report(env: lgb.callback.CallbackEnv) -> None:
        if progress is not None:
            results = env.evaluation_result_list or []
            metrics = {f"{r[0]}:{r[1]}": float(r[2]) for r in results}
            progress(env.iteration + 1, env.end_iteration, metrics)

    booster = lgb.train(
        params.lgb_params(pos_weight), train, num_boost_round=params.rounds, valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(params.early_stopping, first_metric_only=True, verbose=False), report],
    )
    best = booster.best_iteration or booster.current_iteration()
    return Fitted(booster, int(best), pos_weight)
