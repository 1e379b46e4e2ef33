"""The training report: ``report.md`` and ``report.json``, plus ROC and precision-recall curves.

Input structure (:class:`ReportInput`)::

    ReportInput
      split       Split                  the main split (its windows are the "data window")
      models      [ModelResult, ...]     ours first, then baselines (a logistic regression)
        name        str
        train       Metrics              on split.train        } side by side, so that
        validation  Metrics              on split.validation   } over- and underfitting
        test        Metrics              on split.test         } show
        folds       [FoldResult, ...]    prequential folds: (Split, test Metrics) each
      threshold   Threshold | None       the alert threshold chosen for the bundle
      params      {str: JSON-able}       model / training parameters
      data        {str: JSON-able}       data source facts (simulator seed, rows, fraud rate, ...)
      monitoring  MonitoringReport|None  what the bundle's monitoring block expects live, its calibration
                                         on the test rows, the test rows' PSI against its reference
      title       str

The published numbers (:data:`PUBLISHED`) are means over the handbook's prequential *test*
folds, so the comparable fold set is ``protocol_splits(handbook train start, folds=4)``.
Fold summaries are mean and sample standard deviation (ddof=1, as pandas' ``.std()`` in the
handbook); the std is absent with fewer than two folds. NaN metrics are written as ``n/a`` in
Markdown and ``null`` in JSON (the JSON is strict: no NaN literals).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from trainer.evaluate import Metrics, Split, Window, average_precision, roc_auc
from trainer.monitoring import CalibrationQuality
from trainer.threshold import Threshold

PUBLISHED: dict[str, tuple[float, float, float]] = {
    "XGBoost (handbook, tuned)": (0.869, 0.687, 0.303),
    "Random forest (handbook)": (0.870, 0.678, 0.299),
    "Logistic regression (handbook)": (0.868, 0.623, 0.297),
}
"""(AUC, AP, CP@100): prequential test results, tuned, Le Borgne et al. handbook chapter 5."""

METRIC_NAMES = ("auc", "ap", "cp100")
METRIC_LABELS = {"auc": "AUC", "ap": "AP", "cp100": "CP@100"}


@dataclass(frozen=True)
class FoldResult:
    """One prequential fold: its split and the model's metrics on that fold's test window."""

    split: Split
    test: Metrics


@dataclass(frozen=True)
class ModelResult:
    """One model's metrics on the main split's windows and on the prequential folds."""

    name: str
    train: Metrics
    validation: Metrics
    test: Metrics
    folds: Sequence[FoldResult] = ()


@dataclass(frozen=True)
class MonitoringReport:
    """The bundle's monitoring block seen from the test rows (``trainer/monitoring.py``)."""

    expected_alert_rate: float
    expected_precision: float | None
    calibration: CalibrationQuality
    psi_test: Mapping[str, float]


@dataclass(frozen=True)
class ReportInput:
    """Everything the report shows; see the module docstring."""

    split: Split
    models: Sequence[ModelResult]
    threshold: Threshold | None = None
    params: Mapping[str, object] = field(default_factory=dict)
    data: Mapping[str, object] = field(default_factory=dict)
    monitoring: MonitoringReport | None = None
    title: str = "fraudstream model report"


@dataclass(frozen=True)
class Summary:
    """Mean and sample std of one metric over folds (std None with fewer than two folds)."""

    mean: float
    std: float | None
    n: int


