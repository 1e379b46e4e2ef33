"""The monitor on a real broker, as subprocesses: its compacted records equal the offline computation exactly,
through a kill -9, a failover to the standby and the killed instance's restart; bad records are dead-lettered once.

Fourteen simulated days of scores (two model versions, redeliveries, transactions never scored) and
their labels over 24 days (reviews later overturned, ties), published in the order a live system
publishes them at a few hundred records a second: event time runs ~100 000 times faster than wall time.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from schemas.bundle import Bundle, load_bundle
from schemas.monitoring import MODEL_METRICS
from tests.monitor.data import SHADOW, synth
from tests.monitor.harness import MALFORMED_LABELS, MALFORMED_SCORES, Monitors, producer, publish, publish_malformed
from tests.monitor.harness import read_all as read_topic
from tests.monitor.offline import truth

pytestmark = pytest.mark.integration

HORIZON_DAYS = 9
DAYS = 14
LATENESS_MS = 3_600_000
RATE = 250  # records a second: the standby takes over while they still flow
KILL_AT = 0.3


def wait_for(m: Monitors, expected: dict[tuple[str, str], Any], timeout_s: float = 120) -> list[Any]:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        records = read_topic(m.bootstrap, m.topics["metrics"])
        got = {(r.key.decode(), orjson.loads(r.value)["stage"]) for r in records}
        if got >= expected.keys() or time.monotonic() > deadline:
            return records
        time.sleep(1)


def test_metrics_equal_the_offline_truth_through_a_kill_a_failover_and_a_restart(
        kafka_bootstrap: str, kafka_admin: KafkaAdminClient, bundle: Bundle, tmp_path: Path) -> None:
    m = Monitors(kafka_bootstrap, tmp_path, bundle.path.parent, HORIZON_DAYS)
    kafka_admin.create_topics([NewTopic(m.topics[n], 4, 1) for n in ("scores", "shadow_scores", "labels")])
    stream = synth(days=DAYS, customers=100, terminals=200, seed=7, main=bundle.model_version, label_until_days=24)
    events = stream.events()
    cut = int(len(events) * KILL_AT)
    prod = producer(kafka_bootstrap)
    try:
        m.start("a")
        m.wait_role("a", "active")
        m.start("b")
        m.wait_role("b", "standby")
        publish(prod, m.topics, events[:cut], RATE)
        publish_malformed(prod, m.topics, stream.scores[0], stream.labels[0])
        m.procs["a"].send_signal(signal.SIGKILL)
        rest = threading.Thread(target=publish, args=(prod, m.topics, events[cut:], RATE))
        rest.start()
        calibration = load_bundle(bundle.path).monitoring
        assert calibration is not None
        end = max(t for t, _, _ in events)
        expected = truth(stream.scores, stream.labels, HORIZON_DAYS, end - LATENESS_MS,
                         lambda v: calibration.calibration if v == bundle.model_version else None)
        m.wait_role("b", "active")
        m.procs["a"].wait(timeout=10)
        m.start("a")  # restarted: it joins the group and stands by, the lease stays with b
        rest.join()
        records = wait_for(m, expected)
        m.wait_role("a", "standby")
        _check_metrics(records, expected)
        _check_dead_letters(m)
        status, text = m.get("b", "/metrics")
        assert status == 200 and "fraudstream_monitor_active 1.0" in text
        assert f'fraudstream_model_metric{{kind="tx_day_final",metric="auc",version="{bundle.model_version}"}}' in text
        agreement = f'fraudstream_model_flag_agreement{{kind="tx_day_final",other="{SHADOW}",'
        assert f'{agreement}version="{bundle.model_version}"}}' in text, "champion and shadow side by side"
        assert (f'fraudstream_model_training_metric{{metric="precision",version="{bundle.model_version}"}} '
                f'{calibration.expected_precision!r}') in text, "the training figure the precision alert compares with"
    finally:
        prod.close()
        m.stop_all()


def _check_metrics(records: list[Any], expected: dict[tuple[str, str], dict[str, Any]]) -> None:
    disagree = [a[SHADOW] for r in expected.values() if r["kind"] == "tx_day" for a in [r["agreement"] or {}]
                if SHADOW in a and a[SHADOW]["same_flag"] < 1]
    assert disagree, "the shadow's flags differ on some days: the agreement is checked on a real difference"
    published = Counter[tuple[str, str]]()
    last: dict[str, dict[str, Any]] = {}
    validator = jsonschema.Draft202012Validator(MODEL_METRICS)
    for r in records:
        key, value = r.key.decode(), orjson.loads(r.value)
        validator.validate(value)
        assert value == expected[key, value["stage"]], key  # before the kill, after the failover: the same
        published[key, value["stage"]] += 1
        last[key] = value
    assert published.keys() == expected.keys()
    assert max(published.values()) >= 2  # the standby republished what the killed instance had
    stages = {"closed": 0, "provisional": 1, "feedback": 2, "final": 3}
    latest: dict[str, dict[str, Any]] = {}
    for key, stage in expected:
        if key not in latest or stages[stage] > stages[latest[key]["stage"]]:
            latest[key] = expected[key, stage]
    assert last == latest  # the compacted topic's view: every key's final value is the truth's latest stage
    assert sum(1 for k, s in expected if s == "final") == 2 * DAYS  # every day of both versions is final


def _check_dead_letters(m: Monitors) -> None:
    dead = read_topic(m.bootstrap, m.topics["dlq"])
    headers = [dict(r.headers) for r in dead]
    sources = Counter((h["dlq.source.topic"], h["dlq.source.partition"], h["dlq.source.offset"]) for h in headers)
    assert max(sources.values()) == 1  # once, though the standby read them again
    got = Counter((h["dlq.source.topic"].decode(), h["dlq.reason"].decode()) for h in headers)
    want = Counter([(m.topics["scores"], reason) for _, _, reason in MALFORMED_SCORES]
                   + [(m.topics["labels"], reason) for _, _, reason in MALFORMED_LABELS])
    assert got == want
    assert {r.value for r in dead} >= {b"not json", b"{"}
