"""The worker's Prometheus metrics, in a registry of their own (never the process-global one).

The names are a contract (the Grafana dashboard queries them):

- ``fraudstream_records_consumed_total``: records read from the transactions topic
- ``fraudstream_scored_total``: transactions scored and published
- ``fraudstream_model_swaps_total`` / ``fraudstream_model_refused_total``: champions from the registry swapped
  in / refused by a check (workers/registry.py)
- ``fraudstream_flagged_total``: flags published; ``fraudstream_flags_unexplained_total``: of them, without
  reason codes (over ``--reasons-share``, or explaining failed)
- ``fraudstream_dead_letters_total{reason}``: dead letters, by the category of the reason code
  (the part before ':', e.g. ``missing_field`` for ``missing_field:amount``)
- ``fraudstream_batch_size``: histogram of rows per ONNX Runtime call
- ``fraudstream_latency_seconds``: histogram, per scored transaction, of the broker's
  acknowledgement of its output minus the input record's Kafka timestamp
- ``fraudstream_inference_seconds``: histogram of the run time of each ONNX Runtime call
- ``fraudstream_consumer_lag{partition}``: end offset minus processed position of each assigned
  transactions partition (sampled by the watchdog, every ``--watchdog-interval-s``)
- ``fraudstream_assigned_partitions``, ``fraudstream_stalled_partitions``: from the same sample
- ``fraudstream_ready``: 1 when ``/readyz`` answers 200, read at scrape time
- ``fraudstream_model_info{model_version,feature_version,provider,graph}`` = 1
- ``fraudstream_drift_psi{feature,window}``: PSI against the bundle's reference bins of each monitored
  feature (the score as ``feature="score"``) over the last closed event-time ``hour`` / ``day``
  (``workers/drift.py``); ``fraudstream_alert_rate{window}``: flags / rows of the same window (and of the
  last stats ``interval``), ``fraudstream_drift_rows{window}``: its rows; ``fraudstream_expected_alert_rate``:
  the bundle's (validation rows at or over the threshold). Without drift monitoring: no drift series, and
  the expected alert rate reads 0.

Hot path: counters move once per batch (``inc(n)``), batch size and inference time are one
``observe`` per ONNX Runtime call, and the per-transaction latencies of a batch are bucketed with
numpy in one step (``BatchHistogram``): prometheus_client's ``Histogram.observe`` takes a lock
and walks the buckets in Python for every value, about a microsecond each.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _go_float

from schemas.bundle import Bundle
from schemas.validate import LABEL_REASONS

BATCH_BUCKETS = tuple(float(2**i) for i in range(17))  # 1 .. 65536 rows
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
floatToGoString = cast(Callable[[float], str], _go_float)  # the le labels prometheus_client's Histogram writes

NAMES = (
    "fraudstream_records_consumed_total", "fraudstream_scored_total", "fraudstream_flagged_total",
    "fraudstream_dead_letters_total", "fraudstream_batch_size", "fraudstream_latency_seconds",
    "fraudstream_inference_seconds", "fraudstream_consumer_lag", "fraudstream_assigned_partitions",
    "fraudstream_stalled_partitions", "fraudstream_ready", "fraudstream_model_info",
    "fraudstream_labels_consumed_total", "fraudstream_label_dead_letters_total",
    "fraudstream_labels_late_restamped_total", "fraudstream_state_entries", "fraudstream_outputs_refused_total",
    "fraudstream_dead_letter_stubs_total", "fraudstream_kafka_transactions_aborted_total", "fraudstream_drift_psi",
    "fraudstream_alert_rate",
    "fraudstream_expected_alert_rate", "fraudstream_drift_rows", "fraudstream_flags_unexplained_total",
    "fraudstream_model_swaps_total", "fraudstream_model_refused_total", "fraudstream_shadow_failed_total",
)


class BatchHistogram(Collector):
    """A Prometheus histogram (no labels) that records a whole array of values in one numpy step.

    Bucket semantics are Prometheus's: a value lands in the first bucket whose upper bound is >= it
    (``le``), the rest in +Inf. Not thread-safe: observe and collect on one event loop.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry | None = None) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last slot is +Inf only
        self.sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        if values.size == 0:
            return
        slots = np.searchsorted(self.bounds, values, side="left")
        self.counts += np.bincount(slots, minlength=self.counts.size)
        self.sum += float(values.sum())

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        cumulative = np.cumsum(self.counts).tolist()
        buckets = [(floatToGoString(b), float(c)) for b, c in zip(self.bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.consumed = Counter("fraudstream_records_consumed", "records read from the transactions topic",
                                registry=r)
        self.scored = Counter("fraudstream_scored", "transactions scored and published", registry=r)
        self.flagged = Counter("fraudstream_flagged", "fraud flags published", registry=r)
        self.model_swaps = Counter("fraudstream_model_swaps", "models swapped in from the registry while running",
                                   registry=r)
        self.model_refused = Counter("fraudstream_model_refused", "champions from the registry refused by a check "
                                     "(logged; the running model kept serving)", registry=r)
        self.shadow_failed = Counter("fraudstream_shadow_failed", "transactions the shadow model failed to score "
                                     "(logged; the champion's outputs went out)", registry=r)
        self.unexplained = Counter("fraudstream_flags_unexplained", "flags published without reason codes: over "
                                   "--reasons-share, or explaining failed (logged)", registry=r)
        self.dead_letters = Counter("fraudstream_dead_letters", "records sent to the dead-letter topic, by reason "
                                    "category (the reason code before ':')", ["reason"], registry=r)
        self.batch_size = Histogram("fraudstream_batch_size", "rows per ONNX Runtime call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.latency = BatchHistogram("fraudstream_latency_seconds", "per scored transaction: broker "
                                      "acknowledgement of its output minus the input record's Kafka timestamp",
                                      LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("fraudstream_inference_seconds", "run time of each ONNX Runtime call",
                                   buckets=INFERENCE_BUCKETS, registry=r)
        self.lag = Gauge("fraudstream_consumer_lag", "end offset minus the worker's processed position, per "
                         "assigned transactions partition (sampled by the watchdog)", ["partition"], registry=r)
        self.assigned = Gauge("fraudstream_assigned_partitions", "transactions partitions assigned to this worker",
                              registry=r)
        self.stalled = Gauge("fraudstream_stalled_partitions", "assigned partitions the watchdog reports stalled",
                             registry=r)
        self.ready = Gauge("fraudstream_ready", "1 when /readyz answers 200", registry=r)
        self.model_info = Gauge("fraudstream_model_info", "the model this worker scores with",
                                ["model_version", "feature_version", "provider", "graph"], registry=r)
        self.labels = Counter("fraudstream_labels_consumed", "records read from the labels topic", registry=r)
        self.label_dead_letters = Counter("fraudstream_label_dead_letters", "label records sent to the dead-letter "
                                          "topic, by reason category", ["reason"], registry=r)
        for reason in LABEL_REASONS:  # every series from 0, so that rate() and alerts see the first one
            self.label_dead_letters.labels(reason)
        self.labels_restamped = Counter("fraudstream_labels_late_restamped", "labels that arrived after their report "
                                        "slot had closed (later than --label-lateness-ms): counted from the next slot",
                                        registry=r)
        self.refused = Counter("fraudstream_outputs_refused", "outputs the broker refused for good (not retriable: "
                               "authorization, record too large ...), by topic; the worker then stops", ["topic"],
                               registry=r)
        self.stubs = Counter("fraudstream_dead_letter_stubs", "dead letters the broker refused for good, replaced by a "
                             "stub (key and dead-letter headers, empty value)", registry=r)
        self.txn_aborted = Counter("fraudstream_kafka_transactions_aborted", "exactly-once: transactions aborted "
                                   "(a send or the commit failed, or the producer was fenced), each rewinding its "
                                   "partition to its last commit", ["cause"], registry=r)
        for cause in ("failed", "fenced"):  # exported from the start, at 0 (a scrape sees the series exist)
            self.txn_aborted.labels(cause)
        self.state = Gauge("fraudstream_state_entries", "entries in each per-key state structure of the worker",
                           ["structure"], registry=r)
        self.drift_psi = Gauge("fraudstream_drift_psi", "PSI of a monitored feature (feature=\"score\": the score) "
                               "against the bundle's reference bins, over the last closed event-time window",
                               ["feature", "window"], registry=r)
        self.alert_rate = Gauge("fraudstream_alert_rate", "flags / scored rows of the last closed event-time window "
                                "(interval: the last stats interval)", ["window"], registry=r)
        self.expected_alert_rate = Gauge("fraudstream_expected_alert_rate", "the bundle's expected alert rate "
                                         "(validation rows at or over the threshold)", registry=r)
        self.drift_rows = Gauge("fraudstream_drift_rows", "scored rows of the last closed event-time window "
                                "(interval: the last stats interval)", ["window"], registry=r)
        self._lag_partitions: set[int] = set()

    # --- the hot path: once per batch -------------------------------------------------------------

    def record_consumed(self, n: int) -> None:
        self.consumed.inc(n)

    def record_inference(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.inference.observe(seconds)

    def record_outputs(self, scored: int, flagged: int, latency_ms: npt.NDArray[np.int64] | None,
                       dead_reasons: Iterable[str], unexplained: int = 0) -> None:
        if unexplained:
            self.unexplained.inc(unexplained)
        if scored:
            self.scored.inc(scored)
        if flagged:
            self.flagged.inc(flagged)
        if latency_ms is not None:
            self.latency.observe_many(latency_ms / 1000.0)
        for category, n in Tally(reason.split(":", 1)[0] for reason in dead_reasons).items():
            self.dead_letters.labels(category).inc(n)

    def record_labels(self, n: int, dead_reasons: Iterable[str], restamped: int) -> None:
        self.labels.inc(n)
        for category, k in Tally(reason.split(":", 1)[0] for reason in dead_reasons).items():
            self.label_dead_letters.labels(category).inc(k)
        if restamped:
            self.labels_restamped.inc(restamped)

    # --- state, set now and then ----------------------------------------------------------------

    def set_output_topics(self, topics: list[str]) -> None:
        """Every output topic's refusal series from 0, so that rate() and alerts see the first one."""
        for topic in topics:
            self.refused.labels(topic)

    def set_model(self, model_version: str, feature_version: str, provider: str, graph: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model_version, feature_version, provider, graph).set(1)

    def set_serving(self, bundle: Bundle, scorer: Any) -> None:
        """``fraudstream_model_info`` of the model that now serves (at start, and after every swap)."""
        self.set_model(bundle.model_version, str(bundle.manifest.get("feature_set", {}).get("version", "unknown")),
                       scorer.provider, str(getattr(scorer, "graph", "tree")))

    def set_ready_function(self, ready: Callable[[], bool]) -> None:
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)

    def set_partitions(self, lags: dict[int, int], stalled: int) -> None:
        """One watchdog sample: lag per assigned partition (series of unassigned ones removed)."""
        for p in self._lag_partitions - set(lags):
            self.lag.remove(str(p))
        for p, lag in lags.items():
            self.lag.labels(str(p)).set(lag)
        self._lag_partitions = set(lags)
        self.assigned.set(len(lags))
        self.stalled.set(stalled)

    def set_state(self, sizes: dict[str, int]) -> None:
        for name, n in sizes.items():
            self.state.labels(name).set(n)

    def set_expected_alert_rate(self, rate: float) -> None:
        self.expected_alert_rate.set(rate)

    def set_drift(self, drift: Mapping[str, Any]) -> None:
        """From a stats message's ``drift`` object: the interval, and the last hour and day it closed."""
        if not drift.get("enabled"):
            return
        windows = [drift["interval"], *drift["closed"]]  # later windows of a kind overwrite earlier ones
        for w in windows:
            kind = w["window"]
            self.drift_rows.labels(kind).set(w["rows"])
            if w["alert_rate"] is not None:
                self.alert_rate.labels(kind).set(w["alert_rate"])
            if kind == "interval":
                continue
            for feature, psi in w["psi"].items():
                if psi is not None:
                    self.drift_psi.labels(feature, kind).set(psi)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
