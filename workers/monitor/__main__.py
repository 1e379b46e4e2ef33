"""``python -m workers.monitor``: start-up checks, then the Faust app (workers/monitor/app.py).

Checks before anything consumes: the settings parse, the health/metrics port is free, the broker
answers, the sources exist and the outputs exist or are created (topics.py). Any failure exits 2
with one line naming the problem; a death after that exits 1.
"""

from __future__ import annotations

import logging
import sys

from schemas.errors import FraudstreamError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from workers.monitor.config import parse

        s = parse(argv)
        from workers.health import bind

        metrics_socket = bind(s.metrics_host, s.metrics_port)
        from workers.monitor.topics import ensure_topics

        partitions = ensure_topics(s)
    except FraudstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import faust
    import sklearn

    from workers.monitor.app import create_app

    # trainer.evaluate's metrics run on every window: skip scikit-learn's argument checks, a third of their
    # time on small windows (the arrays are ours, finite by construction; the results are the same bits).
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)

    app = create_app(s, partitions, metrics_socket)
    from workers.__main__ import tune_gc

    tune_gc()  # millions of long-lived, acyclic entries (tx ids, columns): collect rarely, as the worker does
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    fatal = app.conf.fraudstream["monitor"].fatal
    if fatal is not None:
        print(f"error: the monitor stopped: {fatal}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
