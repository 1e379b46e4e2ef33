"""The tensorized graph (trainer/tensorize.py): LightGBM's scores to 1e-5 from standard ops only.

Parity is checked on random rows with NaNs, zeros and tiny values, on rows exactly at every split
threshold and one float32 ulp either side, for each missing type LightGBM produces (None, Zero,
NaN), unbalanced and shallow trees, and a non-default sigmoid; refusals name what to change.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import onnx
import pytest

from schemas.errors import ExportError
from trainer.export import check_parity, edge_rows, onnx_scores, split_thresholds
from trainer.tensorize import (
    CUDA_OPS,
    K_ZERO_THRESHOLD,
    LIGHTGBM_INF,
    float32_at_or_below,
    tables,
    to_tensor_onnx,
)

F = 6
TOLERANCE = 1e-5


def _data(n: int, seed: int, nan: float = 0.1, zero: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    x[rng.random(x.shape) < nan] = np.nan
    x[rng.random(x.shape) < zero] = 0.0
    signal = np.nan_to_num(x[:, 0]) + 0.7 * np.nan_to_num(x[:, 1]) - 0.5 * np.isnan(x[:, 2]) + (x[:, 3] == 0)
    y = (signal + rng.normal(scale=0.6, size=n) > 0.3).astype(np.int32)
    return x, y


def _train(params: dict[str, object], rounds: int = 40, nan: float = 0.1, seed: int = 0) -> lgb.Booster:
    x, y = _data(3000, seed, nan=nan)
    base = {"objective": "binary", "num_leaves": 15, "max_depth": 6, "min_child_samples": 20, "verbose": -1,
            "seed": seed, "deterministic": True}
    return lgb.train({**base, **params}, lgb.Dataset(x, y), num_boost_round=rounds)


def _probe(booster: lgb.Booster, seed: int = 1) -> np.ndarray:
    """Random rows (NaN, 0, -0, tiny, huge), plus every threshold and its float32 neighbours."""
    rng = np.random.default_rng(seed)
    x, _ = _data(2000, seed + 10, nan=0.15, zero=0.15)
    specials = np.array([np.nan, 0.0, -0.0, 1e-36, -1e-36, K_ZERO_THRESHOLD, -K_ZERO_THRESHOLD,
                         np.nextafter(K_ZERO_THRESHOLD, np.float32(1)), np.nextafter(-K_ZERO_THRESHOLD, np.float32(-1)),
                         1e-45, np.inf, -np.inf, 3e38], dtype=np.float32)
    sprinkled = x.copy()
    mask = rng.random(x.shape) < 0.2
    sprinkled[mask] = rng.choice(specials, size=int(mask.sum()))
    return np.vstack([x, sprinkled, _threshold_rows(booster, x[:50])]).astype(np.float32)


def _threshold_rows(booster: lgb.Booster, templates: np.ndarray) -> np.ndarray:
    """For every split threshold t: rows with float32(t), the float32 just below and just above."""
    rows = []
    for f, ths in split_thresholds(booster).items():
        for i, t in enumerate(ths):
            with np.errstate(over="ignore"):  # NaN-vs-rest splits have thresholds beyond float32
                t32 = np.float32(t)
            for v in (t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))):
                r = templates[i % len(templates)].copy()
                r[f] = v
                rows.append(r)
    return np.asarray(rows, np.float32).reshape(-1, F)


def _assert_parity(booster: lgb.Booster, x: np.ndarray) -> float:
    model = to_tensor_onnx(booster)
    got = onnx_scores(model, x)
    expected = booster.predict(x)
    diff = np.abs(got.astype(np.float64) - expected)
    worst = float(diff.max())
    i = int(diff.argmax())
    assert worst <= TOLERANCE, f"row {i} {x[i]}: tensor {got[i]} vs lightgbm {expected[i]}"
    return worst


MISSING_CASES = {
    # params, NaN share of the training data, the missing type LightGBM then writes on every split
    "nan": ({}, 0.1, "NaN"),
    "zero": ({"zero_as_missing": True}, 0.1, "Zero"),
    "none_use_missing_false": ({"use_missing": False}, 0.1, "None"),
    "none_no_nan_in_training": ({}, 0.0, "None"),
}


@pytest.mark.parametrize("case", sorted(MISSING_CASES))
def test_parity_for_each_missing_type(case: str) -> None:
    params, nan, missing = MISSING_CASES[case]
    booster = _train(params, nan=nan)
    counts = tables(booster).stats["splits_by_missing_type"]
    assert counts[missing] > 0 and sum(counts.values()) == counts[missing], counts
    x = _probe(booster)
    assert np.isnan(x).any() and (x == 0).any() and len(_threshold_rows(booster, x[:1])) > 100
    _assert_parity(booster, x)


def test_zero_missing_type_sends_tiny_values_and_nan_the_default_way() -> None:
    booster = _train({"zero_as_missing": True})
    x = _probe(booster)[:200]
    for v in (0.0, -0.0, 1e-36, -K_ZERO_THRESHOLD, np.nan):
        probe = x.copy()
        probe[:, 3] = v
        _assert_parity(booster, probe)


def test_unbalanced_and_shallow_trees() -> None:
    # Leaf-wise growth with few leaves and no depth bound: chains of different lengths.
    unbalanced = _train({"num_leaves": 5, "max_depth": -1, "min_child_samples": 5}, rounds=30)
    depths = tables(unbalanced).stats["tree_depths"]
    assert depths["max"] > 2, depths
    _assert_parity(unbalanced, _probe(unbalanced))
    # Some trees much shallower than the deepest one (depth padding with replicated leaves).
    mixed = _train({"num_leaves": 31, "max_depth": 7, "learning_rate": 0.5, "min_gain_to_split": 2.0}, rounds=60)
    depths = tables(mixed).stats["tree_depths"]
    assert depths["min"] < depths["max"], depths
    _assert_parity(mixed, _probe(mixed))


def test_trees_without_a_split() -> None:
    # min_child_samples above half the rows: no split is possible, every tree is one leaf.
    stumps = _train({"min_child_samples": 2000}, rounds=5)
    t = tables(stumps)
    assert t.stats["tree_depths"] == {"max": 0, "min": 0} and t.depth == 1
    _assert_parity(stumps, _probe(stumps))


def test_sigmoid_parameter_is_applied() -> None:
    booster = _train({"sigmoid": 0.4}, rounds=20)
    assert "sigmoid:0.4" in booster.dump_model()["objective"]
    _assert_parity(booster, _probe(booster))


def test_random_forest_average_output() -> None:
    booster = _train({"boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1, "feature_fraction": 0.8},
                     rounds=15)
    assert booster.dump_model()["average_output"]
    _assert_parity(booster, _probe(booster))


def test_export_checks_both_graphs_on_edge_rows() -> None:
    from schemas.features import N_FEATURES
    from trainer.export import to_onnx
    from trainer.export import to_tensor_onnx as export_tensor

    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.isnan(x[:, 1]) + rng.normal(scale=0.5, size=len(x)) > 0.5).astype(np.int32)
    booster = lgb.train({"objective": "binary", "verbose": -1, "max_depth": 6}, lgb.Dataset(x, y), 30)
    edges = edge_rows(booster, x[:500], np.random.default_rng(0))
    assert np.isinf(edges).any() and np.isnan(edges).any()
    for model, what in ((export_tensor(booster), "tensorized ONNX"), (to_onnx(booster), "ONNX")):
        parity = check_parity(booster, model, x[:500], what=what)
        assert parity.max_abs_diff <= TOLERANCE and parity.edge_rows == len(edges)


def test_threshold_rounding_is_exact_for_float32_input() -> None:
    """For every float32 x (+-inf read as +-1e300, as LightGBM does): x <= t32 iff x <= t."""

    def lightgbm_reads(x: np.float32) -> float:
        return float(np.clip(float(x), -LIGHTGBM_INF, LIGHTGBM_INF))

    rng = np.random.default_rng(3)
    doubles = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, size=2000),
                              [1e-35, 1.0000000180025095e-35, 0.1, -0.1, 1e300, -1e300, 1e200, -1e200,
                               3.4028235677973366e38, -3.4028235677973366e38]])
    moved = 0
    with np.errstate(over="ignore"):
        for t in doubles:
            t32 = float32_at_or_below(float(t))
            nearest = np.float32(t)
            moved += float(nearest) != float(t32)
            up, down = np.nextafter(nearest, np.float32(np.inf)), np.nextafter(nearest, np.float32(-np.inf))
            candidates = [nearest, up, down, t32, np.float32(np.inf), np.float32(-np.inf), np.finfo(np.float32).max]
            for x in candidates:
                if not np.isnan(x):
                    assert (x <= t32) == (lightgbm_reads(x) <= float(t)), (t, x, t32)
    assert moved > 100  # nearest rounding would have put these above t: the case that matters


def test_threshold_rounded_down_changes_the_decision_nearest_would_get_wrong() -> None:
    booster = _train({}, rounds=40)
    ths = [(f, t) for f, ts in split_thresholds(booster).items() for t in ts if t < 1e38 and float(np.float32(t)) > t]
    assert ths, "no threshold whose nearest float32 lies above it: the test data no longer exercises the case"
    f, t = ths[0]
    x = _probe(booster)[:20]
    x[:, f] = np.float32(t)  # > t in double: LightGBM sends it right; a nearest-rounded threshold would send it left
    _assert_parity(booster, x)


def test_graph_uses_default_domain_ops_with_cuda_kernels_only() -> None:
    model = to_tensor_onnx(_train({"zero_as_missing": True}, rounds=5))
    onnx.checker.check_model(model)
    assert {imp.domain for imp in model.opset_import} <= {"", "ai.onnx"}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    assert not any(n.domain == "ai.onnx.ml" or n.op_type.startswith("TreeEnsemble") for n in model.graph.node)
    assert {n.op_type for n in model.graph.node} <= CUDA_OPS
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    probs = onnx_scores(model, np.zeros((3, F), np.float32))
    assert probs.shape == (3,)


def test_probabilities_are_complementary() -> None:
    import onnxruntime as ort

    booster = _train({}, rounds=10)
    sess = ort.InferenceSession(to_tensor_onnx(booster).SerializeToString(), providers=["CPUExecutionProvider"])
    (probs,) = sess.run(["probabilities"], {"input": _probe(booster)})
    assert probs.shape[1] == 2 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_categorical_split_is_refused() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, size=(2000, F)).astype(np.float32)
    y = (np.isin(x[:, 0], [1, 4, 6]) ^ (rng.random(2000) < 0.1)).astype(np.int32)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
                        lgb.Dataset(x, y, categorical_feature=[0]), num_boost_round=5)
    assert any(n == "==" for n in _decision_types(booster))
    with pytest.raises(ExportError, match="categorical splits are not supported"):
        to_tensor_onnx(booster)


def _decision_types(booster: lgb.Booster) -> list[str]:
    out: list[str] = []

    def walk(node: dict[str, object]) -> None:
        if "decision_type" in node:
            out.append(str(node["decision_type"]))
            walk(node["left_child"])  # type: ignore[arg-type]
            walk(node["right_child"])  # type: ignore[arg-type]

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


def test_too_deep_trees_are_refused() -> None:
    booster = _train({"num_leaves": 31, "max_depth": 6}, rounds=3)
    deepest = tables(booster).stats["tree_depths"]["max"]
    with pytest.raises(ExportError, match=rf"depth {deepest}, deeper than .* bound {deepest - 1}.*max_depth"):
        to_tensor_onnx(booster, max_depth=deepest - 1)
    assert to_tensor_onnx(booster, max_depth=deepest).graph.node


def test_non_binary_objective_is_refused() -> None:
    x, y = _data(500, 0)
    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(x, y.astype(float)), 3)
    with pytest.raises(ExportError, match="binary classification only"):
        to_tensor_onnx(booster)
