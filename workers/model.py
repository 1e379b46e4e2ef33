"""A servable model: a verified bundle, its ONNX Runtime session warmed up, its explainer, its graphs in
agreement. Built the same way at start-up and for a hot reload (``workers/registry.py``), so a bundle
the worker would refuse at start is refused for a swap too, while the running model keeps serving.

Checks, in order (each failure a ``FraudstreamError`` naming it): the bundle's checksums, signature and
feature version (``load_bundle``, by the caller), the native model for reason codes, the ONNX graph
loading with the provider, a warm-up batch, and — when the bundle has both — the tree and the tensor
graphs agreeing on the warm-up rows within ``PARITY`` (the trainer checked it at export; a bundle altered
since, or exported by another version, is caught here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.bundle import Bundle
from schemas.errors import BundleError
from schemas.features import N_FEATURES
from workers.config import GPU_BATCH_SIZE, Settings
from workers.explain import Explainer, load_explainer
from workers.score import GPU_PROVIDERS, Scorer

PARITY = 1e-5
PARITY_ROWS = 256


@dataclass(frozen=True)
class Model:
    bundle: Bundle
    scorer: Scorer
    explainer: Explainer | None
    batch_size: int  # what it was warmed up with: --batch-size, or auto's for the provider it loaded

    @property
    def version(self) -> str:
        return self.bundle.model_version


def build(s: Settings, bundle: Bundle, explain: bool = True) -> Model:
    """The servable model of ``bundle`` under the worker's settings, every check passed (``explain``: load
    its reason codes too; a shadow never flags, so it needs none)."""
    explainer = load_explainer(bundle, s.reasons, s.reasons_share) if explain else None
    scorer = Scorer(bundle.onnx_path, provider=s.provider, intra_op_threads=s.intra_op_threads,
                    inter_op_threads=s.inter_op_threads, tensor_path=bundle.tensor_onnx_path, graph=s.graph)
    batch_size = GPU_BATCH_SIZE if s.batch_size_auto and scorer.provider in GPU_PROVIDERS else s.batch_size
    scorer.warm_up(batch_size)
    check_parity(bundle)
    return Model(bundle, scorer, explainer, batch_size)


def parity_rows(bundle: Bundle, n: int = PARITY_ROWS) -> npt.NDArray[np.float32]:
    """Rows spread over the training distribution: values at the bundle's reference bin edges (a fixed
    seed), else uniform in [0, 1000)."""
    rng = np.random.default_rng(0)
    m = bundle.monitoring
    rows = rng.uniform(0, 1000, size=(n, N_FEATURES))
    if m is not None:
        from schemas.features import FEATURE_NAMES

        for j, name in enumerate(FEATURE_NAMES):
            bins = m.features.get(name)
            if bins is not None and len(bins.edges):
                rows[:, j] = rng.choice(np.concatenate([bins.edges, bins.edges * 1.5 + 1e-3]), size=n)
    return rows.astype(np.float32)


def check_parity(bundle: Bundle) -> float:
    """The largest difference between the tree and the tensor graph on ``parity_rows`` (CPU); ``BundleError``
    above ``PARITY``. 0.0 for a bundle with one graph."""
    if bundle.tensor_onnx_path is None:
        return 0.0
    rows = parity_rows(bundle)
    tree = Scorer(bundle.onnx_path, provider="cpu", graph="tree").score(rows)
    tensor = Scorer(bundle.onnx_path, provider="cpu", tensor_path=bundle.tensor_onnx_path, graph="tensor").score(rows)
    worst = float(np.max(np.abs(tree.astype(np.float64) - tensor.astype(np.float64))))
    if not worst <= PARITY:
        raise BundleError(f"model {bundle.model_version}: its tree and tensor graphs disagree by {worst:.2e} "
                          f"(> {PARITY:g}) on {len(rows)} rows: re-export it (`python -m trainer export`)")
    return worst
