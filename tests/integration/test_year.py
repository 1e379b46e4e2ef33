"""A simulated year through one worker on the real broker: customers and terminals that come and go
(cohorts living four months, ids never coming back), labels reported at realistic delays (up to 60
days), and a kill -9 in the middle of the year while the worker scores. Every transaction is scored,
no dead letter, every score (a redelivered transaction's every score too) equals the offline score with
the same labels, and neither any state structure nor the worker's RSS keeps growing once the feature
horizon has passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.bench.kafka_io import create_topics, read_topic
from ops.bench.workers_run import WorkerSet
from ops.soak.history import Churn, year_history
from ops.soak.run import RSS, Scores, flat, growing, mismatches, soak, table
from schemas.bundle import Bundle
from schemas.features import DAY_MS
from trainer.export import offline_scores
from trainer.simulate import labels_of

pytestmark = pytest.mark.integration

CHURN = Churn(days=366, cohort_days=120, every_days=30, customers=30, terminals=400, seed=5)


def test_a_year_with_churn_and_a_kill_keeps_parity_and_flat_state(
        kafka_bootstrap: str, bundle: Bundle, tmp_path: Path) -> None:
    h = year_history(CHURN)
    lab = labels_of(h, seed=5)
    assert (h.ts[-1] - h.ts[0]) // DAY_MS >= 365
    tag = f"year-{id(h) % 100000}"
    ws = WorkerSet(kafka_bootstrap, bundle.path, f"{tag}-transactions", f"{tag}-labels", tag, tmp_path,
                   batch_size=500)
    create_topics(kafka_bootstrap, [ws.tx_topic, ws.label_topic], ws.partitions)
    scores = Scores(kafka_bootstrap, ws.scores_topic)
    try:
        result = soak(ws, h, lab, chunk_days=30, kill_after_day=180, log=print, scores=scores)
        scores.poll(1000)
    finally:
        scores.close()
        ws.stop()
    print(table(result))
    kill = result.kill
    assert kill is not None and kill.day == 210, "killed while it scored days 180-210"
    lo, hi = kill.chunk
    assert lo < kill.scored_before < hi, f"the kill landed mid-chunk: {kill}"

    assert set(scores.by_tx) == set(h.tx_id.tolist()), "every transaction scored"
    print(f"{scores.records - len(h)} transactions scored twice (scored, not yet committed at the kill)")
    off = mismatches(scores.by_tx, offline_scores(h, lab, bundle.onnx_path))
    assert not off, f"{len(off)} scores differ from the offline ones, e.g. {off[:3]}"
    dlq = read_topic(kafka_bootstrap, f"{tag}-dlq")
    assert not dlq, f"{len(dlq)} dead letters"

    # The horizon is 38 days and cohorts live 120: from day ~150 on the population is steady. The last
    # third of the year against the second; and no series that only goes up over the last half.
    assert len(result.samples) >= 12 and result.samples[-1].final
    grew = flat(result.samples, after_day=240, factor=1.25, from_day=120)
    assert not grew, f"structures still growing after day 240 (max days 120-240, max after): {grew}"
    rising = growing(result.samples, after_day=183)
    assert not rising, f"structures that only grow over the last half: {rising}"
    assert RSS not in grew and all(s.rss_mib > 0 for s in result.samples)
    mid = [s for s in result.samples if 120 < s.day <= 240]
    assert all(s.state.get("customers", 0) > 0 and s.state.get("terminal_days", 0) > 0 for s in mid)
    assert all(s.day - 3 <= s.event_day <= s.day for s in result.samples), "samples taken with the chunk scored"
