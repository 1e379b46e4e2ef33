"""The monitoring block a bundle carries: reference bins that reproduce from the training rows, PSI that
sees a shift and not a new week, and a calibration map that estimates precision where the truth is known."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from schemas.bundle import load_bundle
from schemas.drift import PSI_ALERT, PSI_WARN, Monitoring
from schemas.features import FEATURE_NAMES
from trainer import pipeline
from trainer.cli import QUICK
from trainer.export import onnx_scores
from trainer.fit import FitParams
from trainer.monitoring import (
    CLOCK_FEATURES,
    MAX_CALIBRATION_POINTS,
    calibration_quality,
    expected_calibration_error,
    fit_calibration,
    reference_bins,
    thin,
    thin_error,
)
from trainer.pipeline import Dataset, Trained, default_split, train_and_evaluate, write_bundle
from trainer.simulate import labels_of, simulate

AMOUNT_FEATURES = [n for n in FEATURE_NAMES if n == "TX_AMOUNT" or "_AVG_AMOUNT_" in n]


@dataclass(frozen=True)
class Run:
    trained: Trained
    path: Path
    monitoring: Monitoring

    def rows(self, window: str) -> np.ndarray:
        ds, split = self.trained.ds, self.trained.split
        return ds.rows(split.windows()[window])

    def scores(self, window: str) -> np.ndarray:
        x = self.trained.ds.x[self.rows(window)]
        return np.asarray(self.trained.booster.predict(x), dtype=np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    history = simulate(QUICK)
    ds = Dataset.build(history, labels_of(history, None))
    trained = train_and_evaluate(ds, default_split(history), FitParams(), 100, 0, lambda _: None)
    path = write_bundle(trained, tmp_path_factory.mktemp("bundles"), None, lambda _: None)
    monitoring = load_bundle(path).monitoring
    assert monitoring is not None
    return Run(trained, path, monitoring)


def test_feature_reference_reproduces_from_the_training_rows(run: Run) -> None:
    x = run.trained.ds.x[run.rows("train")]
    m = run.monitoring
    assert m.rows == len(x)
    for name, bins in m.features.items():
        column = x[:, FEATURE_NAMES.index(name)]
        again = reference_bins(column)
        np.testing.assert_array_equal(bins.edges, again.edges, err_msg=name)
        np.testing.assert_allclose(bins.expected, again.expected, rtol=0, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(bins.counts(column) / len(column), bins.expected, rtol=0, atol=1e-15)
        assert bins.n >= 2, f"{name}: one bin, its PSI could never move"


def test_score_reference_and_alert_facts_come_from_the_validation_rows(run: Run) -> None:
    m, score = run.monitoring, run.scores("validation")
    again = reference_bins(score)
    np.testing.assert_array_equal(m.score.edges, again.edges)
    np.testing.assert_allclose(m.score.expected, again.expected, rtol=0, atol=1e-15)
    flagged = score >= np.float32(run.trained.threshold.value)
    y = run.trained.ds.history.is_fraud[run.rows("validation")]
    assert m.expected_alert_rate == pytest.approx(flagged.mean(), abs=1e-15)
    assert m.expected_precision == pytest.approx(y[flagged].mean(), abs=1e-15)
    # The ONNX graph the worker runs puts the same rows in the same score bins.
    live = onnx_scores(run.path / "model.onnx", run.trained.ds.x[run.rows("validation")])
    assert m.score.psi(m.score.counts(live)) < 1e-3


def test_the_clock_features_are_excluded(run: Run) -> None:
    m = run.monitoring
    assert set(CLOCK_FEATURES) == {"TX_DURING_WEEKEND", "TX_DURING_NIGHT"} <= set(FEATURE_NAMES)
    assert m.excluded == CLOCK_FEATURES
    assert set(m.features) == set(FEATURE_NAMES) - set(CLOCK_FEATURES)


def _psi(m: Monitoring, x: np.ndarray) -> dict[str, float]:
    return {n: b.psi(b.counts(x[:, FEATURE_NAMES.index(n)])) for n, b in m.features.items()}


def test_psi_is_small_on_another_week_and_large_on_doubled_amounts(run: Run) -> None:
    x = run.trained.ds.x[run.rows("validation")]
    calm = _psi(run.monitoring, x)
    assert max(calm.values()) < PSI_WARN, calm
    doubled = x.copy()
    for name in AMOUNT_FEATURES:
        doubled[:, FEATURE_NAMES.index(name)] *= 2
    shifted = _psi(run.monitoring, doubled)
    assert shifted["TX_AMOUNT"] > PSI_ALERT, shifted
    assert all(shifted[n] > PSI_ALERT for n in AMOUNT_FEATURES if n in shifted), shifted
    # The amount relative to the card's habit does not move when every amount doubles.
    assert shifted["CUSTOMER_AMOUNT_RATIO_30DAY"] == calm["CUSTOMER_AMOUNT_RATIO_30DAY"]


def test_bundle_calibration_is_a_short_monotone_probability_table(run: Run) -> None:
    cal = run.monitoring.calibration
    assert cal.method == "isotonic"
    assert 2 <= len(cal.x) <= MAX_CALIBRATION_POINTS
    assert np.all(np.diff(cal.x) > 0) and np.all(np.diff(cal.y) >= 0)
    assert np.all((cal.y >= 0) & (cal.y <= 1))
    p = cal(np.linspace(-1, 2, 301))
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1


def test_report_shows_the_calibration_on_the_test_rows(run: Run) -> None:
    report = json.loads((run.path / "report.json").read_text())["monitoring"]
    q = report["calibration_test"]
    assert q["rows"] == int(pipeline.test_mask(run.trained.ds, run.trained.split).sum()) > 0
    assert 0 <= q["ece_calibrated"] <= 1 and 0 <= q["ece_raw"] <= 1
    assert set(report["psi_test"]) == set(run.monitoring.features) | {"score"}
    assert "## Monitoring" in (run.path / "report.md").read_text()


# --------------------------------------------------------------------------- synthetic truth


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores whose true fraud probability is score ** 3 (a model trained with a fraud weight is
    over-confident like this), with labels drawn from that truth."""
    rng = np.random.default_rng(seed)
    score = rng.beta(0.6, 3.0, n).astype(np.float32)
    truth = score.astype(np.float64) ** 3
    return score, truth, (rng.random(n) < truth).astype(np.int8)


