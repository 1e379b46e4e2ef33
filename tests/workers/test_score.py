"""The ONNX Runtime scorer: parity with LightGBM, provider truth, refusal of wrong or broken models."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

from schemas.errors import ConfigError, ScoringError
from schemas.features import N_FEATURES
from trainer.export import edge_rows, to_onnx
from workers.score import CPU, CUDA, Scorer


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.7, size=len(x)) > 1.0).astype(np.int32)
    params = {"objective": "binary", "max_depth": 4, "num_leaves": 15, "verbose": -1, "seed": 7}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=20)


@pytest.fixture(scope="module")
def model_path(booster: lgb.Booster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    onnx.save(to_onnx(booster), str(path))
    return path


@pytest.fixture(scope="module")
def cuda_loads(model_path: Path) -> bool:
    """Whether the CUDA provider really loads on this machine (it does not on a GPU-less host)."""
    try:
        Scorer(model_path, provider="cuda")
    except ConfigError:
        return False
    return True


def _tiny_model(path: Path, shape: list[int | str | None], elem: int = TensorProto.FLOAT) -> Path:
    """A one-node graph (Identity) with the given input shape: enough to be checked at load."""
    x = helper.make_tensor_value_info("input", elem, shape)
    y = helper.make_tensor_value_info("probabilities", elem, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["probabilities"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_scores_match_lightgbm(booster: lgb.Booster, model_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, N_FEATURES)).astype(np.float32)
    x[::17, 3] = np.nan
    x = np.vstack([x, edge_rows(booster, x, rng)]).astype(np.float32)
    scorer = Scorer(model_path, provider="cpu")
    got = scorer.score(x)
    assert got.dtype == np.float32 and got.shape == (len(x),)
    np.testing.assert_allclose(got, booster.predict(x), rtol=0, atol=1e-5)
    assert scorer.score(x[:1]).shape == (1,)


def test_auto_reports_the_provider_that_loaded(model_path: Path, cuda_loads: bool) -> None:
    scorer = Scorer(model_path, provider="auto")
    assert scorer.provider == (CUDA if cuda_loads else CPU)
    assert scorer.provider == scorer.session.get_providers()[0]
    if scorer.provider == CPU:
        assert scorer.cpu_fallback_nodes == []
        assert list(scorer.placement) == [CPU]
        assert any(n.startswith("TreeEnsembleClassifier:") for n in scorer.placement[CPU])


def test_forced_cuda_is_checked_against_what_loaded(booster: lgb.Booster, model_path: Path, cuda_loads: bool) -> None:
    if not cuda_loads:  # this machine: onnxruntime-gpu without a GPU or CUDA libraries
        with pytest.raises(ConfigError) as err:
            Scorer(model_path, provider="cuda")
        msg = str(err.value)
        assert "--provider cuda" in msg and "CUDA 13" in msg and "--provider cpu" in msg
        assert CPU in msg or "no CUDAExecutionProvider" in msg
        return
    scorer = Scorer(model_path, provider="cuda")
    assert scorer.provider == CUDA
    assert any(n.startswith("TreeEnsembleClassifier:") for n in scorer.cpu_fallback_nodes)
    assert scorer.placement[CPU] == scorer.cpu_fallback_nodes
    x = np.random.default_rng(2).normal(size=(64, N_FEATURES)).astype(np.float32)
    np.testing.assert_allclose(scorer.score(x), booster.predict(x), rtol=0, atol=1e-5)


def test_describe_is_loggable(model_path: Path) -> None:
    d = Scorer(model_path, provider="cpu", intra_op_threads=2).describe()
    assert d["provider"] == CPU and d["requested"] == "cpu" and d["intra_op_threads"] == 2
    assert d["input"] == {"name": "input", "shape": ["N", str(N_FEATURES)]}
    assert d["output"] == "probabilities"
    assert d["opsets"]["ai.onnx.ml"] >= 1 and CPU in d["available_providers"]
    json.dumps(d)


def test_unknown_provider_is_refused(model_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown provider 'gpu'"):
        Scorer(model_path, provider="gpu")


def test_wrong_input_width_is_refused(tmp_path: Path) -> None:
    path = _tiny_model(tmp_path / "narrow.onnx", [None, N_FEATURES - 1])
    with pytest.raises(ConfigError) as err:
        Scorer(path, provider="cpu")
    assert f"[N, {N_FEATURES - 1}]" in str(err.value) and f"[N, {N_FEATURES}]" in str(err.value)


def test_fixed_batch_and_double_input_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"\[1, {N_FEATURES}\]"):
        Scorer(_tiny_model(tmp_path / "fixed.onnx", [1, N_FEATURES]), provider="cpu")
    with pytest.raises(ConfigError, match=r"tensor\(double\)"):
        Scorer(_tiny_model(tmp_path / "double.onnx", [None, N_FEATURES], TensorProto.DOUBLE), provider="cpu")


def test_model_without_probability_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no float \\[N, 2\\] probability output"):
        Scorer(_tiny_model(tmp_path / "noprob.onnx", ["N", N_FEATURES]), provider="cpu")


@pytest.mark.parametrize("content", [b"this is not an ONNX model", b"", None], ids=["garbage", "empty", "truncated"])
def test_corrupt_model_is_refused(model_path: Path, tmp_path: Path, content: bytes | None) -> None:
    data = model_path.read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(ConfigError, match=r"bad\.onnx"):
        Scorer(bad, provider="cpu")


def test_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Scorer(tmp_path / "absent.onnx")


def test_malformed_batch_is_not_retriable(model_path: Path) -> None:
    scorer = Scorer(model_path, provider="cpu")
    for x in (np.zeros((3, N_FEATURES), np.float64), np.zeros((3, N_FEATURES + 1), np.float32),
              np.zeros(N_FEATURES, np.float32)):
        with pytest.raises(ScoringError) as err:
            scorer.score(x)  # type: ignore[arg-type]
        assert err.value.retriable is False


def test_runtime_failure_is_a_retriable_scoring_error(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = Scorer(model_path, provider="cpu")

    def fail(*_: object) -> None:
        raise Fail("device lost")

    monkeypatch.setattr(scorer.session, "run", fail)
    with pytest.raises(ScoringError, match="device lost") as err:
        scorer.score(np.zeros((4, N_FEATURES), np.float32))
    assert err.value.retriable is True
    assert isinstance(err.value.__cause__, Fail)


# --- the tensorized graph (issue 8): a second graph of the same model, chosen by ``graph`` ---


@pytest.fixture(scope="module")
def tensor_path(booster: lgb.Booster, model_path: Path) -> Path:
    from trainer.export import to_tensor_onnx

    path = model_path.parent / "model_tensor.onnx"
    onnx.save(to_tensor_onnx(booster), str(path))
    return path


def _rows(booster: lgb.Booster, n: int = 700, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    x[::13, 0] = np.nan
    x[::11, 1] = 0.0
    return np.vstack([x, edge_rows(booster, x, rng)]).astype(np.float32)


def test_tensor_graph_on_cpu_scores_like_the_tree_graph(booster: lgb.Booster, model_path: Path,
                                                          tensor_path: Path) -> None:
    x = _rows(booster)
    tree = Scorer(model_path, provider="cpu", tensor_path=tensor_path, graph="tree")
    tensor = Scorer(model_path, provider="cpu", tensor_path=tensor_path, graph="tensor")
    assert (tree.graph, tensor.graph) == ("tree", "tensor")
    assert tensor.model_path == tensor_path and tree.model_path == model_path
    got = tensor.score(x)
    assert got.dtype == np.float32 and got.shape == (len(x),)
    np.testing.assert_allclose(got, tree.score(x), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, booster.predict(x), rtol=0, atol=1e-5)
    assert tensor.cpu_fallback_nodes == [] and tensor.opsets == {"ai.onnx": 17}
    d = tensor.describe()
    assert d["graph"] == "tensor" and d["graph_requested"] == "tensor" and d["model"].endswith("model_tensor.onnx")
    json.dumps(d)


def test_auto_graph_follows_the_provider_that_loaded(model_path: Path, tensor_path: Path, cuda_loads: bool) -> None:
    on_cpu = Scorer(model_path, provider="cpu", tensor_path=tensor_path, graph="auto")
    assert on_cpu.graph == "tree" and on_cpu.model_path == model_path and on_cpu.io_binding is False
    auto = Scorer(model_path, provider="auto", tensor_path=tensor_path, graph="auto")
    if cuda_loads:  # pragma: no cover - needs a GPU
        assert auto.provider == CUDA and auto.graph == "tensor" and auto.io_binding is True
    else:
        assert auto.provider == CPU and auto.graph == "tree"


def test_tensor_graph_requested_from_a_bundle_without_one_is_refused(model_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Scorer(model_path, provider="cpu", graph="tensor")
    msg = str(err.value)
    assert "--graph tensor" in msg and "model_tensor.onnx" in msg and "python -m trainer export" in msg
    assert "--graph auto" in msg or "--graph tree" in msg
    # auto and tree need no tensor graph
    assert Scorer(model_path, provider="cpu", graph="auto").graph == "tree"


def test_unknown_graph_is_refused(model_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown graph 'gpu'"):
        Scorer(model_path, provider="cpu", graph="gpu")


@pytest.mark.parametrize("graph", ["tree", "tensor"])
def test_io_binding_on_cpu_equals_the_plain_run(booster: lgb.Booster, model_path: Path, tensor_path: Path,
                                                graph: str) -> None:
    x = _rows(booster)
    plain = Scorer(model_path, provider="cpu", tensor_path=tensor_path, graph=graph)
    bound = Scorer(model_path, provider="cpu", tensor_path=tensor_path, graph=graph, io_binding=True)
    assert plain.io_binding is False and bound.io_binding is True
    # Sizes that grow the staging buffer, shrink below it and grow again: a bound output keeps the
    # previous run's shape unless it is re-bound, so a smaller batch after a larger one must work.
    # Each call gets other rows (a fresh permutation), so a staging buffer left stale would show.
    rng = np.random.default_rng(0)
    for n in (len(x), 1, 17, 64, 65, len(x) // 2, len(x), 3):
        rows = x[rng.permutation(len(x))[:n]]
        expected = plain.score(rows)
        np.testing.assert_array_equal(bound.score(rows), expected)
    info = bound.describe()["io_binding"]
    assert info["output_device"] == "cpu" and info["host_buffer"] == "pageable" and info["staging_rows"] >= len(x)


def test_warm_up_scores_a_full_batch_before_the_first_real_one(model_path: Path, tensor_path: Path) -> None:
    scorer = Scorer(model_path, provider="cpu", tensor_path=tensor_path, graph="tensor", io_binding=True)
    scorer.warm_up(300)
    assert scorer.warmup["rows"] == 300 and float(scorer.warmup["seconds"]) >= 0
    assert scorer.describe()["io_binding"]["staging_rows"] >= 300


def test_placement_is_the_sessions_own_record(model_path: Path, tensor_path: Path) -> None:
    for graph in ("tree", "tensor"):
        scorer = Scorer(model_path, provider="cpu", tensor_path=tensor_path, graph=graph)
        assert scorer.placement_source == "session" and list(scorer.placement) == [CPU]
        ops = {name.split(":")[0] for name in scorer.placement[CPU]}
        assert ("TreeEnsembleClassifier" in ops) == (graph == "tree")
        assert graph == "tree" or {"GatherElements", "Sigmoid"} <= ops


def test_tensor_graph_on_cuda_runs_every_node_there(booster: lgb.Booster, model_path: Path, tensor_path: Path,
                                                    cuda_loads: bool) -> None:
    if not cuda_loads:  # this machine: no GPU; the forced provider is refused (see above)
        with pytest.raises(ConfigError, match="--provider cuda"):
            Scorer(model_path, provider="cuda", tensor_path=tensor_path, graph="tensor")
        return
    scorer = Scorer(model_path, provider="cuda", tensor_path=tensor_path, graph="tensor")  # pragma: no cover
    assert scorer.provider == CUDA and scorer.graph == "tensor" and scorer.io_binding is True
    assert scorer.cpu_fallback_nodes == [], scorer.cpu_fallback_nodes
    scorer.warm_up(1000)
    x = _rows(booster)
    np.testing.assert_allclose(scorer.score(x), booster.predict(x), rtol=0, atol=1e-5)
    assert scorer.describe()["io_binding"]["output_device"] == "cuda"
