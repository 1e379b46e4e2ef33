"""The monitoring contract a bundle carries: reference distributions, PSI and calibration.

The trainer fixes, at training time, quantile bins for every monitored feature and for the
score, and stores them with the share of reference rows in each bin (``model.json`` ->
``monitoring``). The worker counts live rows into the same bins and compares with the population
stability index; the monitor maps scores to calibrated probabilities. One definition here, used
by both sides, so that a bin means the same thing in training and in production.

Bins: ``edges`` are k increasing cut points, giving k + 1 bins; a value x falls in bin
``searchsorted(edges, x, side="right")``, i.e. bin i holds ``edges[i-1] <= x < edges[i]``. NaN
falls in the last bin (numpy sorts NaN last); the features are never NaN, so that is a guard.

Manifest layout (``model.json``)::

    "monitoring": {
      "reference": {
        "rows": int,                       # rows the feature bins were fitted on
        "features": {name: {"edges": [..k], "expected": [..k+1]}},
        "score": {"edges": [..], "expected": [..]},
        "excluded": [names]                # features not monitored, with the reason in README
      },
      "calibration": {"method": str, "x": [..], "y": [..]},   # p = interp(score, x, y)
      "expected_alert_rate": float,        # share of validation rows at or over the threshold
      "expected_precision": float          # precision at the threshold on the validation rows
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.errors import BundleError

N_BINS = 10
# A bin the reference or the live window left empty would make PSI infinite; both shares are
# floored here, the usual convention (it caps one empty bin's term near 0.0009 * ln(ratio)).
PSI_FLOOR = 1e-4
PSI_WARN = 0.1
PSI_ALERT = 0.25

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Bins:
    edges: F64
    expected: F64

    @property
    def n(self) -> int:
        return len(self.expected)

    def index(self, x: npt.ArrayLike) -> npt.NDArray[np.intp]:
        return np.searchsorted(self.edges, np.asarray(x, dtype=np.float64), side="right")

    def counts(self, x: npt.ArrayLike) -> I64:
        return np.bincount(self.index(x), minlength=self.n).astype(np.int64)

    def psi(self, counts: npt.ArrayLike) -> float:
        return psi(self.expected, counts)

    def to_json(self) -> dict[str, list[float]]:
        return {"edges": [float(e) for e in self.edges], "expected": [float(p) for p in self.expected]}


def quantile_bins(x: npt.ArrayLike, n_bins: int = N_BINS) -> Bins:
    """Bins at the reference's quantiles; ties merge bins, so a binary feature gets two."""
    v = np.asarray(x, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("no reference rows to fit bins on")
    qs = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1], method="inverted_cdf")  # observed values
    edges = np.unique(qs)
    # A cut at the minimum would leave the first bin empty by construction.
    edges = edges[edges > v.min()]
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return Bins(edges, counts / counts.sum())


def psi(expected: npt.ArrayLike, counts: npt.ArrayLike) -> float:
    """Population stability index of live bin ``counts`` against reference shares; NaN if empty."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return float("nan")
    a = np.maximum(c / total, PSI_FLOOR)
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class Calibration:
    method: str
    x: F64
    y: F64

    def __call__(self, score: npt.ArrayLike) -> F64:
        return np.interp(np.asarray(score, dtype=np.float64), self.x, self.y)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}


@dataclass(frozen=True)
class Monitoring:
    features: dict[str, Bins]
    score: Bins
    excluded: tuple[str, ...]
    calibration: Calibration
    expected_alert_rate: float
    expected_precision: float
    rows: int


def _bins(name: str, raw: Any) -> Bins:
    try:
        edges = np.asarray(raw["edges"], dtype=np.float64)
        expected = np.asarray(raw["expected"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"monitoring reference for {name!r} is malformed ({exc}): re-train the bundle") from exc
    if edges.ndim != 1 or expected.shape != (len(edges) + 1,):
        raise BundleError(f"monitoring reference for {name!r}: {len(edges)} edges need {len(edges) + 1} shares")
    if np.any(np.diff(edges) <= 0) or not np.all(np.isfinite(edges)):
        raise BundleError(f"monitoring reference for {name!r}: edges must be finite and increasing")
    if np.any(expected < 0) or abs(expected.sum() - 1.0) > 1e-6:
        raise BundleError(f"monitoring reference for {name!r}: shares must be >= 0 and sum to 1")
    return Bins(edges, expected)


def _calibration(raw: Any) -> Calibration:
    try:
        x = np.asarray(raw["x"], dtype=np.float64)
        y = np.asarray(raw["y"], dtype=np.float64)
        method = str(raw["method"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"monitoring calibration is malformed ({exc}): re-train the bundle") from exc
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2 or np.any(np.diff(x) < 0):
        raise BundleError("monitoring calibration: x must be increasing, with a y for every x (at least 2)")
    if np.any((y < 0) | (y > 1)):
        raise BundleError("monitoring calibration: y must be probabilities in [0, 1]")
    return Calibration(method, x, y)


def parse_monitoring(manifest: Mapping[str, Any], feature_names: tuple[str, ...]) -> Monitoring | None:
    """The bundle's monitoring block; None for a bundle written without one; BundleError if malformed."""
    raw = manifest.get("monitoring")
    if raw is None:
        return None
    try:
        ref = raw["reference"]
        feats = {name: _bins(name, b) for name, b in ref["features"].items()}
        unknown = sorted(set(feats) - set(feature_names))
        if unknown:
            raise BundleError(f"monitoring reference names unknown features {unknown}: re-train the bundle")
        return Monitoring(
            features={n: feats[n] for n in feature_names if n in feats},
            score=_bins("score", ref["score"]),
            excluded=tuple(ref.get("excluded", ())),
            calibration=_calibration(raw["calibration"]),
            expected_alert_rate=float(raw["expected_alert_rate"]),
            expected_precision=float(raw["expected_precision"]),
            rows=int(ref["rows"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"model.json monitoring block is malformed ({exc!r}): re-train the bundle") from exc
