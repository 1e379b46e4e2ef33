"""Choosing the trainer's defaults on validation folds only: ``python -m trainer.selection``.

Each variant (a training window length, LightGBM parameters) is fitted on the handbook's model-selection
folds (:func:`trainer.evaluate.model_selection_folds`: three folds whose windows all end by the book
split's delay) of seeds that the test tables never use, on both generators. No test week is read.

Every variant is scored on the same test rows of a fold (``trainer.pipeline.test_mask`` looks back a
week whatever window the variant trains on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluate import model_selection_folds
from trainer.fit import FitParams
from trainer.pipeline import Dataset, fit_split, test_mask
from trainer.seeds import Row, forward_splits
from trainer.simulate import History, Labels, SimConfig, labels_of, simulate

VARIANTS: dict[str, tuple[int, dict[str, Any]]] = {
    "7 days (the handbook's window)": (7, {}),
    "train 14 days": (14, {}),
    "train 21 days": (21, {}),
    "train 28 days": (28, {}),
    "class weight sqrt": (7, {"class_weight": "sqrt"}),
    "num_leaves 15": (7, {"num_leaves": 15}),
    "num_leaves 63": (7, {"num_leaves": 63}),
    "min_child_samples 30": (7, {"min_child_samples": 30}),
    "min_child_samples 300": (7, {"min_child_samples": 300}),
    "learning_rate 0.02, 1500 rounds": (7, {"learning_rate": 0.02, "rounds": 1500, "early_stopping": 150}),
    "feature_fraction 0.5": (7, {"feature_fraction": 0.5}),
    "lambda_l2 10": (7, {"lambda_l2": 10.0}),
    "train 42 days": (42, {}),
    "train 28 days, learning_rate 0.02": (28, {"learning_rate": 0.02, "rounds": 1500, "early_stopping": 150}),
    "train 28 days, num_leaves 63": (28, {"num_leaves": 63}),
    "train 28 days, min_child_samples 300": (28, {"min_child_samples": 300}),
}


def generate(generator: str, seed: int) -> tuple[History, Labels]:
    """A book-size history and its labels with realistic report delays."""
    if generator == "handbook":
        h = simulate(SimConfig(seed=seed))
    else:
        from trainer.othersim import OtherConfig, simulate_other

        h = simulate_other(OtherConfig(seed=seed))
    return h, labels_of(h)


def validation_metrics(ds: Dataset, train_days: int, params: FitParams, n_folds: int) -> list[Row]:
    """The metrics of :data:`trainer.seeds.METRICS` on each model-selection fold, fitted on
    ``train_days``-long training windows."""
    out: list[Row] = []
    for fold in model_selection_folds(forward_splits(ds.history, 1, train_days)[0], n_folds):
        mask = test_mask(ds, fold)
        m = ds.metrics(mask, fit_split(ds, fold, params).predict(ds.x[mask]))
        out.append((m.auc, m.ap, m.cp100, m.cp100_handbook))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.selection", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    p.add_argument("--generators", nargs="+", choices=("handbook", "other"), default=["handbook", "other"])
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="LightGBM threads (0: all cores)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    rows: dict[str, dict[str, list[float]]] = {v: {} for v in args.variants}
    for gen in args.generators:
        for seed in args.seeds:
            t0 = time.monotonic()
            ds = Dataset.build(*generate(gen, seed))
            print(f"{gen} seed {seed}: {len(ds.history)} tx, features {time.monotonic() - t0:.0f}s", file=sys.stderr)
            for name in args.variants:
                days, change = VARIANTS[name]
                params = replace(FitParams(threads=args.threads), **change)
                mean = np.mean(validation_metrics(ds, days, params, args.folds), axis=0).tolist()
                rows[name][f"{gen} {seed}"] = mean
                print(f"  {name:34} AUC {mean[0]:.3f} AP {mean[1]:.3f} CP@100 {mean[2]:.3f} / {mean[3]:.3f}",
                      file=sys.stderr)
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(" / ".join(f"{v:.3f}" for v in c) for c in cells.values()) + " |")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
