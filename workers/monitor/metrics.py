"""The monitor's Prometheus metrics, read from its state at scrape time (a registry of its own).

The names are a contract (dashboards and alerts query them):

- ``fraudstream_model_metric{version,kind,metric}``: each ModelMetrics field (schemas/monitoring.py) of the
  latest window published for the version and kind; kind is ``arrival_1h|arrival_1d|arrival_7d`` or
  ``tx_day_provisional|tx_day_feedback|tx_day_final``; a null metric is NaN
- ``fraudstream_model_metric_window_start_seconds{version,kind}``: which window that is
- ``fraudstream_model_flag_agreement{version,other,kind}``: on the latest transaction day, the share of
  the transactions both versions scored on which their flags agree
- ``fraudstream_model_training_metric{version,metric}``: what the bundle's validation rows said of the
  version (``precision``, ``alert_rate`` at its threshold), for the versions with a window published
- ``fraudstream_monitor_active``: 1 on the instance holding the lease; ``fraudstream_monitor_ready``: /readyz
- ``fraudstream_monitor_watermark_seconds{topic}``: event-time watermark of ``scores`` / ``labels``;
  ``fraudstream_monitor_clock_seconds``: the last hour boundary closed
- ``fraudstream_monitor_<what>_total``: records of the current activation — ``scores``, ``scores_late``,
  ``scores_duplicate``, ``labels``, ``labels_late``, ``labels_joined``, ``labels_unmatched``,
  ``labels_beyond_horizon``, ``windows_suppressed``; ``windows_published_total{kind}``;
  ``dead_letters_total{topic,reason}`` (reason category). They restart from 0 when an instance becomes
  active, as its rebuild reads the sources again (Prometheus sees a counter reset)
- ``fraudstream_monitor_state_entries{structure}``: days, score_rows, label_words, pending_labels, arrival_log
- ``fraudstream_monitor_rebuild_seconds``: how long the last activation took to catch up
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.drift import Monitoring
from schemas.monitoring import METRIC_FIELDS
from workers.monitor.windows import MonitorCore, Window

COUNTS = ("scores", "scores_late", "scores_duplicate", "labels", "labels_late", "labels_joined", "labels_unmatched",
          "labels_beyond_horizon", "windows_suppressed")
STATE = ("days", "score_rows", "label_words", "pending_labels", "arrival_log")
NAN = float("nan")


def gauge_kind(w: Window) -> str:
    return w.kind if w.kind != "tx_day" else f"tx_day_{w.stage}"


class MonitorMetrics(Collector):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.core: MonitorCore | None = None
        self.active = False
        self.ready: Callable[[], bool] = lambda: False
        self.training: Callable[[str], Monitoring | None] = lambda _: None  # a version's bundle figures
        self.marks: dict[str, int | None] = {"scores": None, "labels": None}
        self.rebuild_s: float | None = None
        self.latest: dict[tuple[str, str], Window] = {}
        self.published: Counter[str] = Counter()
        self.dead: Counter[tuple[str, str]] = Counter()
        self.registry.register(self)

    def activated(self, core: MonitorCore) -> None:
        self.core, self.active, self.rebuild_s = core, True, None
        self.latest.clear()
        self.published.clear()
        self.dead.clear()

    def deactivated(self) -> None:
        self.core, self.active = None, False
        self.latest.clear()

    def windows(self, windows: Iterable[Window]) -> None:
        for w in windows:
            self.latest[w.version, gauge_kind(w)] = w
            self.published[w.kind] += 1

    def dead_letters(self, topic: str, reasons: Iterable[str]) -> None:
        for r in reasons:
            self.dead[topic, r.split(":", 1)[0]] += 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield _gauge("fraudstream_monitor_active", "1 on the instance holding the lease", 1.0 if self.active else 0.0)
        yield _gauge("fraudstream_monitor_ready", "1 when /readyz answers 200", 1.0 if self.ready() else 0.0)
        if self.rebuild_s is not None:
            yield _gauge("fraudstream_monitor_rebuild_seconds", "time the last activation took to catch up with "
                         "its sources", self.rebuild_s)
        marks = GaugeMetricFamily("fraudstream_monitor_watermark_seconds", "event-time watermark per source topic",
                                  labels=["topic"])
        for topic, ms in self.marks.items():
            if ms is not None:
                marks.add_metric([topic], ms / 1000)
        yield marks
        yield from self._core()
        yield from self._models()

    def _core(self) -> Iterator[Metric]:
        core = self.core
        if core is None:
            return
        if core.done is not None:
            yield _gauge("fraudstream_monitor_clock_seconds", "the last hour boundary closed", core.done / 1000)
        for name in COUNTS:
            yield CounterMetricFamily(f"fraudstream_monitor_{name}", f"{name.replace('_', ' ')} (this activation)",
                                      value=core.counts[name])
        published = CounterMetricFamily("fraudstream_monitor_windows_published", "windows published, by kind",
                                        labels=["kind"])
        for kind, n in sorted(self.published.items()):
            published.add_metric([kind], n)
        yield published
        dead = CounterMetricFamily("fraudstream_monitor_dead_letters", "records dead-lettered, by source topic and "
                                   "reason category", labels=["topic", "reason"])
        for (topic, reason), n in sorted(self.dead.items()):
            dead.add_metric([topic, reason], n)
        yield dead
        state = GaugeMetricFamily("fraudstream_monitor_state_entries", "entries of each state structure",
                                  labels=["structure"])
        for name, n in core.sizes().items():
            state.add_metric([name], n)
        yield state

    def _models(self) -> Iterator[Metric]:
        metric = GaugeMetricFamily("fraudstream_model_metric", "a metric of the latest window published per model "
                                   "version and kind (schemas/monitoring.py)", labels=["version", "kind", "metric"])
        start = GaugeMetricFamily("fraudstream_model_metric_window_start_seconds", "start of that window",
                                  labels=["version", "kind"])
        for (version, kind), w in sorted(self.latest.items()):
            start.add_metric([version, kind], w.start / 1000)
            for name in METRIC_FIELDS:
                value = w.metrics.get(name)
                metric.add_metric([version, kind, name], NAN if value is None else float(value))
        yield metric
        yield start
        agree = GaugeMetricFamily("fraudstream_model_flag_agreement", "share of the transactions of the latest "
                                  "transaction day both versions scored on which their flags agree (a champion and "
                                  "its shadow)", labels=["version", "other", "kind"])
        for (version, kind), w in sorted(self.latest.items()):
            for other, a in sorted((w.agreement or {}).items()):
                agree.add_metric([version, other, kind], float(a["same_flag"] or 0.0))
        yield agree
        training = GaugeMetricFamily("fraudstream_model_training_metric", "what the bundle's validation rows said "
                                     "of the version at its threshold", labels=["version", "metric"])
        for version in sorted({v for v, _ in self.latest}):
            m = self.training(version)
            if m is not None:
                training.add_metric([version, "precision"], m.expected_precision)
                training.add_metric([version, "alert_rate"], m.expected_alert_rate)
        yield training


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
