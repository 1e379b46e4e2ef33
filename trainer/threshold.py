"""The alert threshold: a daily alert budget.

Investigators can look at so many cards a day, so the threshold is set by volume, not by a
target probability: the *smallest* threshold ``t`` such that the mean number of alerts per day,
``#(score >= t) / n_days`` over the days present in the data it is chosen on, is at most
``budget_per_day``.

Comparison and precision. The worker flags ``float32(score) >= float32(threshold)``: scores are
rounded to float32 first (ONNX Runtime outputs float32), and the threshold is itself a float32
value stored as a Python float (exact in float64, so ``np.float32(value) == value``). Because
the candidate thresholds are the float32 scores themselves, the float32 comparison on the
selection data flags exactly the counted alerts. A float64 score ``s >= value`` implies
``float32(s) >= value`` (rounding is monotonic), so a float64 comparison never flags more.

Ties. Alerts are all-or-nothing per score value: if several rows share the score at the budget
boundary and flagging all of them would exceed the budget, none of them is flagged (the threshold
moves to the next higher score). When even the highest score is too many (e.g. a budget of 0),
the threshold is the next float32 above the highest score and nothing is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

RULE = "daily alert budget"


@dataclass(frozen=True)
class Threshold:
    """A chosen threshold and what it does on the data it was chosen on.

    ``value`` is exactly representable in float32; flag with ``float32(score) >= value``
    (:meth:`flags`). ``precision`` / ``recall`` are None when no labels were given, or when
    nothing is flagged (precision) or there are no frauds (recall).
    """

    value: float
    rule: str
    budget_per_day: int
    expected_alerts_per_day: float
    n_days: int
    precision: float | None = None
    recall: float | None = None

    def flags(self, score: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """The alert mask: ``float32(score) >= float32(value)``."""
        return np.asarray(score, dtype=np.float32) >= np.float32(self.value)


def choose_threshold(
    score: npt.ArrayLike, day: npt.ArrayLike, budget_per_day: int, y: npt.ArrayLike | None = None
) -> Threshold:
    """The smallest float32 threshold whose mean alerts per day stay within ``budget_per_day``.

    ``day`` is any per-row day key (e.g. :func:`trainer.evaluate.day_index`); the number of days is
    the number of distinct keys. ``y`` (0/1), when given, yields precision and recall at the
    threshold. See the module docstring for the comparison and tie rules.
    """
    if budget_per_day < 0:
        raise ValueError(f"budget_per_day must be non-negative, got {budget_per_day}")
    s = np.asarray(score, dtype=np.float32)
    d = np.asarray(day)
    if s.ndim != 1 or s.shape != d.shape:
        raise ValueError(f"score and day must be one-dimensional and of equal length: {s.shape} vs {d.shape}")
    if s.size == 0:
        raise ValueError("cannot choose a threshold on no scores")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")

    n_days = len(np.unique(d))
    allowed = budget_per_day * n_days  # total alerts over the days
    values, counts = np.unique(s, return_counts=True)  # ascending
    at_or_above = np.cumsum(counts[::-1])[::-1]  # alerts at threshold values[i]
    fits = np.flatnonzero(at_or_above <= allowed)
    # the lowest score value that fits, else just above the highest score (nothing flagged)
    value = values[fits[0]] if fits.size else np.nextafter(values[-1], np.float32(np.inf), dtype=np.float32)

    t = Threshold(
        value=float(value),
        rule=f"{RULE}: smallest float32 t with mean daily #(float32(score) >= t) <= {budget_per_day}; "
        "ties at the boundary all excluded",
        budget_per_day=budget_per_day,
        expected_alerts_per_day=float(np.count_nonzero(s >= value)) / n_days,
        n_days=n_days,
    )
    if y is None:
        return t
    yy = np.asarray(y)
    if yy.shape != s.shape or not np.isin(yy, (0, 1)).all():
        raise ValueError("y must be 0/1 labels, one per score")
    flagged = t.flags(s)
    hits = int(np.count_nonzero(flagged & (yy == 1)))
    n_flagged, n_fraud = int(flagged.sum()), int((yy == 1).sum())
    return replace(
        t,
        precision=hits / n_flagged if n_flagged else None,
        recall=hits / n_fraud if n_fraud else None,
    )
