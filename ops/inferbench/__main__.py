"""``python -m ops.inferbench``: rows/s of each inference path per batch size (see the package docstring).

The rows are real feature rows (a small simulated history through the offline feature code),
tiled to the largest batch. Writes ``inferbench.json`` and ``inferbench.md`` under ``--out`` and
prints the table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.settings import add, positive_int

BATCHES = (1, 16, 256, 1024, 4096, 16384, 65536)
QUICK = {"repeats": 3, "min_repeat_s": 0.05}
FULL = {"repeats": 7, "min_repeat_s": 0.25}


def batch_list(value: str) -> list[int]:
    out = sorted({positive_int(v.strip()) for v in value.split(",") if v.strip()})
    if not out:
        raise ValueError("expected a comma list of positive batch sizes")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.inferbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", Path("bundles/latest"), "model bundle (needs model_tensor.onnx)", Path)
    add(p, "--batches", "FRAUDSTREAM_INFERBENCH_BATCHES", ",".join(map(str, BATCHES)), "comma list of batch sizes",
        batch_list)
    add(p, "--repeats", "FRAUDSTREAM_INFERBENCH_REPEATS", None, "timed repeats per point, median reported "
        f"(default {FULL['repeats']}, --quick {QUICK['repeats']})", positive_int)
    add(p, "--threads", "FRAUDSTREAM_INFERBENCH_THREADS", os.cpu_count() or 1,
        "threads of every CPU contender (LightGBM num_threads, ORT intra-op)", positive_int)
    add(p, "--out", "FRAUDSTREAM_INFERBENCH_OUT", Path("reports/inferbench"), "where the report goes", Path)
    add(p, "--seed", "FRAUDSTREAM_INFERBENCH_SEED", 0, "simulator seed of the feature rows", int)
    p.add_argument("--quick", action="store_true", help="fewer, shorter repeats (about a minute on 2 cores)")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA contender even when a GPU is present")
    return p


def feature_rows(n: int, seed: int) -> npt.NDArray[np.float32]:
    """``n`` float32 feature rows of a simulated history (tiled when the history is shorter)."""
    from trainer.simulate import SimConfig, history_features, labels_of, simulate

    h = simulate(SimConfig(customers=400, terminals=800, days=60, seed=seed))
    lab = labels_of(h)  # the simulator's report delays, as the trainer's
    x = history_features(h, lab)
    x = x[np.random.default_rng(seed).permutation(len(x))]
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:n], dtype=np.float32)


def gpu_name() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "none found (no nvidia-smi)"
    return done.stdout.strip().replace("\n", "; ") or "none found"


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    mode = QUICK if a.quick else FULL
    repeats = a.repeats or int(mode["repeats"])
    min_repeat_s = float(mode["min_repeat_s"])
    from ops.bench.machine import describe
    from ops.inferbench import contenders, report, timing
    from schemas.bundle import load_bundle
    from schemas.errors import FraudstreamError

    gpu = gpu_name()
    gpu_present = not gpu.startswith("none") or any(Path("/dev").glob("nvidia[0-9]*"))
    try:
        bundle = load_bundle(a.bundle, key=(os.environ.get("FRAUDSTREAM_BUNDLE_KEY") or "").encode() or None)
        cs = contenders.build(bundle, a.threads, want_cuda=not a.no_cuda, gpu_present=gpu_present)
    except FraudstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    x_all = feature_rows(max(a.batches), a.seed)
    rates: dict[str, dict[str, float]] = {}
    timings: dict[str, dict[str, dict[str, float]]] = {}
    for c in cs:
        if c.fn is None:
            print(f"{c.label}: skipped: {c.skipped}", flush=True)
    fns = {c.key: c.fn for c in cs if c.fn is not None}
    labels = {c.key: c.label for c in cs}
    for b in a.batches:
        for key, t in timing.measure_interleaved(fns, x_all[:b], repeats, min_repeat_s).items():
            rates.setdefault(key, {})[str(b)] = t.rows_per_s
            timings.setdefault(key, {})[str(b)] = {"seconds_per_call": t.seconds_per_call, "calls": t.calls,
                                                    "spread": t.spread, "best_seconds_per_call": t.best,
                                                    "best_rows_per_s": b / t.best}
            print(f"{labels[key]:<45} batch {b:>6}: {t.rows_per_s:>14,.0f} rows/s "
                  f"({t.seconds_per_call * 1e3:.3f} ms/call, spread {t.spread:.0%}, best {b / t.best:,.0f} rows/s)",
                  flush=True)
    expected = np.asarray(cs[0].fn(x_all), dtype=np.float64) if cs[0].fn is not None else None
    parity = {c.key: float(np.max(np.abs(np.asarray(c.fn(x_all), np.float64) - expected)))
              for c in cs[1:] if c.fn is not None and expected is not None}

    def per_batch(key: str) -> dict[int, float]:
        return {int(b): v for b, v in rates.get(key, {}).items()}

    cross: dict[str, Any] = {}
    for device, key in (("cpu", "ort_tensor_cpu"), ("cuda", "ort_tensor_cuda")):
        skipped = next(c.skipped for c in cs if c.key == key)
        if skipped:
            cross[device] = f"not measured ({skipped})"
            continue
        found = timing.crossover(per_batch(key), per_batch("ort_tree_cpu"), a.batches)
        cross[device] = found if found is not None else (
            f"none: the tree graph on the CPU is faster at every batch up to {max(a.batches):,}")
    facts = next((c.facts for c in cs if c.key == "lightgbm_cpu"), {})
    import onnx

    from trainer.tensorize import describe as tensor_facts

    tf = tensor_facts(onnx.load(str(bundle.tensor_onnx_path))) if bundle.tensor_onnx_path else {}
    machine = {**describe(), "command": " ".join(["python -m ops.inferbench", *(argv if argv is not None
                                                                                 else sys.argv[1:])])}
    out: dict[str, Any] = {
        "machine": machine, "gpu": gpu, "bundle": str(bundle.path), "model_version": bundle.model_version,
        "model": {"trees": facts.get("trees"), "depth": tf.get("depth"), "tensor_graph_bytes": tf.get("bytes"),
                  "tree_graph_bytes": bundle.onnx_path.stat().st_size},
        "rows": "simulated history's feature rows (400 customers, 60 days), tiled", "batches": a.batches,
        "repeats": repeats, "min_repeat_s": min_repeat_s, "threads": a.threads, "quick": a.quick,
        "contenders": [{"key": c.key, "label": c.label, "device": c.device, "graph": c.graph, "skipped": c.skipped,
                        "facts": c.facts} for c in cs],
        "rows_per_s": rates, "timings": timings, "crossover": cross, "parity": parity,
    }
    print()
    print(report.write(out, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
