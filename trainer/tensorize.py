"""The LightGBM model as a graph of standard ONNX tensor ops: the GPU path (issue 8).

ONNX Runtime's CUDA and TensorRT providers have no kernels for ``TreeEnsembleClassifier``
(``ai.onnx.ml``): with them, the tree graph runs on the CPU with copies around it. This module
emits a second graph of the same model from default-domain ops only, every one of which has a
CUDA kernel for the types used here (ORT ``docs/OperatorKernels.md``, ``CUDA_OPS`` below).

Scheme: every tree is padded to a *perfect* tree of depth ``D`` (the model's largest depth,
bounded by ``max_depth``). A leaf at depth ``d < D`` becomes a chain of padding nodes that always
go left (threshold +inf, NaN goes left) with the leaf value replicated under it. Node tables are
stored per level and stacked over trees: level ``l`` holds ``T * 2**l`` nodes, tree ``t``'s node
at position ``p`` of the level sits at ``q = t * 2**l + p``, so that the next level's index is
``2q + right`` for every tree at once. One pass per level over a batch ``[N, F]``:

    c  = Gather(code_l, q)                 [N, T]  4 * feature + 2 * zero_missing + default_right
    v  = GatherElements(x, c / 4, axis=1)  [N, T]  the row's value of the node's feature
    missing = IsNaN(v) [or v == 0 and zero_missing]   (the Zero test only if the model has such nodes)
    right = missing ? c % 2 : v > Gather(threshold_l, q)
    q  = 2q + right

then ``Gather(leaves, q)``, ``ReduceSum`` over trees, ``Sigmoid``, and ``[1 - p, p]``.

LightGBM's semantics, reproduced exactly for float32 input (``Tree::NumericalDecision`` and the
dense-row reader of its predictor):

- a value with ``|x| <= kZeroThreshold`` (1e-35f) is read as 0.0 (the predictor skips it);
- missing type ``None``: NaN is read as 0.0, then compared: a NaN goes where 0.0 goes, i.e.
  left iff ``0 <= threshold`` (folded into ``default_right`` at export);
- missing type ``Zero``: NaN and 0.0 go the default direction;
- missing type ``NaN``: NaN goes the default direction;
- otherwise ``x <= threshold`` goes left. Thresholds are rounded *down* to float32 (the largest
  float32 ``<= t``), which keeps the decision of every float32 input equal to LightGBM's double
  comparison (see ``trainer.export.round_thresholds_down``); +-inf inputs are read by LightGBM
  as +-1e300, so a threshold of 1e300 (NaN-vs-rest splits) becomes +inf.

Leaves are summed in float32 (ORT's tree op does the same); ``boost_from_average``'s initial
score is already inside the first tree's leaves, so there is no separate bias. Categorical
splits, linear trees, non-binary objectives and trees deeper than ``max_depth`` are refused with
``ExportError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from schemas.errors import ExportError

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
GRAPH_KIND = "tensor"           # model metadata "fraudstream.graph"; the onnxmltools graph is "tree"
MAX_DEPTH = 10                  # the trainer bounds depth at 8 (trainer/fit.py); 2**10 leaves per tree
K_ZERO_THRESHOLD = np.float32(1e-35)  # LightGBM's kZeroThreshold (a float literal, 1e-35f)
# The default-domain ops the graph may use, each with a CUDA kernel for the types it gets here
# (ORT docs/OperatorKernels.md, CUDA section): indices int32, values float32, flags bool.
CUDA_OPS = frozenset({"Abs", "LessOrEqual", "Where", "Gather", "GatherElements", "IsNaN", "Equal", "Or", "And",
                      "Greater", "Cast", "Div", "Mod", "Mul", "Add", "Sub", "ReduceSum", "Sigmoid", "Concat"})

I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]


LIGHTGBM_INF = 1e300  # LightGBM reads +-inf inputs as +-1e300 and writes 1e300 as the threshold of NaN-vs-rest


def float32_at_or_below(t: float) -> np.float32:
    """The float32 threshold that decides every float32 ``x`` as LightGBM's ``x <= t`` does.

    The largest float32 ``<= t``; except that ``t >= 1e300`` becomes +inf, because LightGBM
    reads an input of +inf as 1e300 (which is ``<= t`` there). A threshold below -1e300 is
    never written by LightGBM (its training values are clamped to +-1e300) and is not handled.
    """
    if t >= LIGHTGBM_INF:
        return np.float32(np.inf)
    with np.errstate(over="ignore"):
        t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return np.float32(t32)


@dataclass
class Level:
    """The stacked node table of one tree level: ``T * 2**l`` nodes.

    ``code`` packs what a node needs besides its threshold into one int32, so that a level costs
    two gathers (code, threshold) instead of four: ``code = 4 * feature + 2 * zero_missing +
    default_right``, where ``zero_missing`` marks LightGBM's missing type Zero (0.0 goes the
    default way) and ``default_right`` says where a missing value goes.
    """

    code: I32
    threshold: F32

    @staticmethod
    def padding(size: int) -> Level:
        """Nodes that send everything left: feature 0, threshold +inf, NaN goes left."""
        return Level(np.zeros(size, np.int32), np.full(size, np.inf, np.float32))


@dataclass
class Tables:
    """Every tree padded to a perfect tree of ``depth`` levels, stacked over ``n_trees``."""

    depth: int
    n_trees: int
    n_features: int
    levels: list[Level]
    leaves: F32                       # [T * 2**depth]
    scale: float                      # raw score multiplier: sigmoid parameter (/ T for average_output)
    zero_missing: bool                # any node of missing type Zero (else the graph skips that test)
    stats: dict[str, Any] = field(default_factory=dict)


def _depth(node: dict[str, Any]) -> int:
    if "split_feature" not in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


def _refuse_categorical(tree: int, node: dict[str, Any]) -> None:
    if "split_feature" not in node:
        return
    if node.get("decision_type") != "<=":
        raise ExportError(f"tree {tree} has a {node.get('decision_type')!r} split on feature "
                          f"{node.get('split_feature')}: categorical splits are not supported by the "
                          f"tensorized graph (train without categorical features)")
    _refuse_categorical(tree, node["left_child"])
    _refuse_categorical(tree, node["right_child"])


def _sigmoid_of(objective: str) -> float:
    parts = objective.split()
    if not parts or parts[0] not in ("binary", "cross_entropy", "xentropy"):
        raise ExportError(f"the tensorized graph handles binary classification only, not objective {objective!r}")
    for p in parts[1:]:
        if p.startswith("sigmoid:"):
            return float(p.split(":", 1)[1])
    return 1.0


def tables(booster: lgb.Booster, max_depth: int = MAX_DEPTH) -> Tables:
    """Read ``booster.dump_model()`` into padded, stacked per-level node tables."""
    dump = booster.dump_model()
    if int(dump.get("num_class", 1)) != 1 or int(dump.get("num_tree_per_iteration", 1)) != 1:
        raise ExportError("the tensorized graph handles one tree per iteration (binary) models only")
    sigmoid = _sigmoid_of(str(dump.get("objective", "")))
    trees = [t["tree_structure"] for t in dump["tree_info"]]
    if not trees:
        raise ExportError("the model has no trees")
    for i, tree in enumerate(trees):
        _refuse_categorical(i, tree)
    depths = [_depth(t) for t in trees]
    deepest = max(depths)
    if deepest > max_depth:
        i = depths.index(deepest)
        raise ExportError(f"tree {i} has depth {deepest}, deeper than the tensorized graph's bound {max_depth} "
                          f"(it pads every tree to 2**depth leaves): train with max_depth <= {max_depth}")
    depth = max(1, deepest)
    n = len(trees)
    levels = [Level.padding(n << level) for level in range(depth)]
    leaves = np.zeros(n << depth, np.float32)
    counts = {"None": 0, "Zero": 0, "NaN": 0, "padding_nodes": 0}

    def fill(tree: int, node: dict[str, Any], level: int, pos: int) -> None:
        if "split_feature" not in node:
            if "leaf_coeff" in node or "leaf_features" in node:
                raise ExportError(f"tree {tree} is a linear tree: the tensorized graph handles constant leaves only")
            span = 1 << (depth - level)
            start = ((tree << level) + pos) * span
            leaves[start:start + span] = np.float32(float(node["leaf_value"]))
            counts["padding_nodes"] += span - 1
            return
        missing = str(node.get("missing_type", "None"))
        if missing not in ("None", "Zero", "NaN"):
            raise ExportError(f"tree {tree}: unknown missing_type {missing!r}")
        counts[missing] += 1
        t = float(node["threshold"])
        q = (tree << level) + pos
        lv = levels[level]
        # Missing type None: NaN is read as 0.0 and compared, so it goes where 0.0 goes.
        right = t < 0.0 if missing == "None" else not bool(node.get("default_left", True))
        lv.code[q] = 4 * int(node["split_feature"]) + 2 * (missing == "Zero") + int(right)
        lv.threshold[q] = float32_at_or_below(t)
        fill(tree, node["left_child"], level + 1, 2 * pos)
        fill(tree, node["right_child"], level + 1, 2 * pos + 1)

    for i, tree in enumerate(trees):
        fill(i, tree, 0, 0)
    n_features = int(dump.get("max_feature_idx", booster.num_feature() - 1)) + 1
    scale = sigmoid / n if dump.get("average_output") else sigmoid
    stats = {"trees": n, "depth": depth, "tree_depths": {"max": deepest, "min": min(depths)},
             "splits_by_missing_type": {k: counts[k] for k in ("None", "Zero", "NaN")},
             "padded_leaves": int(leaves.size)}
    return Tables(depth, n, n_features, levels, leaves, scale, counts["Zero"] > 0, stats)


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=f"{name}_{op_type}".lower(), **attrs))
        return name


def to_tensor_onnx(booster: lgb.Booster, n_features: int | None = None, max_depth: int = MAX_DEPTH) -> onnx.ModelProto:
    """The tensorized graph: input ``input`` float [N, F], output ``probabilities`` float [N, 2]."""
    tb = tables(booster, max_depth)
    width = n_features if n_features is not None else tb.n_features
    if width < tb.n_features:
        raise ExportError(f"the model uses {tb.n_features} features, the graph input has {width}")
    b = _Builder()
    # LightGBM's predictor reads |x| <= kZeroThreshold as 0.0 (NaN stays NaN).
    tiny = b.op("LessOrEqual", [b.op("Abs", [INPUT_NAME], "x_abs"), b.const("k_zero", np.array(K_ZERO_THRESHOLD))],
                "x_tiny")
    x = b.op("Where", [tiny, b.const("f_zero", np.array(0.0, np.float32)), INPUT_NAME], "x")
    two, four = b.const("two", np.array(2, np.int32)), b.const("four", np.array(4, np.int32))
    q = zero_missing = ""
    for level, lv in enumerate(tb.levels):
        p = f"l{level}_"
        if level == 0:  # one node per tree: its fields are constants, broadcast over rows
            v = b.op("Gather", [x, b.const(p + "feature", lv.code // 4)], p + "v", axis=1)
            thr = b.const(p + "threshold", lv.threshold)
            dright = b.const(p + "default_right", lv.code % 2)
            if tb.zero_missing:
                zero_missing = b.const(p + "zero_missing", (lv.code % 4) >= 2)
            base = b.const(p + "base", np.arange(tb.n_trees, dtype=np.int32) * 2)
        else:
            code = b.op("Gather", [b.const(p + "codes", lv.code), q], p + "code")
            v = b.op("GatherElements", [x, b.op("Div", [code, four], p + "f")], p + "v", axis=1)
            thr = b.op("Gather", [b.const(p + "thresholds", lv.threshold), q], p + "t")
            dright = b.op("Mod", [code, two], p + "dr")
            if tb.zero_missing:
                kind = b.op("Mod", [code, four], p + "kind")
                zero_missing = b.op("Greater", [kind, b.const(p + "one", np.array(1, np.int32))], p + "zm")
            base = b.op("Mul", [q, two], p + "q2")
        missing = b.op("IsNaN", [v], p + "nan")
        if tb.zero_missing:  # missing type Zero: 0.0 (|x| <= 1e-35 was zeroed above) goes the default way
            is_zero = b.op("Equal", [v, b.const(p + "fzero", np.array(0.0, np.float32))], p + "is0")
            missing = b.op("Or", [missing, b.op("And", [is_zero, zero_missing], p + "zero_default")], p + "missing")
        greater = b.op("Cast", [b.op("Greater", [v, thr], p + "gt")], p + "right_cmp", to=TensorProto.INT32)
        right = b.op("Where", [missing, dright, greater], p + "right")
        q = b.op("Add", [base, right], f"l{level + 1}_q")
    leaf = b.op("Gather", [b.const("leaves", tb.leaves), q], "leaf")
    raw = b.op("ReduceSum", [leaf, b.const("axes", np.array([1], np.int64))], "raw", keepdims=1)
    if tb.scale != 1.0:
        raw = b.op("Mul", [raw, b.const("scale", np.array(tb.scale, np.float32))], "raw_scaled")
    prob = b.op("Sigmoid", [raw], "p1")
    p0 = b.op("Sub", [b.const("one", np.array(1.0, np.float32)), prob], "p0")
    out = b.op("Concat", [p0, prob], OUTPUT_NAME, axis=1)
    assert out == OUTPUT_NAME
    graph = helper.make_graph(
        b.nodes, "fraudstream_lightgbm_tensorized",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 2])], initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fraudstream")
    model.ir_version = IR_VERSION
    model.doc_string = ("fraudstream LightGBM transaction model, tensorized: padded perfect trees traversed level by "
                        "level with standard ONNX ops (runs on ORT's CUDA provider)")
    helper.set_model_props(model, {"fraudstream.graph": GRAPH_KIND, "fraudstream.depth": str(tb.depth),
                                   "fraudstream.trees": str(tb.n_trees)})
    onnx.checker.check_model(model)
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node if n.domain or n.op_type not in CUDA_OPS})
    if foreign:
        raise ExportError(f"internal error: the tensorized graph uses ops outside its CUDA set: {foreign}")
    return model


def describe(model: onnx.ModelProto) -> dict[str, Any]:
    """Size facts of a tensorized graph (for logs and the manifest)."""
    props = {p.key: p.value for p in model.metadata_props}
    return {"graph": props.get("fraudstream.graph"), "depth": int(props.get("fraudstream.depth", 0)),
            "trees": int(props.get("fraudstream.trees", 0)), "nodes": len(model.graph.node),
            "ops": sorted({n.op_type for n in model.graph.node}), "bytes": model.ByteSize(), "opset": OPSET}
