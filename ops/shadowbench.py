"""``python -m ops.shadowbench``: what a shadow model costs the worker.

One worker draining N pre-produced transactions (+ labels) of the bench's simulated history
(``ops.bench``'s phase c., on ``--bootstrap``, else a broker started here) without a shadow and with
``--shadow-bundle`` (a second bundle scoring every batch from the same rows to ``shadow-scores``),
interleaved ``--drain-runs`` times, reason codes off (``--reasons 0``: the fastest worker, where the
added inference and the shadow's score messages weigh most): throughput from the scores topic's
timestamps and the worker's CPU a transaction. The shadow is ``--shadow`` (default: the champion's own
bundle, the cost of a model of the same size).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ops.bench.toggle import bench_history, drains_toggled
from schemas.bundle import load_bundle
from schemas.settings import add, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.shadowbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", Path("bundles/latest"), "the champion's bundle", Path)
    p.add_argument("--shadow", type=Path, default=None, help="the shadow's bundle (default: --bundle)")
    p.add_argument("--drain", type=positive_int, default=60_000, help="transactions a drain (default 60000)")
    p.add_argument("--drain-runs", type=positive_int, default=3, help="drains without, then with (default 3)")
    add(p, "--bootstrap", "KAFKA_BOOTSTRAP", None, "a running broker for the drains (else one is started)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    shadow = load_bundle(a.shadow or a.bundle)
    h, lab = bench_history()
    n = min(a.drain, len(h))
    print(f"drain of {n:,} transactions (+ labels), 1 worker, batch 1000, --reasons 0; shadow {shadow.model_version}")
    os.environ["FRAUDSTREAM_REASONS"] = "0"
    drains_toggled(a.bootstrap, a.bundle, h, lab, n, a.drain_runs, "FRAUDSTREAM_SHADOW_BUNDLE",
                   ("", str(shadow.path)), "--shadow-bundle")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
