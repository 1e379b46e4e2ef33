"""A candidate model passes the start-up checks plus the parity of its two graphs, or is refused saying why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from schemas.bundle import MANIFEST, TENSOR_ONNX_FILE, Bundle, load_bundle, seal
from schemas.errors import BundleError
from workers.config import parse
from workers.model import PARITY, build, check_parity, parity_rows


def _with_leaves_scaled(bundle: Bundle, tmp_path: Path, factor: float) -> Bundle:
    """A copy whose tensor graph's leaf values are scaled (its tree graph untouched), re-sealed: the checksums
    pass, only the parity check can tell."""
    out = tmp_path / "altered"
    shutil.copytree(bundle.path, out)
    graph = onnx.load(str(out / TENSOR_ONNX_FILE))
    for init in graph.graph.initializer:
        if init.name == "leaves":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), "leaves"))
    onnx.save(graph, str(out / TENSOR_ONNX_FILE))
    seal(out, json.loads((out / MANIFEST).read_text()))
    return load_bundle(out)


def test_the_two_graphs_of_a_bundle_agree(bundle: Bundle) -> None:
    assert 0.0 <= check_parity(bundle) <= PARITY
    rows = parity_rows(bundle)
    assert rows.dtype == np.float32 and rows.shape[0] == 256 and len(np.unique(rows[:, 0])) > 5


def test_graphs_that_disagree_are_refused_and_a_good_model_builds(bundle: Bundle, tmp_path: Path) -> None:
    altered = _with_leaves_scaled(bundle, tmp_path, 1.5)
    with pytest.raises(BundleError, match="tree and tensor graphs disagree"):
        check_parity(altered)
    s = parse(["--bundle", str(bundle.path), "--reasons", "0", "--batch-size", "64"])
    with pytest.raises(BundleError, match="disagree"):
        build(s, altered)
    model = build(s, bundle)
    assert model.version == bundle.model_version and model.explainer is None and model.batch_size == 64
    scores = model.scorer.score(parity_rows(bundle)[:8])
    assert scores.shape == (8,) and np.all((scores >= 0) & (scores <= 1))
