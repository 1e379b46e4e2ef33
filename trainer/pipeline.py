"""The trainer's steps, end to end: features -> split -> fit -> evaluate -> threshold -> export -> bundle.

The export writes two graphs of the model (tree ops for the CPU, standard tensor ops for the GPU),
each checked against LightGBM before anything is written.

Each step is a plain function; ``trainer.cli`` wires them to subcommands.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import onnx
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from schemas.bundle import TENSOR_ONNX_FILE, seal
from schemas.errors import DataQualityError
from schemas.features import DAY_MS, FEATURE_VERSION, FEEDBACK_DELAY_DAYS, TERMINAL_HORIZON_DAYS
from trainer.evaluate import (
    Metrics,
    Split,
    Window,
    evaluate,
    handbook_split,
    known_compromised_filter,
    prequential_folds,
    protocol_splits,
)
from trainer.export import Parity, check_parity, tensor_manifest, to_onnx, to_tensor_onnx, trimmed
from trainer.fit import HANDBOOK_TRAIN_DAYS, TRAIN_DAYS, FitParams, Fitted, Progress, fit
from trainer.monitoring import MonitoringFit, calibration_quality, feature_psi, fit_monitoring
from trainer.report import FoldResult, ModelResult, MonitoringReport, ReportInput, plot_curves, write_report
from trainer.simulate import History, Labels, history_features
from trainer.threshold import Threshold, choose_threshold

F32 = npt.NDArray[np.float32]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Dataset:
    history: History
    labels: Labels
    x: F32
    day: npt.NDArray[np.int64]

    @staticmethod
    def build(history: History, labels: Labels) -> Dataset:
        x = history_features(history, labels)
        return Dataset(history, labels, x, history.ts // DAY_MS)

    def rows(self, w: Window) -> npt.NDArray[np.bool_]:
        return w.contains(self.history.ts)

    def metrics(self, mask: npt.NDArray[np.bool_], score: npt.NDArray[np.floating[Any]]) -> Metrics:
        h = self.history
        return evaluate(h.is_fraud[mask], score, self.day[mask], h.customer_id[mask])


def default_split(history: History, train_days: int = TRAIN_DAYS) -> Split:
    """:func:`latest_split` with a ``train_days``-long training window, shortened by whole weeks (to the
    handbook's 7 days at least) while the history before it is shorter than the features' look-back: a
    shorter window with whole feature windows rather than a refusal."""
    first = int(history.ts.min())
    for days in range(train_days, HANDBOOK_TRAIN_DAYS, -7):
        split = latest_split(history, days)
        if split.validation.start_ms - first >= TERMINAL_HORIZON_DAYS * DAY_MS:
            return split
    return latest_split(history, min(train_days, HANDBOOK_TRAIN_DAYS))


def latest_split(history: History, train_days: int) -> Split:
    """The handbook's book split, its training window ``train_days`` long and ending where the book's
    does, when the data covers it; else the same geometry before the latest whole-week test."""
    book = handbook_split()
    split = protocol_splits(book.train.end_ms - train_days * DAY_MS, train_days=train_days)[0]
    lo, hi = int(history.ts.min()), int(history.ts.max())
    if lo <= split.validation.start_ms and split.test.end_ms <= hi + 1:
        return split
    test_end = (hi + 1) // DAY_MS * DAY_MS  # the last whole day ends at midnight
    return prequential_folds(test_end - 7 * DAY_MS, 1, train_days=train_days)[0]


def check_split(ds: Dataset, split: Split) -> None:
    lo = int(ds.history.ts.min())
    problems = []
    if split.validation.start_ms < lo:
        problems.append(f"the validation window starts {split.validation.label()}, before the data ({lo} ms)")
    for name, w in split.windows().items():
        mask = ds.rows(w)
        if not mask.any():
            problems.append(f"the {name} window {w.label()} has no transactions")
        elif name != "delay" and not ds.history.is_fraud[mask].any():
            problems.append(f"the {name} window {w.label()} has no fraud")
    if problems:
        raise DataQualityError("the evaluation windows do not fit the data:\n  - " + "\n  - ".join(problems))


def test_mask(ds: Dataset, split: Split) -> npt.NDArray[np.bool_]:
    """Test rows, minus the cards already known compromised (the handbook's rule: a fraud is known
    ``FEEDBACK_DELAY_DAYS`` after it, counted from the start of its week-long training window). The rule
    reads the truth, not the labels' report times, and looks back a week whatever window the model
    trains on, so the test set stays the same whichever way the labels arrived or however long the
    training window is, and models stay comparable: from a longer window's start it would remove more
    cards, and CP@100 would move with the test set rather than the model."""
    mask = ds.rows(split.test)
    h = ds.history
    known_at = h.ts + np.int64(FEEDBACK_DELAY_DAYS) * DAY_MS
    since = split.delay.start_ms - HANDBOOK_TRAIN_DAYS * DAY_MS
    keep = known_compromised_filter(h.customer_id[mask], h.ts[mask], h.customer_id, h.ts, h.is_fraud,
                                    known_at, since_ms=since)
    out = np.zeros_like(mask)
    out[np.flatnonzero(mask)[keep]] = True
    return out


def fit_split(ds: Dataset, split: Split, params: FitParams, progress: Progress | None = None) -> Fitted:
    tr, va = ds.rows(split.train), ds.rows(split.validation)
    y = ds.history.is_fraud
    return fit(ds.x[tr], y[tr], ds.x[va], y[va], params, progress)


def fit_logistic(ds: Dataset, split: Split, seed: int = 0) -> Callable[[F32], npt.NDArray[np.float64]]:
    """The baseline: standardised features, logistic regression, same train window."""
    tr = ds.rows(split.train)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(ds.x[tr], ds.history.is_fraud[tr])

    def predict(x: F32) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = model.predict_proba(x)[:, 1]
        return out

    return predict


def model_result(name: str, ds: Dataset, split: Split, predict: Callable[[F32], npt.NDArray[np.float64]],
                 folds: list[FoldResult]) -> ModelResult:
    def on(mask: npt.NDArray[np.bool_]) -> Metrics:
        return ds.metrics(mask, predict(ds.x[mask]))

    return ModelResult(name, train=on(ds.rows(split.train)), validation=on(ds.rows(split.validation)),
                       test=on(test_mask(ds, split)), folds=folds)


def report_folds(ds: Dataset, split: Split, n_folds: int) -> list[Split]:
    days = round((split.train.end_ms - split.train.start_ms) / DAY_MS)
    forward = protocol_splits(split.train.start_ms, train_days=days, folds=n_folds)
    if forward[-1].test.end_ms <= int(ds.history.ts.max()) + 1:
        return forward
    return prequential_folds(split.test.start_ms, n_folds, train_days=days)


def prequential(ds: Dataset, split: Split, params: FitParams, n_folds: int, log: Log) -> dict[str, list[FoldResult]]:
    """Test metrics of LightGBM and the baseline on ``n_folds`` folds: the handbook's forward folds (the
    split, then moved a week later each) when the data covers them — its published numbers are means over
    those — else folds going back a week each from the split's test."""
    out: dict[str, list[FoldResult]] = {"lightgbm": [], "logistic": []}
    lo = int(ds.history.ts.min())
    for i, fold in enumerate(report_folds(ds, split, n_folds)):
        if fold.validation.start_ms < lo:
            log(f"  fold {i}: starts before the data, skipped")
            continue
        fitted = fit_split(ds, fold, params)
        mask = test_mask(ds, fold)
        out["lightgbm"].append(FoldResult(fold, ds.metrics(mask, fitted.predict(ds.x[mask]))))
        lr = fit_logistic(ds, fold, params.seed)
        out["logistic"].append(FoldResult(fold, ds.metrics(mask, lr(ds.x[mask]))))
        m = out["lightgbm"][-1].test
        log(f"  fold {i} test {fold.test.label()}: AUC {m.auc:.3f} AP {m.ap:.3f} CP@100 {m.cp100:.3f}")
    return out


