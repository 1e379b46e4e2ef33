"""The demo's report: what the workers did with the load, from the topics alone.

Pure functions over what was read back (no Kafka here, so they are tested directly), then the
markdown table, ``report.json`` and the plots (``ops.bench.plots``).

- throughput: scored/s, first to last output of the load phase (``ops.bench.stats.drain_rate``);
- latency: output record timestamp minus input record timestamp, joined by tx_id, the first
  output of each transaction (``ops.bench.stats.join_latency``);
- flags against the simulator's ground truth (``is_fraud`` per tx_id): a flag is a true positive
  when the transaction is a fraud; recall counts every fraud *sent*, so a fraud that was never
  scored counts as missed;
- why the top flags: the reason codes (``explanation``) of the highest-scored flags of the load phase.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench import plots
from ops.bench.stats import drain_rate, join_latency, markdown_table, percentiles, timeline
from ops.demo import report_model


@dataclass(frozen=True)
class Output:
    """One record of the scores (or flags) topic."""

    tx_id: str
    ts: int          # the output record's Kafka timestamp, ms
    score: float
    flag: bool


def exactly_once(sent: Iterable[str], outputs: Sequence[Output]) -> dict[str, int]:
    """How the sent transactions came out: scored (distinct), records, duplicates, differing, missing."""
    ids = set(sent)
    scores: dict[str, set[float]] = {}
    records = 0
    for o in outputs:
        if o.tx_id in ids:
            records += 1
            scores.setdefault(o.tx_id, set()).add(o.score)
    return {"sent": len(ids), "scored": len(scores), "records": records, "duplicates": records - len(scores),
            "duplicates_with_another_score": sum(1 for s in scores.values() if len(s) > 1),
            "missing": len(ids) - len(scores)}


def flag_quality(sent: Iterable[str], flagged: Iterable[str], truth: Mapping[str, bool]) -> dict[str, Any]:
    """Precision and recall of the flags of the ``sent`` transactions against ``truth`` (tx_id -> is fraud)."""
    ids = set(sent)
    flags = {t for t in flagged if t in ids}
    frauds = {t for t in ids if truth[t]}
    tp = len(flags & frauds)
    fp = len(flags) - tp
    fn = len(frauds) - tp
    return {"flags": len(flags), "frauds": len(frauds), "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / len(flags) if flags else float("nan"),
            "recall": tp / len(frauds) if frauds else float("nan")}


def summarize(sent: Mapping[str, int], scores: Sequence[Output], flags: Sequence[Output],
              truth: Mapping[str, bool]) -> dict[str, Any]:
    """The load phase: ``sent`` tx_id -> input record timestamp; outputs of the scores and flags topics."""
    once = exactly_once(sent, scores)
    lat, _ = join_latency(sent, ((o.tx_id, o.ts) for o in scores))
    first = np.array(sorted(lat[t] + sent[t] for t in lat), dtype=np.int64)  # first output timestamp per tx
    flagged_by_score = {o.tx_id for o in scores if o.flag and o.tx_id in sent}
    flag_ids = {o.tx_id for o in flags if o.tx_id in sent}
    return {
        **once,
        "scored_per_s": drain_rate(first),
        "latency_ms": percentiles([float(v) for v in lat.values()]),
        **flag_quality(sent, flag_ids, truth),
        # The flags topic holds exactly the scores with flag = true.
        "flags_match_scores": flag_ids == flagged_by_score,
    }


def top_flags(flags: Iterable[Mapping[str, Any]], truth: Mapping[str, bool], n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` highest-scored flag messages (the first of each tx_id) with their reason codes, the explained
    ones first (over ``--reasons-share`` a worker sends flags without)."""
    first: dict[str, Mapping[str, Any]] = {}
    for m in flags:
        first.setdefault(str(m["tx_id"]), m)
    ranked = sorted(first.values(), key=lambda m: (not m.get("explanation"), -float(m["score"]), str(m["tx_id"])))[:n]
    return [{"tx_id": str(m["tx_id"]), "score": float(m["score"]), "fraud": truth.get(str(m["tx_id"])),
             "explanation": m.get("explanation")} for m in ranked]


def _reasons_text(explanation: Mapping[str, Any] | None) -> str:
    if not explanation:
        return "none (the worker ran with --reasons 0)"
    text = "; ".join(f"{r['feature']} = {r['value']:,.6g} (+{r['contribution']:.2f})" for r in explanation["reasons"])
    return f"{text or '-'}; bias {explanation['bias']:.2f}, raw score {explanation['raw_score']:.2f}"


