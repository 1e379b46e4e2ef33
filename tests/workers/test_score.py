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
