"""The monitoring block a bundle carries (``schemas/drift.py`` has the layout): reference bins,
a calibration map, and what the threshold should do live.

Which rows fit what:

- feature bins: the training window's rows, as the float32 vector the ONNX model is fed;
- score bins, calibration, expected alert rate and precision: the validation rows' float32 scores.
  In-sample scores of a boosted model are sharper than those of unseen rows, so bins fitted on them
  would report drift on the first live day. (Early stopping looked at the validation window, but it
  chose one number, the tree count, not the scores' shape.)
- calibration quality: the test rows, which nothing here was fitted on.

The model's scores are not probabilities to trust as such: a fraud class weight (``--class-weight``)
inflates them, and boosting with early stopping is over- or under-confident by region. An isotonic
map of score -> P(fraud) fitted on the validation rows corrects that; it is stored as a short
piecewise-linear table so that a monitor needs only ``np.interp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression

from schemas.drift import N_BINS, Bins, Calibration, quantile_bins
from schemas.features import FEATURE_NAMES

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Labels = npt.ArrayLike  # 0/1 fraud labels

# Functions of the transaction's clock: a live day is all-weekend or not, a live hour all-night or
# not, so their PSI over a day measures the calendar, not the population.
CLOCK_FEATURES = ("TX_DURING_WEEKEND", "TX_DURING_NIGHT")
CALIBRATION_METHOD = "isotonic"
MAX_CALIBRATION_POINTS = 200
ECE_BINS = 10


def scores32(score: npt.ArrayLike) -> F64:
    """Scores as the worker sees them (ONNX Runtime outputs float32), in float64 for the arithmetic."""
    return np.asarray(score, dtype=np.float32).astype(np.float64)


def reference_bins(x: npt.ArrayLike) -> Bins:
    """:func:`schemas.drift.quantile_bins`, except when the smallest value holds nine rows in ten or more
    (a terminal's risk, mostly 0): the quantiles then merge every row into one bin, whose PSI is 0
    whatever happens, so the values above the smallest get a bin of their own."""
    v = np.asarray(x, dtype=np.float64)
    bins = quantile_bins(v, N_BINS)
    above = v[v > v.min()]  # quantile_bins refused an empty v
    if bins.n > 1 or above.size == 0:
        return bins
    edges = np.array([above.min()])
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=2)
    return Bins(edges, counts / counts.sum())


def feature_reference(x_train: F32, names: tuple[str, ...] = FEATURE_NAMES) -> dict[str, Bins]:
    """Reference bins of every monitored feature on the training rows (columns in ``names`` order)."""
    if x_train.shape[1] != len(names):
        raise ValueError(f"{x_train.shape[1]} feature columns, {len(names)} names")
    return {name: reference_bins(x_train[:, i]) for i, name in enumerate(names) if name not in CLOCK_FEATURES}


def thin(x: F64, y: F64, max_points: int) -> npt.NDArray[np.intp]:
    """Indices of at most ``max_points`` points of an increasing curve through (x, y), the ends kept,
    such that interpolating between them stays within ``thin_error(y, max_points)`` of the curve.

    Points go at even steps of y, each with its predecessor, so that a jump stays a jump instead of
    becoming a ramp across the plateau before it; flat stretches need no points in between."""
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    steps = max((max_points - 2) // 2, 2)
    rise = y - y[0]
    picked = np.searchsorted(rise, np.linspace(0.0, float(rise[-1]), steps), side="left")
    keep = np.concatenate([[0], picked, picked - 1, [n - 1]])
    return np.unique(np.clip(keep, 0, n - 1))


def thin_error(y: F64, max_points: int) -> float:
    """The most :func:`thin` may move the curve: one step of y."""
    return float(np.ptp(y)) / (max((max_points - 2) // 2, 2) - 1)


def fit_calibration(score: npt.ArrayLike, y: Labels, max_points: int = MAX_CALIBRATION_POINTS) -> Calibration:
    """An increasing isotonic map of score -> P(fraud), clipped outside the scores it saw."""
    s = scores32(score)
    target = np.asarray(y, dtype=np.float64)
    if len(s) == 0 or len(s) != len(target):
        raise ValueError(f"calibration needs scores and labels of equal, non-zero length: {len(s)} vs {len(target)}")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, target)
    x_pts = np.asarray(iso.X_thresholds_, dtype=np.float64)
    y_pts = np.clip(np.asarray(iso.y_thresholds_, dtype=np.float64), 0.0, 1.0)
    if len(x_pts) < 2:  # one distinct score: a flat map over a degenerate span
        x_pts, y_pts = np.array([x_pts[0], x_pts[0]]), np.array([y_pts[0], y_pts[0]])
    keep = thin(x_pts, y_pts, max_points)
    return Calibration(CALIBRATION_METHOD, x_pts[keep], y_pts[keep])


def expected_calibration_error(p: npt.ArrayLike, y: Labels, n_bins: int = ECE_BINS) -> float:
    """Row-weighted mean |mean p - fraud rate| over equal-width probability bins; NaN with no rows."""
    prob = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    target = np.asarray(y, dtype=np.float64)
    if len(prob) == 0:
        return float("nan")
    b = np.minimum((prob * n_bins).astype(np.int64), n_bins - 1)
    gap = np.bincount(b, weights=prob, minlength=n_bins) - np.bincount(b, weights=target, minlength=n_bins)
    return float(np.abs(gap).sum() / len(prob))


def alert_facts(score: npt.ArrayLike, y: Labels, threshold: float) -> tuple[float, float | None]:
    """(share of rows flagged, precision among them; None when nothing is flagged) at the threshold."""
    flagged = scores32(score) >= np.float32(threshold)
    rate = float(flagged.mean()) if flagged.size else float("nan")
    precision = float(np.asarray(y, dtype=np.float64)[flagged].mean()) if flagged.any() else None
    return rate, precision


@dataclass(frozen=True)
class CalibrationQuality:
    """How far the calibrated probabilities can be trusted, measured on rows nothing was fitted on.

    ``estimated_precision`` is what a monitor says before labels come (the mean calibrated p of the
    flagged rows); ``raw_score_precision`` the same from the raw scores; ``realised_precision`` what the
    labels say. None when nothing is flagged.
    """

    rows: int
    flagged: int
    ece_raw: float
    ece_calibrated: float
    estimated_precision: float | None
    raw_score_precision: float | None
    realised_precision: float | None


def calibration_quality(cal: Calibration, score: npt.ArrayLike, y: Labels, threshold: float) -> CalibrationQuality:
    s = scores32(score)
    target = np.asarray(y, dtype=np.float64)
    p = cal(s)
    flagged = s >= np.float32(threshold)
    any_flagged = bool(flagged.any())
    return CalibrationQuality(
        rows=len(s), flagged=int(flagged.sum()),
        ece_raw=expected_calibration_error(s, target), ece_calibrated=expected_calibration_error(p, target),
        estimated_precision=float(p[flagged].mean()) if any_flagged else None,
        raw_score_precision=float(s[flagged].mean()) if any_flagged else None,
        realised_precision=float(target[flagged].mean()) if any_flagged else None,
    )


@dataclass(frozen=True)
class MonitoringFit:
    features: dict[str, Bins]
    score: Bins
    calibration: Calibration
    expected_alert_rate: float
    expected_precision: float | None
    rows: int

    def to_json(self) -> dict[str, Any]:
        """``manifest["monitoring"]``, as ``schemas.drift.parse_monitoring`` reads it."""
        return {
            "reference": {
                "rows": self.rows,
                "features": {name: b.to_json() for name, b in self.features.items()},
                "score": self.score.to_json(),
                "excluded": list(CLOCK_FEATURES),
            },
            "calibration": self.calibration.to_json(),
            "expected_alert_rate": self.expected_alert_rate,
            # No alert on validation: no precision to expect, and 0 says so to a float-only reader.
            "expected_precision": self.expected_precision if self.expected_precision is not None else 0.0,
        }


def fit_monitoring(x_train: F32, score_valid: npt.ArrayLike, y_valid: Labels, threshold: float) -> MonitoringFit:
    """The bundle's monitoring block from the training rows' features and the validation rows' scores."""
    s = scores32(score_valid)
    rate, precision = alert_facts(s, y_valid, threshold)
    return MonitoringFit(features=feature_reference(x_train), score=reference_bins(s),
                         calibration=fit_calibration(s, y_valid), expected_alert_rate=rate,
                         expected_precision=precision, rows=int(x_train.shape[0]))


def feature_psi(ref: MonitoringFit, x: F32, score: npt.ArrayLike,
                names: tuple[str, ...] = FEATURE_NAMES) -> dict[str, float]:
    """PSI of rows ``x`` (and their scores, under ``"score"``) against the reference bins."""
    out = {name: ref.features[name].psi(ref.features[name].counts(x[:, i]))
           for i, name in enumerate(names) if name in ref.features}
    out["score"] = ref.score.psi(ref.score.counts(scores32(score)))
    return out