def summarize(folds: Sequence[FoldResult]) -> dict[str, Summary]:
    """Per metric, mean ± std over the folds' test metrics (NaN folds ignored)."""
    out: dict[str, Summary] = {}
    for name in METRIC_NAMES:
        vals = np.array([getattr(f.test, name) for f in folds], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        mean = float(vals.mean()) if vals.size else float("nan")
        std = float(vals.std(ddof=1)) if vals.size > 1 else None
        out[name] = Summary(mean=mean, std=std, n=int(vals.size))
    return out


# --------------------------------------------------------------------------- output


def write_report(out_dir: str | Path, results: ReportInput) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` into ``out_dir`` (created); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "report.md", out / "report.json"
    md_path.write_text(_markdown(results), encoding="utf-8")
    json_path.write_text(json.dumps(_json(results), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return md_path, json_path


def _finite(x: object) -> object:
    """Recursively replace non-finite floats by None so that the JSON stays strict."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _plain(x: object) -> object:
    """JSON-able form of params / data values (numpy scalars, paths and the like as text)."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def _window_json(w: Window) -> dict[str, object]:
    return {"start_ms": w.start_ms, "end_ms": w.end_ms, "label": w.label()}


def _split_json(s: Split) -> dict[str, object]:
    return {name: _window_json(w) for name, w in s.windows().items()}


def _json(r: ReportInput) -> object:
    doc = {
        "title": r.title,
        "split": _split_json(r.split),
        "models": [
            {
                "name": m.name,
                "train": asdict(m.train),
                "validation": asdict(m.validation),
                "test": asdict(m.test),
                "folds": [{"split": _split_json(f.split), "test": asdict(f.test)} for f in m.folds],
                "folds_summary": {k: asdict(v) for k, v in summarize(m.folds).items()} if m.folds else None,
            }
            for m in r.models
        ],
        "published": {
            name: dict(zip(METRIC_NAMES, vals, strict=True)) | {"source": "Le Borgne et al., ch. 5, prequential"}
            for name, vals in PUBLISHED.items()
        },
        "threshold": asdict(r.threshold) if r.threshold is not None else None,
        "params": _plain(dict(r.params)),
        "data": _plain(dict(r.data)),
        "monitoring": _monitoring_json(r.monitoring) if r.monitoring is not None else None,
    }
    return _finite(doc)


def _monitoring_json(m: MonitoringReport) -> dict[str, object]:
    return {"expected_alert_rate": m.expected_alert_rate, "expected_precision": m.expected_precision,
            "calibration_test": asdict(m.calibration), "psi_test": dict(m.psi_test)}


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _mean_std(s: Summary) -> str:
    return _f(s.mean) if s.std is None else f"{_f(s.mean)} ± {_f(s.std)}"


def _markdown(r: ReportInput) -> str:
    lines = [f"# {r.title}", ""]

    lines += ["## Data window", "", "| window | days (UTC) |", "|---|---|"]
    lines += [f"| {name} | {w.label()} |" for name, w in r.split.windows().items()]
    lines += ["", "Validation (before train) drives early stopping; the test window is touched once.", ""]
    if r.data:
        lines += ["| data | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in r.data.items()]
        lines.append("")

    lines += ["## Our models: train / validation / test", ""]
    header = " | ".join(f"{METRIC_LABELS[m]} (train / valid / test)" for m in METRIC_NAMES)
    lines += [f"| model | {header} |", "|---|" + "---|" * len(METRIC_NAMES)]
    for m in r.models:
        cells = [" / ".join(_f(getattr(w, k)) for w in (m.train, m.validation, m.test)) for k in METRIC_NAMES]
        lines.append(f"| {m.name} | " + " | ".join(cells) + " |")
    lines += ["", "| model | rows (train / valid / test) | frauds (train / valid / test) |", "|---|---|---|"]
    for m in r.models:
        ws = (m.train, m.validation, m.test)
        n = " / ".join(str(w.n) for w in ws)
        nf = " / ".join(str(w.n_fraud) for w in ws)
        lines.append(f"| {m.name} | {n} | {nf} |")
    lines.append("")

    lines += ["## Against the published results", ""]
    lines += ["| model | AUC | AP | CP@100 | source |", "|---|---|---|---|---|"]
    for m in r.models:
        if m.folds:
            s = summarize(m.folds)
            row = " | ".join(_mean_std(s[k]) for k in METRIC_NAMES)
            lines.append(f"| {m.name} | {row} | ours, prequential, {len(m.folds)} folds (mean ± std) |")
        else:
            row = " | ".join(_f(getattr(m.test, k)) for k in METRIC_NAMES)
            lines.append(f"| {m.name} | {row} | ours, test window {r.split.test.label()} |")
    for name, vals in PUBLISHED.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " | published, prequential, tuned |")
    lines.append("")

    with_folds = [m for m in r.models if m.folds]
    if with_folds:
        lines += ["## Prequential folds", ""]
        for m in with_folds:
            lines += [f"### {m.name}", "", "| fold | train | test | AUC | AP | CP@100 | rows | frauds |"]
            lines.append("|---|---|---|---|---|---|---|---|")
            for i, f in enumerate(m.folds):
                ft = f.test
                lines.append(
                    f"| {i} | {f.split.train.label()} | {f.split.test.label()} | {_f(ft.auc)} | {_f(ft.ap)} "
                    f"| {_f(ft.cp100)} | {ft.n} | {ft.n_fraud} |"
                )
            s = summarize(m.folds)
            lines.append("| mean ± std | | | " + " | ".join(_mean_std(s[k]) for k in METRIC_NAMES) + " | | |")
            lines.append("")

    lines += ["## Threshold", ""]
    if r.threshold is None:
        lines += ["No threshold chosen.", ""]
    else:
        t = r.threshold
        lines += [
            "| | |",
            "|---|---|",
            f"| value | {t.value!r} (flag when float32(score) >= value) |",
            f"| rule | {t.rule} |",
            f"| budget per day | {t.budget_per_day} |",
            f"| expected alerts per day | {t.expected_alerts_per_day:.2f} (over {t.n_days} days) |",
            f"| precision at threshold | {_f(t.precision)} |",
            f"| recall at threshold | {_f(t.recall)} |",
            "",
        ]

    if r.monitoring is not None:
        lines += _monitoring_markdown(r.monitoring)

    lines += ["## Parameters", "", "```json", json.dumps(_plain(dict(r.params)), indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _monitoring_markdown(m: MonitoringReport) -> list[str]:
    q = m.calibration
    lines = [
        "## Monitoring", "",
        "What the bundle's monitoring block expects live (validation rows), and how far its calibrated "
        "probabilities can be trusted (test rows, which neither the model nor the calibration saw).", "",
        "| | |", "|---|---|",
        f"| expected alert rate (validation) | {_f(m.expected_alert_rate, 5)} |",
        f"| expected precision at threshold (validation) | {_f(m.expected_precision)} |",
        f"| ECE, raw scores (test, {q.rows} rows) | {_f(q.ece_raw, 4)} |",
        f"| ECE, calibrated (test) | {_f(q.ece_calibrated, 4)} |",
        f"| precision at threshold, estimated from calibrated p (test, {q.flagged} flagged) "
        f"| {_f(q.estimated_precision)} |",
        f"| precision at threshold, estimated from raw scores (test) | {_f(q.raw_score_precision)} |",
        f"| precision at threshold, realised (test) | {_f(q.realised_precision)} |",
        "",
        "ECE: row-weighted mean gap between predicted and observed fraud rate over ten equal-width "
        "probability bins. PSI of the test rows against the reference (> 0.1 warns, > 0.25 alerts live):", "",
        "| feature | PSI (test) |", "|---|---|",
    ]
    lines += [f"| {name} | {_f(v)} |" for name, v in m.psi_test.items()]
    return [*lines, ""]


# --------------------------------------------------------------------------- curves


def plot_curves(out_dir: str | Path, curves: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]) -> tuple[Path, Path]:
    """Write ``roc.png`` and ``pr.png``: one line per model (name -> (y, score)), AUC / AP in the
    legend. Uses the Agg canvas directly, so no GUI backend and no global pyplot state."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    roc_fig, pr_fig = Figure(figsize=(6, 5)), Figure(figsize=(6, 5))
    roc_ax, pr_ax = roc_fig.add_subplot(), pr_fig.add_subplot()
    for name, (y, score) in curves.items():
        yy, s = np.asarray(y), np.asarray(score, dtype=np.float64)
        if yy.size == 0 or yy.min() == yy.max():
            raise ValueError(f"{name}: curves need both classes in y")
        fpr, tpr, _ = roc_curve(yy, s)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(yy, s):.3f})")
        precision, recall, _ = precision_recall_curve(yy, s)
        pr_ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision(yy, s):.3f})")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    roc_ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    pr_ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    paths = (out / "roc.png", out / "pr.png")
    for fig, ax, path in ((roc_fig, roc_ax, paths[0]), (pr_fig, pr_ax, paths[1])):
        ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize="small")
        ax.grid(True, alpha=0.3)
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=100)
    return paths
