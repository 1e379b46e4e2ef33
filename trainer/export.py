"""Export the fitted booster to ONNX and prove parity against LightGBM's own predict, or fail.

Two graphs of the same model: ``to_onnx`` (onnxmltools, ``TreeEnsembleClassifier``, zipmap off:
the CPU graph) and ``to_tensor_onnx`` (standard tensor ops only, ``trainer.tensorize``: the GPU
graph). Both are checked by ``check_parity`` on the CPU provider.

The parity rows are the test set plus edge rows: NaN, zeros, negatives, huge values, and values
next to every split threshold (where float32 rounding of thresholds would show).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from schemas.errors import ExportError
from schemas.features import N_FEATURES
from trainer.simulate import History, Labels, history_features
from trainer.tensorize import LIGHTGBM_INF
from trainer.tensorize import describe as describe_tensor
from trainer.tensorize import to_tensor_onnx as tensorize

F32 = npt.NDArray[np.float32]
PARITY_TOLERANCE = 1e-5
TARGET_OPSET = 15
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def trimmed(booster: lgb.Booster, best_iteration: int) -> lgb.Booster:
    """A booster holding only the trees up to ``best_iteration``."""
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best_iteration))


def to_onnx(booster: lgb.Booster) -> onnx.ModelProto:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_lightgbm(booster, initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
                                 zipmap=False, target_opset=TARGET_OPSET)
    if not isinstance(model, onnx.ModelProto):
        raise ExportError(f"onnxmltools returned {type(model).__name__}, not an ONNX model")
    model.doc_string = "fraudstream LightGBM transaction model"
    round_thresholds_down(model, booster)
    return model


def round_thresholds_down(model: onnx.ModelProto, booster: lgb.Booster) -> int:
    """Make every ``x <= t`` split exact for float32 input; returns how many thresholds moved.

    LightGBM compares the (float32-valued) input with a float64 threshold ``t``; the ONNX op
    holds float32 thresholds, and onnxmltools rounds to the *nearest* float32. When that is above
    ``t``, an input equal to it goes left in ONNX and right in LightGBM. The largest float32
    <= ``t`` gives the same decision for every float32 input.
    """
    doubles: dict[tuple[int, np.float32], set[float]] = {}
    for f, ths in split_thresholds(booster).items():
        for t in ths:
            with np.errstate(over="ignore"):  # a NaN-vs-rest split has a threshold beyond float32 (-> inf)
                doubles.setdefault((f, np.float32(t)), set()).add(t)
    moved = 0
    for node in model.graph.node:
        if node.op_type != "TreeEnsembleClassifier":
            continue
        attrs = {a.name: a for a in node.attribute}
        feats, modes = attrs["nodes_featureids"].ints, attrs["nodes_modes"].strings
        values = attrs["nodes_values"].floats
        for i, (f, mode) in enumerate(zip(feats, modes, strict=True)):
            if mode != b"BRANCH_LEQ":
                continue
            v32 = np.float32(values[i])
            originals = doubles.get((int(f), v32))
            if not originals:
                raise ExportError(f"ONNX split on feature {f} at {v32!r} matches no LightGBM threshold")
            # LightGBM reads an input of +inf as 1e300, so a 1e300 threshold (NaN-vs-rest) must stay +inf.
            below = {float(v32) > t and t < LIGHTGBM_INF for t in originals}
            if len(below) > 1:
                raise ExportError(f"thresholds {sorted(originals)} of feature {f} share one float32")
            if below.pop():
                values[i] = float(np.nextafter(v32, np.float32(-np.inf)))
                moved += 1
    return moved


def split_thresholds(booster: lgb.Booster) -> dict[int, list[float]]:
    """Every split threshold per feature, from the model dump."""
    out: dict[int, list[float]] = {}

    def walk(node: dict[str, object]) -> None:
        if "split_feature" in node:
            out.setdefault(int(str(node["split_feature"])), []).append(float(str(node["threshold"])))
            walk(node["left_child"])  # type: ignore[arg-type]
            walk(node["right_child"])  # type: ignore[arg-type]

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


def edge_rows(booster: lgb.Booster, base: F32, rng: np.random.Generator, per_feature: int = 40) -> F32:
    """Rows with NaN, zeros, extremes (+-inf included), and values at and next to split thresholds."""
    rows = [np.full(N_FEATURES, np.nan, np.float32), np.zeros(N_FEATURES, np.float32),
            np.full(N_FEATURES, 1e30, np.float32), np.full(N_FEATURES, -1e30, np.float32),
            np.full(N_FEATURES, np.finfo(np.float32).max, np.float32),
            np.full(N_FEATURES, np.inf, np.float32), np.full(N_FEATURES, -np.inf, np.float32)]
    template = base[rng.integers(0, len(base), size=1)[0]] if len(base) else np.zeros(N_FEATURES, np.float32)
    for f, ths in split_thresholds(booster).items():
        for t in rng.choice(np.asarray(ths), size=min(per_feature, len(ths)), replace=False):
            with np.errstate(over="ignore"):  # thresholds beyond float32 become +-inf
                t32 = np.float32(t)
            for v in (t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))):
                r = template.copy()
                r[f] = v
                rows.append(r)
        for v in (np.nan, np.inf, -np.inf):
            r = template.copy()
            r[f] = v
            rows.append(r)
    return np.vstack(rows).astype(np.float32)


@dataclass(frozen=True)
class Parity:
    rows: int
    max_abs_diff: float
    edge_rows: int


def onnx_scores(model: onnx.ModelProto | Path, x: F32) -> npt.NDArray[np.float32]:
    src = model if isinstance(model, Path) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(src) if isinstance(src, Path) else src, opts, providers=["CPUExecutionProvider"])
    # By name: the tree graph also has a ``label`` output, the tensorized graph only this one.
    (probs,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    return np.asarray(probs, dtype=np.float32)[:, 1]


def offline_scores(h: History, lab: Labels, onnx_path: Path) -> dict[str, float]:
    """The trainer's score of every transaction of ``h`` (features with every label of ``lab``), by tx_id:
    what the worker must publish for each."""
    return dict(zip(h.tx_id.tolist(), onnx_scores(onnx_path, history_features(h, lab)).tolist(), strict=True))


def to_tensor_onnx(booster: lgb.Booster) -> onnx.ModelProto:
    """The second graph of the same model, from standard ONNX ops only (the GPU path; trainer.tensorize)."""
    return tensorize(booster, N_FEATURES)


def check_parity(booster: lgb.Booster, model: onnx.ModelProto, x_test: F32, seed: int = 0,
                 what: str = "ONNX") -> Parity:
    edges = edge_rows(booster, x_test, np.random.default_rng(seed))
    x = np.vstack([x_test, edges]).astype(np.float32)
    expected = booster.predict(x)
    got = onnx_scores(model, x)
    diff = np.abs(got.astype(np.float64) - expected)
    worst = float(np.max(diff)) if len(diff) else 0.0
    if not np.isfinite(worst) or worst > PARITY_TOLERANCE:
        i = int(np.nanargmax(diff))
        raise ExportError(
            f"{what} parity failed: max |onnx - lightgbm| = {worst:.3g} > {PARITY_TOLERANCE} "
            f"(row {i}: onnx {got[i]:.8f}, lightgbm {expected[i]:.8f}); the bundle is not written"
        )
    return Parity(rows=len(x), max_abs_diff=worst, edge_rows=len(edges))


def tensor_manifest(model: onnx.ModelProto, parity: Parity, file: str) -> dict[str, object]:
    """The manifest's ``tensor_onnx`` entry: what the tensorized graph is and how well it agreed."""
    facts = describe_tensor(model)
    return {"file": file, "input": INPUT_NAME, "output": OUTPUT_NAME, "opset": facts["opset"],
            "graph": "tensorized perfect trees (standard ops)", "depth": facts["depth"], "trees": facts["trees"],
            "nodes": facts["nodes"], "ops": facts["ops"], "bytes": facts["bytes"],
            "parity": {"rows": parity.rows, "edge_rows": parity.edge_rows, "max_abs_diff": parity.max_abs_diff}}
