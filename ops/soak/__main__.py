"""``python -m ops.soak``: a simulated year (customers and terminals that come and go) through one
worker on a real broker, in chunks of days; after each chunk the worker's state sizes and RSS.
Writes ``soak.json`` and ``soak.md``; ``--kill-after-day`` kills the worker (SIGKILL) once and
restarts it. With ``--check`` it also compares every score with the offline score (the trainer's
features with the same labels) and exits 1 on a mismatch or on a structure that keeps growing."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from ops.bench.workers_run import WorkerSet
from ops.soak.history import Churn, year_history
from ops.soak.run import flat, soak, table
from trainer.simulate import History, Labels


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
    p.add_argument("--kill-after-day", type=int, default=None, help="SIGKILL the worker once after this day")
    p.add_argument("--bootstrap", default=None, help="a running broker (else one is started)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (else a quick one is trained)")
    p.add_argument("--check", action="store_true", help="compare every score with the offline score")
    p.add_argument("--out", type=Path, default=Path(".state/soak"), help="where soak.json and soak.md go")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from ops.bench.__main__ import train
    from ops.bench.kafka_io import create_topics
    from trainer.simulate import labels_of

    churn = Churn(a.days, a.cohort_days, a.every_days, a.customers, a.terminals)
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
                   die_with_parent=True)
    try:
        create_topics(bootstrap, [ws.tx_topic, ws.label_topic], ws.partitions)
        result = soak(ws, h, lab, a.chunk_days, a.kill_after_day)
        grew = flat(result.samples, after_day=a.days // 3 * 2, factor=1.25)
        mismatches = _check(ws, h, lab) if a.check else None
    finally:
        ws.stop()
        if broker is not None:
            broker.stop()
    a.out.mkdir(parents=True, exist_ok=True)
    report = {"churn": asdict(churn), "transactions": len(h), "labels": len(lab), "seconds": result.seconds,
              "killed_at_day": result.killed_at_day, "grew": grew, "score_mismatches": mismatches,
              "samples": [asdict(s) for s in result.samples], "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    (a.out / "soak.json").write_text(json.dumps(report, indent=1))
    (a.out / "soak.md").write_text(table(result) + "\n")
    print(table(result))
    print(f"[soak] {result.seconds:.0f}s; killed after day {result.killed_at_day}; grew: {grew or 'nothing'}; "
          f"score mismatches: {mismatches}", file=sys.stderr)
    return 1 if grew or mismatches else 0


def _check(ws: WorkerSet, h: History, lab: Labels) -> int:
    """Transactions whose last score differs from the offline score by more than 1e-5, or has none."""
    import orjson

    from ops.bench.kafka_io import read_topic
    from ops.soak.run import offline_scores

    want = offline_scores(h, lab, ws.bundle)
    got = {orjson.loads(v)["tx_id"]: orjson.loads(v)["score"] for _, _, v in read_topic(ws.bootstrap, ws.scores_topic)}
    return sum(1 for k, v in want.items() if k not in got or abs(got[k] - v) > 1e-5)


if __name__ == "__main__":
    sys.exit(main())
