"""ops.inferbench: crossover logic, timing shape, and one tiny end-to-end run (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ops.inferbench import timing
from schemas.bundle import Bundle


def test_crossover_is_the_first_batch_from_which_the_challenger_keeps_winning() -> None:
    batches = [1, 16, 256, 4096]
    base = {1: 100.0, 16: 100.0, 256: 100.0, 4096: 100.0}
    assert timing.crossover({1: 50.0, 16: 150.0, 256: 200.0, 4096: 300.0}, base, batches) == 16
    assert timing.crossover({1: 150.0, 16: 50.0, 256: 200.0, 4096: 300.0}, base, batches) == 256
    assert timing.crossover({1: 50.0, 16: 50.0, 256: 50.0, 4096: 50.0}, base, batches) is None
    assert timing.crossover({1: 150.0, 16: 150.0, 256: 150.0, 4096: 50.0}, base, batches) is None
    assert timing.crossover({}, base, batches) is None


def test_measure_reports_a_median_per_call() -> None:
    calls: list[int] = []
    t = timing.measure(lambda x: calls.append(len(x)), np.zeros((8, 3), np.float32), repeats=3, min_repeat_s=0.001)
    assert t.batch == 8 and t.calls >= 1 and t.seconds_per_call > 0 and t.rows_per_s > 0
    assert len(calls) == 2 + 1 + 3 * t.calls  # warm-up, the sizing call, the repeats


def test_a_tiny_run_writes_json_and_markdown(bundle: Bundle, tmp_path: Path) -> None:
    from ops.inferbench.__main__ import main

    out = tmp_path / "ib"
    assert main(["--bundle", str(bundle.path), "--batches", "1,64", "--repeats", "1", "--quick", "--no-cuda",
                 "--out", str(out)]) == 0
    report = json.loads((out / "inferbench.json").read_text())
    assert set(report["rows_per_s"]) == {"lightgbm_cpu", "ort_tree_cpu", "ort_tensor_cpu"}
    assert all(set(v) == {"1", "64"} for v in report["rows_per_s"].values())
    assert all(d <= 1e-5 for d in report["parity"].values()), report["parity"]
    assert report["crossover"]["cuda"].startswith("not measured")
    md = (out / "inferbench.md").read_text()
    assert "python -m ops.inferbench" in md and "| 64 |" in md and "not measured" in md
