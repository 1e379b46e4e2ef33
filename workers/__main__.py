"""``python -m workers``: start-up checks, then the Faust worker.

Checks before anything consumes: the settings parse, the health/metrics port (--metrics-port) is
free, the bundle exists and verifies (checksums, signature when required, feature version), its
native LightGBM model loads when flags carry reason codes (--reasons, ``workers/explain.py``), ONNX
Runtime loads its graph with the requested provider (--graph tensor needs a bundle with the
tensorized graph), its input has the expected shape and a warm-up batch scores, the broker
answers and the topics exist (created when missing). Any failure exits non-zero with one line
naming the problem.
"""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import replace

from schemas.bundle import load_bundle
from schemas.errors import FraudstreamError

# The cyclic collector's first generation runs every 700 container allocations by default, and every
# tenth run scans the next generation: a worker allocates several objects per record and keeps
# millions of long-lived ones (seen ids, queues), so collections cost about a third of the core's
# time (BENCHMARKS.md, issue 13). State is mostly acyclic; collect much less often instead.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Freeze what start-up allocated (the model, libraries: never garbage) and space collections out."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("fraudstream.worker")
    try:
        from workers.config import parse

        s = parse(argv)
        from workers.health import bind

        metrics_socket = bind(s.metrics_host, s.metrics_port)  # a port in use is refused here, before Kafka
        if s.bundle is None:  # the registry's champion and shadow
            from workers.registry import registry_bundles

            bundle, shadow_bundle = registry_bundles(s)
        else:
            bundle = load_bundle(s.bundle, key=s.bundle_key, require_signature=s.require_signature)
            shadow_bundle = None if s.shadow_bundle is None else load_bundle(
                s.shadow_bundle, key=s.bundle_key, require_signature=s.require_signature)
        from workers.model import build

        # Its native model, session, warm-up and graph parity: what a hot reload checks too (workers/model.py).
        model = build(s, bundle)
        s = replace(s, batch_size=model.batch_size)  # auto: larger on a GPU (workers/config.py)
        scorer, explainer = model.scorer, model.explainer
        shadow = None
        if shadow_bundle is not None and s.bundle is None:  # the registry's: refused like the follower refuses
            from workers.registry import shadow_or_none

            shadow = shadow_or_none(lambda: build(s, shadow_bundle, explain=False))
        elif shadow_bundle is not None:  # --shadow-bundle: a wrong path or bundle is a start-up error
            shadow = build(s, shadow_bundle, explain=False)
        if shadow is not None:
            log.info("shadow: %s scores every transaction to %s", shadow.version, s.topics.shadow_scores)
        log.info("inference: %s, batch size %d", scorer.describe(), s.batch_size)
        log.info("kafka: %s at %s", s.auth.describe(), s.bootstrap)
        from workers.topics import ensure_topics

        partitions = ensure_topics(s)
    except FraudstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import faust

    from workers.app import create_app

    app = create_app(s, bundle, scorer, partitions, metrics_socket=metrics_socket, explainer=explainer,
                     shadow=None if shadow is None else (shadow.bundle, shadow.scorer))
    from workers.logs import limit_library_logs

    limit_library_logs()  # after every aiokafka / Faust module made its logger
    tune_gc()
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    fatal = app.conf.fraudstream["health"].fatal
    if fatal is not None:  # a dead component, an output refused for good, a drain past its bound
        print(f"error: the worker stopped: {fatal}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
