"""Reason codes (workers/explain.py): TreeSHAP sums to the raw score, agrees with the ONNX graph, top-K
positive contributions, and no work for a batch without flags."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import jsonschema
import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import orjson
import pytest

from schemas.bundle import LGB_FILE, Bundle, load_bundle, seal
from schemas.errors import BundleError, ConfigError
from schemas.features import DAY_MS, FEATURE_NAMES, N_FEATURES
from schemas.messages import FLAG, SCORE
from tests.workers.test_core import D0, TOPICS, ready_through, tx
from trainer.export import to_onnx
from workers.config import parse
from workers.core import Core, CoreConfig
from workers.explain import Explainer, Explanation, ReasonBudget, load_explainer, top_reasons
from workers.state import TxPartition
from workers.terminals import TerminalTable

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
# The reasons' sum with the bias against LightGBM's own raw score: both are double sums of the same leaves.
RAW_TOLERANCE = 1e-6


def logit_tolerance(p: F32) -> F64:
    """How far logit(ONNX probability) may be from the raw score. ORT sums the trees in float32 (1e-5 in
    log-odds covers a few hundred trees) and computes the sigmoid in float32, below 0.5 as 1 - 1 / (1 + e^-x):
    the probability is off by up to a float32 spacing at 1 (2^-23) at any p, and the logit multiplies that
    by its derivative 1 / (p (1 - p)): 2e-4 at p = 0.0006, 6e-7 at p = 0.5."""
    p64 = p.astype(np.float64)
    return 1e-5 + 2.0**-23 / (p64 * (1 - p64))


def logit(p: F32) -> F64:
    p64 = p.astype(np.float64)
    return np.log(p64) - np.log1p(-p64)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    """Deep enough trees (the trainer's depth 8) for TreeSHAP to have real paths to walk."""
    rng = np.random.default_rng(11)
    x = rng.gamma(2.0, 20.0, size=(4000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.8 * x[:, 5] - 0.5 * x[:, 3] + rng.normal(scale=15, size=len(x)) > 60).astype(np.int32)
    params = {"objective": "binary", "max_depth": 8, "num_leaves": 31, "verbose": -1, "seed": 11}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=list(FEATURE_NAMES)), num_boost_round=80)


