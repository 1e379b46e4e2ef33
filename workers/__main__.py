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
        if s.bundle is None:
            from workers.registry import champion_bundle

            bundle = champion_bundle(s)
        else:
            bundle = load_bundle(s.bundle, key=s.bundle_key, require_signature=s.require_signature)
        from workers.explain import load_explainer

        explainer = load_explainer(bundle, s.reasons, s.reasons_share)  # its native model: loaded now, refused now
        from workers.config import GPU_BATCH_SIZE
        from workers.score import GPU_PROVIDERS, Scorer

        scorer = Scorer(bundle.onnx_path, provider=s.provider, intra_op_threads=s.intra_op_threads,
                        inter_op_threads=s.inter_op_threads, tensor_path=bundle.tensor_onnx_path, graph=s.graph)
        if s.batch_size_auto and scorer.provider in GPU_PROVIDERS:
            s = replace(s, batch_size=GPU_BATCH_SIZE)  # see workers/config.py
        scorer.warm_up(s.batch_size)
        from workers.model import build, check_parity

        check_parity(bundle)
        shadow = None
        if s.shadow_bundle is not None:
            shadow = build(s, load_bundle(s.shadow_bundle, key=s.bundle_key, require_signature=s.require_signature),
                           s.batch_size, explain=False)
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