def why_flags(top: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's lines on the top flags (``top_flags``); none when there were no flags."""
    if not top:
        return []
    fraud = {True: "yes", False: "no"}
    table = markdown_table([{"tx": f["tx_id"], "score": f["score"], "fraud": fraud.get(f["fraud"], "?"),
                             "why": _reasons_text(f["explanation"])} for f in top],
                           [("tx", "transaction", ""), ("score", "score", ".4f"), ("fraud", "fraud", ""),
                            ("why", "reasons", "")])
    return ["Why the top flags of the load phase (reason codes: the features that raised the score most, their "
            "value and TreeSHAP contribution in log-odds):", "", table, ""]


def dead_letters(reasons: Iterable[str]) -> dict[str, Any]:
    by = Counter(reasons)
    return {"count": sum(by.values()), "reasons": dict(by.most_common())}


def worker_facts(stats: Iterable[Mapping[str, Any]], ready_lines: Iterable[str] = ()) -> dict[str, Any]:
    """Provider(s), model version(s) and worker ids from the latency-stats messages (the workers' own word);
    the workers' ``ready`` log lines when no stats message came (a very short run)."""
    providers, versions, ids = set(), set(), set()
    for s in stats:
        providers.add(str(s.get("provider", "")))
        versions.add(str(s.get("model_version", "")))
        ids.add(str(s.get("worker_id", "")))
    if not providers:
        for line in ready_lines:  # "worker w0 ready in 1.23s: provider CPUExecutionProvider, model v, bundle p"
            _, _, rest = line.partition(": provider ")
            provider, _, rest = rest.partition(", model ")
            if provider:
                providers.add(provider)
                versions.add(rest.partition(", bundle ")[0])
    return {"providers": sorted(p for p in providers if p), "model_versions": sorted(v for v in versions if v),
            "workers_reporting": sorted(i for i in ids if i)}


def _fmt(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)


def rows(r: dict[str, Any]) -> list[dict[str, object]]:
    """The table printed and written to report.md: one (what, value) row each."""
    load, lat, dlq = r["load"], r["load"]["latency_ms"], r["dead_letters"]
    once = "exactly once" if load["duplicates"] == 0 and load["missing"] == 0 else (
        f"{load['duplicates']} duplicates ({load['duplicates_with_another_score']} with another score), "
        f"{load['missing']} missing")
    reasons = ", ".join(f"{k} {v}" for k, v in dlq["reasons"].items())
    out: list[dict[str, object]] = [
        {"what": "transactions sent (load phase)",
         "value": f"{load['sent']:,} in {r['sent']['seconds']:.1f} s ({r['sent']['tx_rate']:,.0f} tx/s, "
                  f"target {r['config']['rate']:,.0f}) + {r['sent']['labels']:,} labels"},
        {"what": "scored", "value": f"{load['scored']:,} ({once})"},
        {"what": "throughput", "value": f"{_fmt(load['scored_per_s'], ',.0f')} scored/s"},
        {"what": "latency p50 / p95 / p99 / max",
         "value": " / ".join(_fmt(lat[k], ",.0f") for k in ("p50", "p95", "p99", "max")) + " ms"},
        {"what": "flags", "value": f"{load['flags']:,} (frauds sent: {load['frauds']:,})"},
        {"what": "precision",
         "value": f"{_fmt(load['precision'], '.3f')} (tp {load['tp']:,} / flags {load['flags']:,})"},
        {"what": "recall",
         "value": f"{_fmt(load['recall'], '.3f')} (tp {load['tp']:,} / frauds {load['frauds']:,})"},
        {"what": "dead letters", "value": f"{dlq['count']:,}" + (f" ({reasons})" if reasons else "")},
        {"what": "provider", "value": ", ".join(r["workers"]["providers"]) or "-"},
        {"what": "worker CPU (load phase)",
         "value": ", ".join(f"{_fmt(c * 100, '.0f')} %" for c in r["workers"].get("cpu_load_phase", [])) or "-"},
        {"what": "model version", "value": ", ".join(r["workers"]["model_versions"]) or r["bundle"]["model_version"]},
    ]
    if "event_time_lag_ms" in load:
        lag = load["event_time_lag_ms"]
        out.insert(3, {"what": "event time (live)",
                       "value": f"wall clock at send: record ts - event ts p50 {_fmt(lag['p50'], ',.0f')} / max "
                                f"{_fmt(lag['max'], ',.0f')} ms"})
    if "latency_stages_ms" in load:
        split = "; ".join(f"{k.replace('_', ' ')} {_fmt(v['p50'], ',.0f')} / {_fmt(v['p99'], ',.0f')} ms"
                          for k, v in load["latency_stages_ms"].items())
        out.insert(4, {"what": "latency split, p50 / p99", "value": split})
    w = r.get("warmup", {})
    if w.get("transactions"):
        out.insert(0, {"what": "warm-up (history before the load)",
                       "value": f"{w['transactions']:,} transactions ({w['days']} days) scored in "
                                f"{w['seconds']:.1f} s ({w['scored_per_s']:,.0f} scored/s); precision "
                                f"{_fmt(w['precision'], '.3f')}, recall {_fmt(w['recall'], '.3f')}"})
    return out


def markdown(r: dict[str, Any]) -> str:
    c = r["config"]
    head = [f"# fraudstream demo, {r['when']}", "",
            f"Broker {r['broker']['bootstrap']} ({r['broker']['kind']}); bundle {r['bundle']['path']} "
            f"({r['bundle']['source']}, {c['size']} size); {c['workers']} workers on topics "
            f"`{r['topics']['prefix']}-*`; "
            f"simulator seed {c['seed']} ({c['replay']['customers']:,} customers, {c['replay']['terminals']:,} "
            f"terminals); threshold {r['bundle']['threshold']:.6f}.", "",
            markdown_table(rows(r), [("what", "measure", ""), ("value", "value", "")]), ""]
    if not r["load"]["flags_match_scores"]:
        head += ["**The flags topic does not hold exactly the scores with flag = true.**", ""]
    head += why_flags(r.get("top_flags", []))
    head += report_model.markdown(r)
    head += ["Time: live (`ops.loadgen --live`): the warm-up history was shifted to end when the load began and "
             "sent at once; each transaction of the load phase carries event time = the wall clock when it was "
             "sent, and labels were sent at their report times.",
             "",
             "Latency: output record timestamp (the broker's append time: the scores topic is LogAppendTime) - "
             "input record timestamp (the load generator's send time), same host clock, the first output of each "
             "transaction of the load phase; split by the timing in the score messages: to worker (send -> the "
             "worker's fetch), in worker (fetch -> scored: batching, terminal-finality waits, queueing), publish "
             "(scored -> appended). Throughput: scored/s from the first to the last output of the load phase. "
             "Precision and recall: the flags of the load phase against the simulator's `is_fraud`.",
             "", "Plots: `latency_cdf.png`, `throughput.png`"
             + "".join(f", `{p}`" for p in report_model.plot_files(r))
             + ". Logs: " + ", ".join(f"`{p}`" for p in r["logs"]), ""]
    return "\n".join(head)


def write(r: dict[str, Any], out: Path, latencies: Sequence[float],
          series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> str:
    """report.json, report.md and the two plots under ``out``; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    plots.latency_cdf({f"load phase, {r['config']['rate']:,.0f} tx/s": latencies}, out / "latency_cdf.png",
                      title="end-to-end latency CDF (output ts - input ts)")
    plots.throughput(series, out / "throughput.png", title="throughput over time (load phase)",
                     xlabel="seconds from the first input", ylabel="records/s")
    report_model.write_plots(r, out)
    (out / "report.json").write_text(json.dumps(_no_nan(r), indent=2, default=str, allow_nan=False) + "\n")
    md = markdown(r)
    (out / "report.md").write_text(md)
    return md


def _no_nan(x: Any) -> Any:
    """NaN (a precision with no flags) and infinities as null: report.json stays strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_no_nan(v) for v in x]
    return x


def series(inputs_ms: Sequence[int], outputs_ms: Sequence[int],
           bucket_s: float = 1.0) -> dict[str, tuple[list[float], list[float]]]:
    """Sent and scored per second on one time axis (from the first input of the load phase)."""
    origin = float(min(inputs_ms)) if len(inputs_ms) else None
    return {"sent (transactions)": timeline(inputs_ms, bucket_s, origin),
            "scored (scores topic)": timeline(outputs_ms, bucket_s, origin)}
