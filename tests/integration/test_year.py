"""A simulated year through one worker on the real broker: customers and terminals that come and go
(cohorts living four months), labels reported at realistic delays (up to 60 days), a kill -9 in the
middle. Every transaction is scored, every score equals the offline score with the same labels, and
every state structure stops growing once the feature horizon has passed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ops.bench.kafka_io import create_topics, read_topic
from ops.bench.workers_run import WorkerSet
from ops.soak.history import Churn, year_history
from ops.soak.run import flat, offline_scores, soak, table
from schemas.bundle import Bundle
from trainer.simulate import labels_of

pytestmark = pytest.mark.integration

CHURN = Churn(days=366, cohort_days=120, every_days=30, customers=30, terminals=400, seed=5)


def test_a_year_with_churn_and_a_kill_keeps_parity_and_flat_state(
        kafka_bootstrap: str, bundle: Bundle, tmp_path: Path) -> None:
    h = year_history(CHURN)
    lab = labels_of(h, seed=5)
    assert (h.ts[-1] - h.ts[0]) // 86_400_000 >= 365
    tag = f"year-{id(h) % 100000}"
    ws = WorkerSet(kafka_bootstrap, bundle.path, f"{tag}-transactions", f"{tag}-labels", tag, tmp_path,
                   batch_size=500)
    create_topics(kafka_bootstrap, [ws.tx_topic, ws.label_topic], ws.partitions)
    try:
        result = soak(ws, h, lab, chunk_days=30, kill_after_day=180, log=print)
    finally:
        ws.stop()
    print(table(result))
    assert result.killed_at_day is not None and 150 <= result.killed_at_day <= 240
    scores: dict[str, list[float]] = {}
    for _, _, value in read_topic(kafka_bootstrap, ws.scores_topic):
        msg = orjson.loads(value)
        scores.setdefault(msg["tx_id"], []).append(msg["score"])
    assert set(scores) == set(h.tx_id.tolist()), "every transaction scored"
    want = offline_scores(h, lab, bundle.path)
    off = [(k, v, want[k]) for k, vs in scores.items() for v in vs if abs(v - want[k]) > 1e-5]
    assert not off, f"{len(off)} scores differ from the offline ones, e.g. {off[:3]}"
    dlq = read_topic(kafka_bootstrap, f"{tag}-dlq")
    assert not dlq, f"{len(dlq)} dead letters"
    # The horizon is 38 days and cohorts live 120: from day ~150 on the population is steady. Compare
    # the last third of the year with the months before it.
    assert len(result.samples) >= 12
    grew = flat(result.samples, after_day=240, factor=1.25)
    assert not grew, f"structures still growing after day 240 (max before, max after): {grew}"
    mid = [s for s in result.samples if 120 < s.day <= 240]
    assert all(s.state.get("customers", 0) > 0 and s.state.get("terminal_days", 0) > 0 for s in mid)
