"""The benchmark's latency steps run in live time: after a history shifted to end now (scored first),
every transaction of the steps carries ``ts`` = the wall clock at send, and each is scored once."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ops.bench import kafka_io
from ops.bench.run import Context, latency
from ops.loadgen.live import first_index_of_day
from ops.loadgen.source import simulated
from schemas.bundle import Bundle
from trainer.simulate import SimConfig

pytestmark = pytest.mark.integration


def test_latency_steps_send_in_live_time(kafka_bootstrap: str, bundle: Bundle, tmp_path: Path) -> None:
    h, labels = simulated(SimConfig(customers=60, terminals=120, days=40, seed=4))
    ctx = Context(kafka_bootstrap, bundle.path, h, labels, len(h), tmp_path)
    try:
        r = latency(ctx, capacity=100.0, fractions=[0.5], step_s=2.0, warm_s=0.5)
        recs = kafka_io.read_topic(kafka_bootstrap, ctx.topic("lat-tx"))
    finally:
        kafka_io.delete_topics(kafka_bootstrap, ctx.prefix)
    assert r["time"] == "live" and r["missing"] == 0
    split = first_index_of_day(h, 8)
    live = r["sent"]["live"]
    assert live["history_transactions"] == split and r["sent"]["transactions"] == 5 + 100
    assert r["loads"][0]["n"] == 100
    fresh = {str(t) for t in h.tx_id[split:]}
    stepped = [(ts, int(orjson.loads(v)["ts"])) for ts, _, v in recs if orjson.loads(v)["tx_id"] in fresh]
    assert len(stepped) == 105
    assert all(abs(rec - event) <= 1000 for rec, event in stepped), "event time = the wall clock at send"
    assert all(event >= live["history_end_ms"] for _, event in stepped)
