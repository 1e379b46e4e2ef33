"""The inference benchmark's report: a markdown table (rows/s per batch size and contender) and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ops.bench.stats import markdown_table


def _rate(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    keys = [(c["key"], c["label"]) for c in report["contenders"]]
    rows = []
    for b in report["batches"]:
        row: dict[str, object] = {"batch": f"{b:,}"}
        for key, _ in keys:
            row[key] = _rate(report["rows_per_s"].get(key, {}).get(str(b)))
        tree, tensor = row.get("ort_tree_cpu"), row.get("ort_tensor_cpu")
        row["tensor_vs_tree_cpu"] = (tensor / tree if isinstance(tensor, float) and isinstance(tree, float) and tree
                                     else float("nan"))
        rows.append(row)
    columns = [("batch", "batch", "")] + [(k, f"{label} rows/s", ",.0f") for k, label in keys]
    columns.append(("tensor_vs_tree_cpu", "c ÷ b", ".2f"))
    best_rows = []
    for b in report["batches"]:
        best_row: dict[str, object] = {"batch": f"{b:,}"}
        for key, _ in keys:
            best_row[key] = float(report["timings"].get(key, {}).get(str(b), {}).get("best_rows_per_s", float("nan")))
        best_rows.append(best_row)
    parts = [f"Command: `{m['command']}`",
             f"Machine: {m['cores']} cores, {m['cpu']}; {m['platform']}; GPU: {report['gpu']}; commit {m['commit']}; "
             f"{m['when']}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             f"Model: {report['model']['trees']} trees, padded to depth {report['model']['depth']} in the tensorized "
             f"graph; rows: {report['rows']}; median of {report['repeats']} repeats, each >= "
             f"{report['min_repeat_s']} s of calls; CPU contenders on {report['threads']} threads", "",
             "Median rows/s:", "", markdown_table(rows, columns), "",
             "Best repeat's rows/s (less sensitive to other load on a shared machine):", "",
             markdown_table(best_rows, columns[:-1]), ""]
    for c in report["contenders"]:
        if c["skipped"]:
            parts.append(f"- {c['label']}: not measured: {c['skipped']}")
    for device, x in report["crossover"].items():
        parts.append(f"- crossover on {device}: " + (f"the tensorized graph beats the tree graph from batch {x:,} up"
                                                      if isinstance(x, int) else str(x)))
    parts.append("- max |score - LightGBM| at the largest batch: "
                 + ", ".join(f"{k} {v:.1e}" for k, v in report["parity"].items()))
    return "\n".join(parts)


def write(report: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "inferbench.json").write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    (out / "inferbench.md").write_text(md + "\n")
    return md
