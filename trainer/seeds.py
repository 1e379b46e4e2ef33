"""``python -m trainer evaluate``: the protocol over several seeds of a generator, as the handbook reports it.

The handbook's published numbers are means over its forward prequential test folds: the book split
(train 2018-07-25..31, delay 08-01..07, test 08-08..14) and the same split moved a week later, then
another... ``forward_splits`` gives those folds (with a longer training window when asked: the same
end, an earlier start, validation the week before it), so our figures are comparable fold for fold.
Per seed the metrics are the mean over its folds; the table gives mean and standard deviation over
seeds. CP@100 comes twice: ours (every card of the test rows, each day) and the handbook's (a compromised
card found in a day's top 100 leaves the later days), the one its published table uses.

Whatever the training window, a fold is scored on the same test rows (``trainer.pipeline.test_mask``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.evaluate import DAY_MS, Split, handbook_split, protocol_splits
from trainer.fit import FitParams
from trainer.pipeline import Dataset, default_split, fit_logistic, fit_split, test_mask
from trainer.simulate import History, Labels

Log = Callable[[str], None]
Generate = Callable[[int], tuple[History, Labels]]
MODELS = ("lightgbm", "logistic")
METRICS = ("AUC", "AP", "CP@100", "CP@100 (handbook's)")
Row = tuple[float, ...]


@dataclass
class SeedResults:
    per_seed: dict[str, list[Row]] = field(
        default_factory=lambda: {m: [] for m in MODELS})

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, vals in self.per_seed.items():
            a = np.asarray(vals, dtype=np.float64).reshape(-1, len(METRICS))
            std = a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(len(METRICS))
            out[name] = {"mean": a.mean(axis=0).tolist(), "std": std.tolist(), "per_seed": vals}
        return out


def forward_splits(h: History, folds: int, train_days: int) -> list[Split]:
    """The handbook's forward test folds when the history covers them (train ``train_days`` long,
    ending where the book's ends); else the latest whole week as the single test fold."""
    book = handbook_split()
    start = book.train.end_ms - train_days * DAY_MS
    splits = protocol_splits(start, train_days=train_days, folds=folds)
    lo, hi = int(h.ts.min()), int(h.ts.max())
    covered = [s for s in splits if lo <= s.validation.start_ms and s.test.end_ms <= hi + 1]
    return covered or [default_split(h, train_days)]


def evaluate_seeds(generate: Generate, seeds: list[int], params: FitParams, folds: int, train_days: int,
                   log: Log) -> SeedResults:
    out = SeedResults()
    for seed in seeds:
        h, lab = generate(seed)
        ds = Dataset.build(h, lab)
        fold_metrics: dict[str, list[Row]] = {m: [] for m in MODELS}
        for split in forward_splits(h, folds, train_days):
            mask = test_mask(ds, split)
            scores = {"lightgbm": fit_split(ds, split, params).predict(ds.x[mask]),
                      "logistic": fit_logistic(ds, split, params.seed)(ds.x[mask])}
            for name, s in scores.items():
                m = ds.metrics(mask, s)
                fold_metrics[name].append((m.auc, m.ap, m.cp100, m.cp100_handbook))
                log(f"seed {seed} {name} test {split.test.label()}: AUC {m.auc:.4f} AP {m.ap:.4f} "
                    f"CP@100 {m.cp100:.4f} / {m.cp100_handbook:.4f} ({m.n} tx, {m.n_fraud} fraud)")
        for name, vals in fold_metrics.items():
            out.per_seed[name].append(tuple(float(v) for v in np.mean(vals, axis=0)))
    return out
