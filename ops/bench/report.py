"""Write a benchmark report: JSON, a markdown table, PNG plots; print the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ops.bench import plots
from ops.bench.stats import markdown_table, throughput_rows

THROUGHPUT_COLUMNS = [("what", "measurement", ""), ("tx_per_s", "tx/s", ",.0f"), ("vs_a", "÷ a (ceiling)", ".2f"),
                      ("vs_b", "÷ b (naive)", ".1f")]
LATENCY_COLUMNS = [("load", "offered load", ".0%"), ("offered_tx_per_s", "offered tx/s", ",.0f"),
                   ("achieved_tx_per_s", "sent tx/s", ",.0f"), ("n", "n", ""), ("p50", "p50 ms", ".0f"),
                   ("p95", "p95 ms", ".0f"), ("p99", "p99 ms", ".0f"), ("max", "max ms", ".0f")]
STAGE_COLUMNS = [("load", "offered load", ".0%"), ("to_worker", "to worker", ""), ("in_worker", "in worker", ""),
                 ("publish", "publish", "")]
CPU_COLUMNS = [("what", "workers", ""), ("cpu_us_per_tx", "CPU µs per tx (drain)", ".1f"),
               ("idle_cpu", "idle CPU per worker (% of a core)", ".1%")]
SWEEP_COLUMNS = [("batch_size", "batch size", ""), ("max_wait_ms", "max wait ms", "g"), ("tx_per_s", "tx/s", ",.0f")]


def stage_row(load: dict[str, Any]) -> dict[str, Any]:
    st = load["stages"]
    return {"load": load["load"], **{k: f"{st[k]['p50']:.0f} / {st[k]['p99']:.0f}" for k in st}}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    d = report.get("drains", {})
    rate = {k: float(v["tx_per_s"]) for k, v in d.items()}
    parts = [f"Command: `{m['command']}` ({'quick' if report['quick'] else 'full'}, N = {report['n']:,} transactions)",
             f"Machine: {m['cores']} cores, {m['cpu']}; {m['platform']}; commit {m['commit']}; {m['when']}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    if rate:
        workers = {int(k[-1]): v for k, v in rate.items() if k.startswith("worker")}
        rows = throughput_rows(rate.get("ceiling", float("nan")), rate.get("naive", float("nan")), workers)
        parts += ["Throughput (drain of the same pre-produced input, measured from the output topic):", "",
                  markdown_table(rows, THROUGHPUT_COLUMNS), ""]
        if 1 in workers and 2 in workers:
            parts += [f"2 workers / 1 worker: {workers[2] / workers[1]:.2f}", ""]
        cpu = [{"what": f"x{k[-1]}", **v} for k, v in d.items() if k.startswith("worker") and "cpu_us_per_tx" in v]
        if cpu:
            parts += ["Worker CPU (user + system of the worker processes / transactions scored, labels included; "
                      "idle: the workers joined, before any input):", "", markdown_table(cpu, CPU_COLUMNS), ""]
    if "latency" in report:
        lat = report["latency"]
        parts += ["Latency, output record ts - input record ts, per offered load (% of worker x1 drain), in live "
                  "time (event time = the wall clock at send, after 8 days of history shifted to end now):", "",
                  markdown_table(lat["loads"], LATENCY_COLUMNS), "",
                  f"transactions without a score: {lat['missing']}", "",
                  "Where the time went (p50 / p99 ms of each stage, from the timing in the score messages; "
                  "to_worker: load generator -> worker fetch, in_worker: fetch -> scored, publish: scored -> "
                  "score appended by the broker):", "",
                  markdown_table([stage_row(x) for x in lat["loads"] if "stages" in x], STAGE_COLUMNS), ""]
    if "sweep" in report:
        parts += ["Sweep (1 worker, drain):", "", markdown_table(report["sweep"], SWEEP_COLUMNS), ""]
    return "\n".join(parts)


def write(report: dict[str, Any], out: Path) -> None:
    lat_values = report.get("latency", {}).pop("values", {})
    if lat_values:
        plots.latency_cdf(lat_values, out / "latency_cdf.png")
    if report.get("timelines"):
        plots.throughput(report["timelines"], out / "throughput.png")
    if report.get("sweep"):
        plots.sweep(report["sweep"], out / "sweep.png")
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    (out / "bench.md").write_text(md + "\n")
    print(md)