@dataclass
class Trained:
    ds: Dataset
    split: Split
    params: FitParams
    fitted: Fitted
    booster: lgb.Booster
    report: ReportInput
    threshold: Threshold
    monitoring: MonitoringFit
    curves: dict[str, tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]] = field(default_factory=dict)


def monitor(ds: Dataset, split: Split, predict: Callable[[F32], npt.NDArray[np.float64]], threshold: Threshold,
            log: Log) -> tuple[MonitoringFit, MonitoringReport]:
    """The bundle's monitoring block (trainer/monitoring.py), and how it fares on the test rows."""
    va, tm = ds.rows(split.validation), test_mask(ds, split)
    y = ds.history.is_fraud
    fitted = fit_monitoring(ds.x[ds.rows(split.train)], predict(ds.x[va]), y[va], threshold.value)
    test_score = predict(ds.x[tm])
    q = calibration_quality(fitted.calibration, test_score, y[tm], threshold.value)
    psi = feature_psi(fitted, ds.x[tm], test_score)
    est, real = q.estimated_precision, q.realised_precision
    log(f"calibration ({fitted.calibration.method}, {len(fitted.calibration.x)} points) on the test rows: "
        f"ECE {q.ece_raw:.4f} raw -> {q.ece_calibrated:.4f} calibrated; precision at the threshold estimated "
        f"{'n/a' if est is None else f'{est:.3f}'}, realised {'n/a' if real is None else f'{real:.3f}'} "
        f"({q.flagged} flagged)")
    worst = max((k for k in psi if k != "score"), key=lambda k: psi[k])
    log(f"test rows against the reference: score PSI {psi['score']:.3f}, largest feature PSI {psi[worst]:.3f} "
        f"({worst})")
    return fitted, MonitoringReport(fitted.expected_alert_rate, fitted.expected_precision, q, psi)


