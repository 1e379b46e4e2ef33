"""The Markdown / JSON report and the curve plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.evaluate import Metrics, handbook_split, protocol_splits, utc_ms
from trainer.report import PUBLISHED, FoldResult, ModelResult, ReportInput, plot_curves, summarize, write_report
from trainer.threshold import choose_threshold

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _m(auc: float, ap: float, cp: float, n: int = 1000, n_fraud: int = 9) -> Metrics:
    return Metrics(auc=auc, ap=ap, cp100=cp, n=n, n_fraud=n_fraud)


def _input() -> ReportInput:
    folds = protocol_splits(utc_ms(2018, 7, 25), folds=3)
    lgbm = ModelResult(
        name="LightGBM",
        train=_m(0.991, 0.912, 0.41),
        validation=_m(0.884, 0.701, 0.31),
        test=_m(0.876, 0.690, 0.305),
        folds=[
            FoldResult(f, _m(a, p, c))
            for f, (a, p, c) in zip(folds, [(0.87, 0.68, 0.30), (0.88, 0.70, 0.31), (0.86, 0.66, 0.29)], strict=True)
        ],
    )
    lr = ModelResult(
        name="Logistic regression",
        train=_m(0.869, 0.600, 0.28),
        validation=_m(0.861, 0.611, 0.27),
        test=_m(0.858, float("nan"), 0.27),
    )
    rng = np.random.default_rng(0)
    thr = choose_threshold(rng.random(700), np.repeat(np.arange(7), 100), 10, y=rng.integers(0, 2, 700))
    return ReportInput(
        split=handbook_split(),
        models=[lgbm, lr],
        threshold=thr,
        params={"num_leaves": 31, "learning_rate": np.float64(0.05), "max_depth": 8},
        data={"source": "simulator", "seed": 42, "rows": 1_754_155},
    )


def test_summary_is_mean_and_sample_std() -> None:
    s = summarize(_input().models[0].folds)
    assert s["auc"].mean == pytest.approx(0.87)
    assert s["auc"].std == pytest.approx(0.01)  # ddof=1 over 0.87, 0.88, 0.86
    assert s["auc"].n == 3
    assert summarize([])["ap"].std is None


def test_report_files(tmp_path: Path) -> None:
    md_path, json_path = write_report(tmp_path / "out", _input())
    assert md_path.is_file() and json_path.is_file()

    def no_nan(token: str) -> None:
        raise AssertionError(f"non-strict JSON constant {token}")

    doc = json.loads(json_path.read_text(), parse_constant=no_nan)
    assert [m["name"] for m in doc["models"]] == ["LightGBM", "Logistic regression"]
    assert doc["models"][0]["validation"]["auc"] == pytest.approx(0.884)
    assert doc["models"][1]["test"]["ap"] is None  # NaN -> null
    assert doc["models"][0]["folds_summary"]["auc"]["mean"] == pytest.approx(0.87)
    assert len(doc["models"][0]["folds"]) == 3
    assert doc["published"]["XGBoost (handbook, tuned)"]["ap"] == pytest.approx(0.687)
    assert doc["split"]["test"]["label"] == "2018-08-08..2018-08-14"
    assert doc["threshold"]["budget_per_day"] == 10
    assert doc["params"]["learning_rate"] == pytest.approx(0.05)
    assert doc["data"]["seed"] == 42

    md = md_path.read_text()
    for name, vals in PUBLISHED.items():
        assert f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |" in md
    assert "| XGBoost (handbook, tuned) | 0.869 | 0.687 | 0.303 |" in md
    assert "2018-07-25..2018-07-31" in md and "2018-08-08..2018-08-14" in md
    assert "0.991 / 0.884 / 0.876" in md  # train / validation / test side by side
    assert "0.870 ± 0.010" in md  # fold mean ± std
    assert "Logistic regression" in md and "n/a" in md
    assert "expected alerts per day" in md


def test_curves_are_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    curves = {"LightGBM": (y, y * 0.5 + rng.random(500)), "Logistic regression": (y, rng.random(500))}
    roc, pr = plot_curves(tmp_path, curves)
    assert (roc.name, pr.name) == ("roc.png", "pr.png")
    for p in (roc, pr):
        data = p.read_bytes()
        assert len(data) > 1000
        assert data.startswith(PNG_MAGIC)


def test_curves_need_both_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both classes"):
        plot_curves(tmp_path, {"m": (np.zeros(5), np.arange(5.0))})