def test_calibration_estimates_precision_where_the_truth_is_known() -> None:
    score, _, y = _miscalibrated(200_000, seed=1)
    cal = fit_calibration(score, y)
    test_score, truth, test_y = _miscalibrated(200_000, seed=2)
    threshold = float(np.quantile(test_score, 0.97))
    q = calibration_quality(cal, test_score, test_y, threshold)
    flagged = test_score >= np.float32(threshold)
    assert q.flagged == int(flagged.sum()) > 1000
    assert q.estimated_precision is not None and q.realised_precision is not None
    # Bound: about three binomial standard deviations of the realised precision over ~6000 flagged rows.
    assert abs(q.estimated_precision - truth[flagged].mean()) < 0.02
    assert abs(q.estimated_precision - q.realised_precision) < 0.03
    assert q.raw_score_precision is not None and q.raw_score_precision - q.realised_precision > 0.1
    assert q.ece_raw > 0.05 and q.ece_calibrated < 0.01


def test_thinning_keeps_the_isotonic_curve() -> None:
    from sklearn.isotonic import IsotonicRegression

    score, _, y = _miscalibrated(200_000, seed=3)
    full = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(score.astype(np.float64), y)
    points = 40
    assert len(full.X_thresholds_) > 2 * points  # else little was thinned
    cal = fit_calibration(score, y, max_points=points)
    assert len(cal.x) <= points
    grid = np.sort(score.astype(np.float64))
    assert np.abs(cal(grid) - full.predict(grid)).max() <= thin_error(full.y_thresholds_, points)


def test_thin_keeps_the_ends_and_is_a_no_op_when_short() -> None:
    x = np.linspace(0, 1, 1000)
    y = np.where(x < 0.9, 0.0, 1.0)
    keep = thin(x, y, 20)
    assert keep[0] == 0 and keep[-1] == 999 and len(keep) <= 22 and np.all(np.diff(keep) > 0)
    # A jump stays a jump: both its sides are kept, so interpolation is exact here.
    np.testing.assert_array_equal(np.interp(x, x[keep], y[keep]), y)
    np.testing.assert_array_equal(thin(x[:10], y[:10], 20), np.arange(10))


def test_expected_calibration_error() -> None:
    assert expected_calibration_error([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.0
    assert expected_calibration_error([0.9, 0.9], [0, 0]) == pytest.approx(0.9)
    # Two bins, off by 0.15 in opposite directions: the gaps do not cancel.
    assert expected_calibration_error([0.15] * 10 + [0.85] * 10, [0] * 10 + [1] * 10) == pytest.approx(0.15)
    assert np.isnan(expected_calibration_error([], []))


def test_reference_bins_split_a_feature_that_is_mostly_its_minimum() -> None:
    v = np.r_[np.zeros(950), np.linspace(0.1, 1.0, 50)]
    bins = reference_bins(v)
    assert bins.n == 2 and bins.expected.tolist() == [0.95, 0.05]
    assert reference_bins(np.zeros(10)).n == 1
    assert reference_bins(np.arange(1000)).n == 10
