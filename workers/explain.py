"""Why a flag: reason codes from TreeSHAP, computed by LightGBM's own ``pred_contrib``.

A flag says *that* a transaction looks like fraud; an analyst needs *why*. The bundle's native
model (``model.lgb.txt``: the trees the ONNX graphs were exported from, its sha256 verified at
bundle load) gives, per row, one SHAP contribution per feature plus the expected value (the
bias), in log-odds: ``bias + sum(contributions) == raw score``, and ``sigmoid(raw score)`` is the
ONNX probability up to float32 rounding. The reasons are the ``top_k`` largest *positive*
contributions, largest first: the features that pushed the score up most (a row with fewer
positive contributions gets fewer reasons; ties go to the earlier feature).

Cost: exact (path-dependent) TreeSHAP is O(trees x leaves x depth^2) a row, about a millisecond
on one core for a few hundred depth-8 trees, where scoring the row costs microseconds. So it runs
on the flagged rows only (about 1 % of traffic), and a batch without flags costs nothing.
LightGBM is imported only when reasons are on (``--reasons 0`` loads nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.bundle import LGB_FILE, Bundle
from schemas.errors import BundleError, ConfigError
from schemas.features import FEATURE_NAMES

if TYPE_CHECKING:
    import lightgbm as lgb

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class Reason(msgspec.Struct, frozen=True):
    """One feature that raised the score: its value in the row and its contribution (log-odds)."""

    feature: str
    value: float
    contribution: float


class Explanation(msgspec.Struct, frozen=True):
    """A flagged row's explanation, encoded as is into the Flag message (schemas/messages.py ``FLAG``)."""

    raw_score: float      # log-odds: bias + the sum of every feature's contribution
    bias: float           # the expected raw score over the training data
    reasons: list[Reason]


def top_reasons(contrib: F64, rows: F32, names: Sequence[str], k: int) -> list[Explanation]:
    """Explanations from ``pred_contrib`` output: ``contrib`` [n, F + 1], the bias in the last column."""
    feats = contrib[:, :-1]
    # A stable sort of the negated contributions: largest first, ties by feature order.
    order = np.argsort(-feats, axis=1, kind="stable")[:, :k]
    out: list[Explanation] = []
    for i in range(len(contrib)):
        reasons = [Reason(names[j], float(rows[i, j]), float(feats[i, j]))
                   for j in order[i].tolist() if feats[i, j] > 0]
        out.append(Explanation(float(contrib[i].sum()), float(contrib[i, -1]), reasons))
    return out


class ReasonBudget:
    """How many of a batch's flags get reason codes: on average at most ``share`` of the rows scored. Each
    row scored earns ``share`` of an explanation, each explanation spends one, and the credit is kept up
    to ``burst``: normal traffic (flags under the share) is explained in full, and a flood of flags (a
    drift, an attack) costs at most ``share`` x the price of one explanation per row."""

    def __init__(self, share: float, burst: float = 256.0) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"the share of rows explained must be in (0, 1], got {share}")
        self.share, self.burst, self.credit = share, burst, burst

    def take(self, scored: int, flags: int) -> int:
        """How many of a batch's ``flags`` (of ``scored`` rows) to explain now."""
        # The saved credit is capped, not this batch's earning: at share 1 every flag is always explained.
        self.credit = min(self.burst, self.credit) + self.share * scored
        n = min(flags, int(self.credit))
        self.credit -= n
        return n


class Explainer:
    """TreeSHAP reason codes of a booster's rows, ``top_k`` (>= 1) positive contributions each, within a
    ``ReasonBudget``."""

    def __init__(self, booster: lgb.Booster | Any, names: Sequence[str], top_k: int,
                 budget: ReasonBudget | None = None) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (0 means no explainer), got {top_k}")
        if booster.num_feature() != len(names):
            raise ValueError(f"the booster has {booster.num_feature()} features, the names {len(names)}")
        self.booster, self.names, self.top_k = booster, tuple(names), top_k
        self.budget = budget or ReasonBudget(1.0)

    def explain(self, rows: F32) -> list[Explanation]:
        """One explanation per row of ``rows`` (float32, the bundle's feature order); none for no rows."""
        if len(rows) == 0:
            return []
        # One thread: the worker's core is single-threaded, and LightGBM's OpenMP pool would spin on
        # every core after each call (twice the CPU for the same wall time at 1-10 rows, measured).
        contrib = np.asarray(self.booster.predict(rows, pred_contrib=True, num_threads=1), dtype=np.float64)
        return top_reasons(contrib, rows, self.names, self.top_k)


def load_explainer(bundle: Bundle, top_k: int, share: float = 1.0) -> Explainer | None:
    """The bundle's explainer (None when ``top_k`` is 0); ``BundleError`` when its native model is unusable,
    ``ConfigError`` when LightGBM itself does not load."""
    if top_k == 0:
        return None
    path = bundle.lgb_path
    if path is None:
        raise BundleError(f"bundle {bundle.path} has no {LGB_FILE}, which reason codes need: re-train it, "
                          "or run the worker with --reasons 0")
    try:
        import lightgbm as lgb
    except OSError as exc:  # its wheel links the system's OpenMP runtime, which slim images lack
        raise ConfigError(f"LightGBM does not load ({exc}): reason codes need it; install the OpenMP runtime "
                          "(Debian: libgomp1), or run the worker with --reasons 0") from exc
    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise BundleError(f"{path}: LightGBM cannot load it ({exc})") from exc
    if booster.feature_name() != list(FEATURE_NAMES):
        raise BundleError(f"{path}: its features {booster.feature_name()} are not this worker's {list(FEATURE_NAMES)}")
    return Explainer(booster, FEATURE_NAMES, top_k, ReasonBudget(share))
