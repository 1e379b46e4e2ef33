"""``python -m ops.soak``: a simulated year (customers and terminals that come and go) through one
worker on a real broker, in chunks of days; after each chunk the worker's state sizes and RSS.
Writes ``soak.json``, ``soak.csv`` and ``soak.md``; ``--kill-after-day`` (or ``--kill-at``, a fraction
of the days) kills the worker (SIGKILL) once while it scores the next chunk and restarts it. Exits 1
when a structure (or RSS) keeps growing after the horizon, on a dead letter, and with ``--check`` when
a score differs from the offline score (the trainer's features with the same labels)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from ops.bench.kafka_io import read_topic
from ops.bench.workers_run import WorkerSet
from ops.soak.history import Churn, year_history
from ops.soak.run import Scores, csv, flat, growing, mismatches, soak, table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Churn()
    p.add_argument("--days", type=int, default=d.days, help=f"simulated days (default {d.days})")
    p.add_argument("--customers", type=int, default=200, help="customers per cohort (default 200)")
    p.add_argument("--terminals", type=int, default=2000, help="terminals per cohort (default 2000)")
    p.add_argument("--cohort-days", type=int, default=d.cohort_days, help="how long a cohort lives")
    p.add_argument("--every-days", type=int, default=d.every_days, help="a new cohort starts this often")
    p.add_argument("--chunk-days", type=int, default=30, help="days sent between two samples (default 30)")
    p.add_argument("--kill-after-day", type=int, default=None,
                   help="SIGKILL the worker once, while it scores the chunk after this day, and restart it")
    p.add_argument("--kill-at", type=float, default=None,
                   help="the same as a fraction of --days (0.5: the middle of the year)")
    p.add_argument("--flat-factor", type=float, default=1.25,
                   help="a structure grew when its max over the last third exceeds this x its max over the "
                        "second third")
    p.add_argument("--bootstrap", default=None, help="a running broker (else one is started)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (else a quick one is trained)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="the worker's /metrics port, where the state sizes are then read (default 0: from the "
                        "stats topic)")
    p.add_argument("--check", action="store_true", help="compare every score with the offline score")
    p.add_argument("--out", type=Path, default=Path(".state/soak"), help="where soak.json and soak.md go")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from ops.bench.__main__ import train
    from ops.bench.kafka_io import create_topics
    from schemas.bundle import load_bundle
    from trainer.export import offline_scores
    from trainer.simulate import labels_of

    churn = Churn(a.days, a.cohort_days, a.every_days, a.customers, a.terminals)
    kill_after = a.kill_after_day if a.kill_at is None else int(a.kill_at * a.days)
    h = year_history(churn)
    lab = labels_of(h)
    print(f"[soak] {len(h)} transactions over {a.days} days, {len(lab)} labels", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="fraudstream-soak-"))
    broker = None
    bootstrap = a.bootstrap
    if not bootstrap:
        from ops.kafka import LocalBroker

        broker = LocalBroker(work / "kafka")
        bootstrap = broker.start(port=0).bootstrap
    tag = f"soak-{uuid.uuid4().hex[:8]}"
    ws = WorkerSet(bootstrap, a.bundle or train(work), f"{tag}-transactions", f"{tag}-labels", tag, work / "logs",
                   die_with_parent=True, metrics_ports=[a.metrics_port])
    scores = None
    try:
        create_topics(bootstrap, [ws.tx_topic, ws.label_topic], ws.partitions)
        scores = Scores(bootstrap, ws.scores_topic)
        result = soak(ws, h, lab, a.chunk_days, kill_after, scores=scores)
        after = a.days // 3 * 2
        grew = {**flat(result.samples, after_day=after, factor=a.flat_factor, from_day=a.days // 3),
                **{n: (xs[0], xs[-1]) for n, xs in growing(result.samples, after_day=a.days // 2).items()}}
        dead = len(read_topic(bootstrap, f"{tag}-dlq"))
        unscored = len(h) - sum(1 for t in h.tx_id.tolist() if t in scores.by_tx)
        duplicates = scores.records - len(scores.by_tx)
        off = None
        if a.check:
            off = len(mismatches(scores.by_tx, offline_scores(h, lab, load_bundle(ws.bundle).onnx_path)))
    finally:
        if scores is not None:
            scores.close()
        ws.stop()
        if broker is not None:
            broker.stop()
    a.out.mkdir(parents=True, exist_ok=True)
    report = {"churn": asdict(churn), "transactions": len(h), "labels": len(lab), "seconds": result.seconds,
              "kill": asdict(result.kill) if result.kill else None, "grew": grew, "unscored": unscored,
              "duplicates": duplicates, "dead_letters": dead, "score_mismatches": off,
              "samples": [asdict(s) for s in result.samples], "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    (a.out / "soak.json").write_text(json.dumps(report, indent=1))
    (a.out / "soak.csv").write_text(csv(result))
    (a.out / "soak.md").write_text(table(result) + "\n")
    print(table(result))
    k = result.kill
    killed = "no kill" if k is None else (f"killed during the chunk to day {k.day} ({k.scored_before - k.chunk[0]} of "
                                          f"its {k.chunk[1] - k.chunk[0]} scored), ready again after "
                                          f"{k.restart_s:.1f}s")
    print(f"[soak] {result.seconds:.0f}s; {killed}; unscored {unscored}, duplicates {duplicates}, dead letters "
          f"{dead}; grew: {grew or 'nothing'}; score mismatches: {off}", file=sys.stderr)
    return 1 if grew or off or unscored or dead else 0


if __name__ == "__main__":
    sys.exit(main())