def train_and_evaluate(ds: Dataset, split: Split, params: FitParams, budget_per_day: int, n_folds: int,
                       log: Log, progress: Progress | None = None, data_facts: dict[str, Any] | None = None) -> Trained:
    check_split(ds, split)
    log(f"split: validation {split.validation.label()} | train {split.train.label()} | "
        f"delay {split.delay.label()} | test {split.test.label()}")
    fitted = fit_split(ds, split, params, progress)
    booster = trimmed(fitted.booster, fitted.best_iteration)
    log(f"fitted: {fitted.best_iteration} trees (early stopping on validation), fraud weight {fitted.pos_weight:.2f}")

    def lgb_predict(x: F32) -> npt.NDArray[np.float64]:
        return np.asarray(booster.predict(x), dtype=np.float64)

    lr = fit_logistic(ds, split, params.seed)
    folds = prequential(ds, split, params, n_folds, log) if n_folds > 0 else {"lightgbm": [], "logistic": []}
    ours = model_result("fraudstream LightGBM", ds, split, lgb_predict, folds["lightgbm"])
    base = model_result("logistic regression (same split)", ds, split, lr, folds["logistic"])
    # Threshold: a daily alert budget on the delay window, the latest data the model would see
    # before going live (scores only: the rule needs no labels).
    delay = ds.rows(split.delay)
    threshold = choose_threshold(lgb_predict(ds.x[delay]).astype(np.float32), ds.day[delay], budget_per_day,
                                 ds.history.is_fraud[delay])
    tm = test_mask(ds, split)
    y_test = ds.history.is_fraud[tm]
    curves = {"LightGBM": (y_test, lgb_predict(ds.x[tm])), "logistic regression": (y_test, lr(ds.x[tm]))}
    monitoring, monitoring_report = monitor(ds, split, lgb_predict, threshold, log)
    report = ReportInput(split=split, models=[ours, base], threshold=threshold,
                         params={**params.as_dict(), "best_iteration": fitted.best_iteration,
                                 "pos_weight": fitted.pos_weight},
                         data=data_facts or {}, monitoring=monitoring_report)
    return Trained(ds, split, params, fitted, booster, report, threshold, monitoring, curves)


def library_versions() -> dict[str, str]:
    import onnxmltools
    import onnxruntime

    return {"python": platform.python_version(), "lightgbm": lgb.__version__, "onnx": onnx.__version__,
            "onnxmltools": onnxmltools.__version__, "onnxruntime": onnxruntime.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def write_bundle(t: Trained, out_root: Path, key: bytes | None, log: Log) -> Path:
    """Export, check parity, then write the bundle. Nothing is written unless every check passed."""
    t0 = time.monotonic()
    model = to_onnx(t.booster)
    tm = test_mask(t.ds, t.split)
    parity: Parity = check_parity(t.booster, model, t.ds.x[tm])
    log(f"ONNX parity: {parity.rows} rows ({parity.edge_rows} edge rows), max |diff| {parity.max_abs_diff:.2e} "
        f"({time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    tensor = to_tensor_onnx(t.booster)
    tensor_parity: Parity = check_parity(t.booster, tensor, t.ds.x[tm], what="tensorized ONNX")
    tensor_entry = tensor_manifest(tensor, tensor_parity, TENSOR_ONNX_FILE)
    log(f"tensorized ONNX parity: {tensor_parity.rows} rows ({tensor_parity.edge_rows} edge rows), max |diff| "
        f"{tensor_parity.max_abs_diff:.2e}; {tensor_entry['trees']} trees padded to depth {tensor_entry['depth']}, "
        f"{tensor_entry['nodes']} nodes ({time.monotonic() - t0:.1f}s)")
    created = dt.datetime.now(dt.UTC)
    version = f"{created:%Y%m%dT%H%M%SZ}-{FEATURE_VERSION[-6:]}"
    final = out_root / version
    staging = out_root / f".{version}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        onnx.save(model, str(staging / "model.onnx"))
        onnx.save(tensor, str(staging / TENSOR_ONNX_FILE))
        t.booster.save_model(str(staging / "model.lgb.txt"))
        write_report(staging, t.report)
        plot_curves(staging, t.curves)
        report_json = json.loads((staging / "report.json").read_text())
        manifest = {
            "model_version": version,
            "created_at": created.isoformat(),
            "threshold": {"value": t.threshold.value, "rule": t.threshold.rule,
                          "budget_per_day": t.threshold.budget_per_day,
                          "expected_alerts_per_day": t.threshold.expected_alerts_per_day,
                          "compare": "float32(score) >= value"},
            "metrics": report_json.get("models", []),
            "params": t.report.params,
            "data_window": {name: {"start_ms": w.start_ms, "end_ms": w.end_ms, "label": w.label()}
                            for name, w in t.split.windows().items()},
            "data": dict(t.report.data),
            "parity": {"rows": parity.rows, "edge_rows": parity.edge_rows, "max_abs_diff": parity.max_abs_diff},
            "onnx": {"file": "model.onnx", "input": "input", "output": "probabilities", "opset": 15,
                     "graph": "TreeEnsembleClassifier"},
            "tensor_onnx": tensor_entry,
            "library_versions": library_versions(),
            "monitoring": t.monitoring.to_json(),
        }
        seal(staging, manifest, key)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    latest = out_root / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(final.name)
    return final