@pytest.fixture(scope="module")
def rows() -> F32:
    return np.random.default_rng(5).gamma(2.0, 20.0, size=(600, N_FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def bundle_dir(booster: lgb.Booster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bundle")
    onnx.save(to_onnx(booster), str(d / "model.onnx"))
    booster.save_model(str(d / LGB_FILE))
    seal(d, {"model_version": "m1", "threshold": {"value": 0.5}})
    return d


def test_reasons_sum_with_the_bias_to_lightgbms_raw_score(booster: lgb.Booster, rows: F32) -> None:
    ex = Explainer(booster, FEATURE_NAMES, top_k=3).explain(rows)
    raw = booster.predict(rows, raw_score=True)
    assert np.abs(np.array([e.raw_score for e in ex]) - raw).max() <= RAW_TOLERANCE
    # Every feature's contribution (not only the top 3) with the bias is the raw score.
    contrib = booster.predict(rows, pred_contrib=True)
    assert np.abs(contrib.sum(axis=1) - raw).max() <= RAW_TOLERANCE
    assert {e.bias for e in ex} == {float(contrib[0, -1])}  # the expected value: one per model


def test_raw_score_is_the_logit_of_the_onnx_probability(bundle_dir: Path, booster: lgb.Booster, rows: F32) -> None:
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    p = np.asarray(session.run(["probabilities"], {"input": rows})[0], dtype=np.float32)[:, 1]
    assert float(p.min()) < 0.05 and float(p.max()) > 0.95  # both tails, where the logit is steepest
    raw = np.array([e.raw_score for e in Explainer(booster, FEATURE_NAMES, top_k=3).explain(rows)])
    assert np.all(np.abs(logit(p) - raw) <= logit_tolerance(p))


@pytest.mark.parametrize("k", [1, 3, N_FEATURES])
def test_the_reasons_are_the_largest_positive_contributions(booster: lgb.Booster, rows: F32, k: int) -> None:
    contrib = booster.predict(rows, pred_contrib=True)
    ex = Explainer(booster, FEATURE_NAMES, top_k=k).explain(rows)
    fewer = 0
    for i, e in enumerate(ex):
        expected = sorted(((c, j) for j, c in enumerate(contrib[i, :-1]) if c > 0), key=lambda t: -t[0])[:k]
        assert [(r.feature, r.contribution) for r in e.reasons] == [(FEATURE_NAMES[j], c) for c, j in expected]
        assert [r.value for r in e.reasons] == [float(rows[i, FEATURE_NAMES.index(r.feature)]) for r in e.reasons]
        fewer += len(e.reasons) < k
    if k == N_FEATURES:
        assert fewer == len(rows)  # some contribution is negative in every row: only the positive ones


def test_ties_go_to_the_earlier_feature_and_no_positive_contribution_gives_no_reason() -> None:
    contrib = np.array([[0.0, 0.5, 0.5, -1.0, 0.2], [-0.1, 0.0, -0.3, 0.0, -2.0]])
    vals = np.arange(8, dtype=np.float32).reshape(2, 4)
    a, b = top_reasons(contrib, vals, ["f0", "f1", "f2", "f3"], k=2)
    assert [(r.feature, r.value, r.contribution) for r in a.reasons] == [("f1", 1.0, 0.5), ("f2", 2.0, 0.5)]
    assert (a.raw_score, a.bias) == (0.2, 0.2) and b.reasons == [] and b.raw_score == pytest.approx(-2.4)


def test_zero_reasons_means_no_explainer(bundle_dir: Path) -> None:
    assert load_explainer(load_bundle(bundle_dir), 0) is None
    assert parse(["--reasons", "0"]).reasons == 0 and parse([]).reasons == 3
    assert parse([]).reasons_share == 0.1 and parse(["--reasons-share", "1"]).reasons_share == 1.0
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError):
            parse(["--reasons-share", bad])
    with pytest.raises(ValueError, match="top_k"):
        Explainer(lgb.Booster(model_file=str(bundle_dir / LGB_FILE)), FEATURE_NAMES, 0)


def test_the_bundle_explainer_is_its_native_model(bundle_dir: Path, booster: lgb.Booster, rows: F32) -> None:
    ex = load_explainer(load_bundle(bundle_dir), 2)
    assert ex is not None and ex.top_k == 2
    assert ex.explain(rows[:5]) == Explainer(booster, FEATURE_NAMES, 2).explain(rows[:5])


def test_a_bundle_without_its_native_model_is_refused_with_reasons_on(bundle_dir: Path, tmp_path: Path) -> None:
    manifest = load_bundle(bundle_dir).manifest
    files = {k: v for k, v in manifest["files"].items() if k != LGB_FILE}
    with pytest.raises(BundleError, match="--reasons 0"):
        load_explainer(Bundle(bundle_dir, {**manifest, "files": files}), 3)


def test_lightgbm_that_does_not_load_is_a_one_line_config_error(bundle_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def without_openmp(name: str, *args: Any, **kw: Any) -> Any:
        if name == "lightgbm":
            raise OSError("libgomp.so.1: cannot open shared object file: No such file or directory")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", without_openmp)
    with pytest.raises(ConfigError, match=r"libgomp1.*--reasons 0"):
        load_explainer(load_bundle(bundle_dir), 3)


class Spy:
    """An explainer double: records the rows it was asked about."""

    def __init__(self, inner: Explainer | None = None, fail: bool = False, budget: ReasonBudget | None = None) -> None:
        self.inner, self.fail, self.calls = inner, fail, []  # type: list[F32]
        self.budget = budget or ReasonBudget(1.0)

    def explain(self, rows: F32) -> list[Explanation]:
        self.calls.append(rows.copy())
        if self.fail:
            raise RuntimeError("boom")
        assert self.inner is not None
        return self.inner.explain(rows)


def decided_core(explainer: object) -> tuple[Core, object]:
    table = TerminalTable(tx_partitions=1, label_partitions=1)
    core = Core(CoreConfig(lateness_ms=60_000, max_future_ms=3_600_000, terminal_wait_s=60.0, threshold=0.5,
                           model_version="m1", worker_id="w1", topics=TOPICS), table, explainer)  # type: ignore[arg-type]
    core.install(0, TxPartition(0, 60_000))
    core.states[0].next_offset = 0
    ready_through(table, D0 // DAY_MS)
    core.admit([tx(0, i, D0 + i, f"t{i}", cents=1000 * (i + 1)) for i in range(4)], now=0.0)
    d = core.decide(now=0.0)
    assert d is not None and len(d.ready) == 4
    return core, d


def test_a_batch_without_flags_explains_nothing(booster: lgb.Booster) -> None:
    spy = Spy(Explainer(booster, FEATURE_NAMES, 3))
    core, d = decided_core(spy)
    out = core.outputs(d, np.array([0.1, 0.2, 0.3, 0.4], np.float32), scored_at=1)  # type: ignore[arg-type]
    assert spy.calls == [] and out.flagged == 0


def test_flags_carry_the_explanation_of_their_own_rows_and_scores_do_not(booster: lgb.Booster) -> None:
    inner = Explainer(booster, FEATURE_NAMES, 3)
    spy = Spy(inner)
    core, d = decided_core(spy)
    out = core.outputs(d, np.array([0.9, 0.2, 0.6, 0.4], np.float32), scored_at=1)  # type: ignore[arg-type]
    assert len(spy.calls) == 1
    np.testing.assert_array_equal(spy.calls[0], d.rows[[0, 2]])  # type: ignore[attr-defined]
    flags = [orjson.loads(v or b"") for t, _, v, _ in out.records if t == TOPICS.flags]
    scores = [orjson.loads(v or b"") for t, _, v, _ in out.records if t == TOPICS.scores]
    assert [f["tx_id"] for f in flags] == ["t0", "t2"] and len(scores) == 4
    want = inner.explain(d.rows[[0, 2]])  # type: ignore[attr-defined]
    for f, e in zip(flags, want, strict=True):
        jsonschema.validate(f, FLAG)
        assert f["explanation"] == orjson.loads(orjson.dumps({"raw_score": e.raw_score, "bias": e.bias, "reasons": [
            {"feature": r.feature, "value": r.value, "contribution": r.contribution} for r in e.reasons]}))
        assert 1 <= len(f["explanation"]["reasons"]) <= 3
    for s in scores:
        jsonschema.validate(s, SCORE)  # no explanation on the scores topic
    for f in flags:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(f, SCORE)


def test_without_an_explainer_or_when_it_fails_flags_are_the_score_messages(booster: lgb.Booster) -> None:
    for explainer in (None, Spy(fail=True)):
        core, d = decided_core(explainer)
        out = core.outputs(d, np.array([0.9, 0.2, 0.6, 0.4], np.float32), scored_at=1)  # type: ignore[arg-type]
        by_topic: dict[str, list[bytes]] = {}
        for t, _, v, _ in out.records:
            by_topic.setdefault(t, []).append(v or b"")
        assert by_topic[TOPICS.flags] == [by_topic[TOPICS.scores][0], by_topic[TOPICS.scores][2]]
        assert out.unexplained == (0 if explainer is None else 2), "a failure is counted"
        for v in by_topic[TOPICS.flags]:
            jsonschema.validate(orjson.loads(v), FLAG)  # the schema allows a flag without explanation


def test_the_budget_explains_up_to_its_share_of_the_rows_and_keeps_a_bounded_credit() -> None:
    b = ReasonBudget(0.1, burst=2)
    assert b.take(scored=10, flags=5) == 3  # the initial credit (the burst) and the batch's share
    assert b.take(scored=10, flags=5) == 1  # a flood: one a batch of 10, the share
    assert b.take(scored=10, flags=0) == 0
    assert b.take(scored=1000, flags=0) == 0 and b.take(scored=0, flags=500) == 2, \
        "a quiet spell buys no more than the burst"
    assert b.take(scored=10, flags=1) == 1, "normal traffic (flags under the share) is explained in full"
    every = ReasonBudget(1.0, burst=2)
    assert [every.take(scored=500, flags=f) for f in (500, 300, 500)] == [500, 300, 500], "share 1: every flag"
    with pytest.raises(ValueError, match="share"):
        ReasonBudget(0.0)


def test_over_the_budget_the_highest_scored_flags_are_explained_and_the_rest_counted(booster: lgb.Booster) -> None:
    inner = Explainer(booster, FEATURE_NAMES, 3)
    spy = Spy(inner, budget=ReasonBudget(0.25, burst=0))  # this batch earns 4 x 0.25: one explanation
    core, d = decided_core(spy)
    out = core.outputs(d, np.array([0.9, 0.2, 0.6, 0.95], np.float32), scored_at=1)  # type: ignore[arg-type]
    assert len(spy.calls) == 1
    np.testing.assert_array_equal(spy.calls[0], d.rows[[3]])  # type: ignore[attr-defined]
    flags = [orjson.loads(v or b"") for t, _, v, _ in out.records if t == TOPICS.flags]
    assert [(f["tx_id"], "explanation" in f) for f in flags] == [("t0", False), ("t2", False), ("t3", True)]
    assert out.flagged == 3 and out.unexplained == 2
