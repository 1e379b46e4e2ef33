"""The four ways to score a batch, each a callable ``x -> scores``, built from one bundle.

(a) LightGBM's own ``predict`` on the native model, ``num_threads`` = all cores;
(b) ONNX Runtime, tree graph (``TreeEnsembleClassifier``), CPU provider, all cores;
(c) ONNX Runtime, tensorized graph, CPU provider, all cores;
(d) ONNX Runtime, tensorized graph, CUDA provider with IO binding (the worker's GPU path).

(b)-(d) go through ``workers.score.Scorer``, the worker's own scoring object, so what is timed is
what the worker runs (its IO binding included for (d)).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from schemas.bundle import Bundle
from schemas.errors import ConfigError

F32 = npt.NDArray[np.float32]


@dataclass
class Contender:
    key: str
    label: str
    device: str                                   # "cpu" | "cuda"
    graph: str                                    # "lightgbm" | "tree" | "tensor"
    fn: Callable[[F32], npt.NDArray[np.floating]] | None = None
    skipped: str = ""                             # why it was not measured
    facts: dict[str, object] = field(default_factory=dict)


def build(bundle: Bundle, threads: int | None = None, want_cuda: bool = True,
          gpu_present: bool = True) -> list[Contender]:
    import lightgbm as lgb

    from workers.score import CUDA, Scorer

    threads = threads or os.cpu_count() or 1
    booster = lgb.Booster(model_file=str(Path(bundle.path) / "model.lgb.txt"))

    def lgb_predict(x: F32) -> npt.NDArray[np.floating]:
        return np.asarray(booster.predict(x, num_threads=threads))

    out = [Contender("lightgbm_cpu", "a. LightGBM predict (CPU)", "cpu", "lightgbm", lgb_predict,
                     facts={"threads": threads, "trees": booster.num_trees()})]
    tree = Scorer(bundle.onnx_path, provider="cpu", intra_op_threads=threads, graph="tree")
    out.append(Contender("ort_tree_cpu", "b. ORT tree graph (CPU)", "cpu", "tree", tree.score,
                         facts={"threads": threads, "provider": tree.provider}))
    c = Contender("ort_tensor_cpu", "c. ORT tensorized graph (CPU)", "cpu", "tensor")
    d = Contender("ort_tensor_cuda", "d. ORT tensorized graph (CUDA, IO binding)", "cuda", "tensor")
    if bundle.tensor_onnx_path is None:
        c.skipped = d.skipped = "the bundle has no tensorized graph (train or re-export it with this version)"
        return [*out, c, d]
    tensor = Scorer(bundle.onnx_path, provider="cpu", intra_op_threads=threads,
                    tensor_path=bundle.tensor_onnx_path, graph="tensor")
    c.fn, c.facts = tensor.score, {"threads": threads, "provider": tensor.provider}
    if not want_cuda:
        d.skipped = "not asked for (--no-cuda)"
    elif not gpu_present:
        d.skipped = "no NVIDIA GPU on this machine (no nvidia-smi answer, no /dev/nvidia*)"
    else:
        try:
            gpu = Scorer(bundle.onnx_path, provider="cuda", tensor_path=bundle.tensor_onnx_path, graph="tensor")
        except ConfigError as exc:
            d.skipped = f"the CUDA provider did not load: {str(exc).splitlines()[0]}"
        else:
            d.fn = gpu.score
            d.facts = {"provider": gpu.provider, "io_binding": gpu.describe()["io_binding"],
                       "cpu_fallback_nodes": gpu.cpu_fallback_nodes, "placement_source": gpu.placement_source}
            if gpu.provider != CUDA:
                d.fn, d.skipped = None, f"ONNX Runtime loaded {gpu.provider}, not CUDA"
    return [*out, c, d]
