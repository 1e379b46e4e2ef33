"""What the monitor reads: scores and labels checked, the bad ones with the reason their dead letter carries;
its settings refused at start with what to fix."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.errors import ConfigError
from tests.monitor.data import synth
from workers.monitor.config import parse
from workers.monitor.decode import decode_label_records, decode_scores

STREAM = synth(days=2, customers=5, terminals=10)
SCORE, LABEL = STREAM.scores[0], STREAM.labels[0]
NOW = SCORE["ts"]


def _score(**change: Any) -> bytes:
    msg = {**SCORE, **change}
    return orjson.dumps({k: v for k, v in msg.items() if v is not None})


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"), (b"{", "bad_json"), (b"[1]", "not_object"),
    (_score(flag=None), "missing_field:flag"), (_score(schema_version=2), "bad_schema_version"),
    (_score(tx_id="has space"), "bad_id:tx_id"), (_score(ts=NOW + 2 * 3_600_000), "future_ts"),
    (_score(score=1.5), "bad_score"), (_score(score=True), "bad_score"), (_score(score="0.5"), "bad_score"),
    (_score(flag=1), "bad_type:flag"), (_score(model_version=""), "bad_model_version"),
    (_score(model_version="a|b"), "bad_model_version"), (_score(source={"partition": -1}), "bad_type:source"),
    (_score(source={"partition": "3"}), "bad_type:source"), (_score(source=[3]), "bad_type:source"),
])
def test_a_bad_score_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    batch, _, rejects = decode_scores([_score(), raw], [NOW, NOW], 3_600_000)
    assert batch.tx_id == [SCORE["tx_id"]] and batch.score.tolist() == [SCORE["score"]]
    assert [(i, rj.reason) for i, rj in rejects] == [(1, reason)]


def test_each_source_reports_its_largest_event_time_and_a_score_without_one_is_its_own() -> None:
    raws = [_score(ts=NOW - 50, source={"partition": 2, "offset": 7}),
            _score(ts=NOW - 90, source={"partition": 2, "offset": 8}),
            _score(ts=NOW - 70, source={"partition": 0, "offset": 1}), _score(ts=NOW - 10, source=None)]
    batch, by_source, rejects = decode_scores(raws, [NOW] * 4, 3_600_000)
    assert not rejects and len(batch.ts) == 4
    assert by_source == {2: NOW - 50, 0: NOW - 70, -1: NOW - 10}


class _Record:
    def __init__(self, key: bytes | None, value: bytes, timestamp: int) -> None:
        self.key, self.value, self.timestamp = key, value, timestamp


def test_labels_follow_the_workers_rules_key_included() -> None:
    good = _Record(LABEL["terminal_id"].encode(), orjson.dumps(LABEL), LABEL["reported_at"])
    bad = _Record(LABEL["terminal_id"].encode(), orjson.dumps({**LABEL, "is_fraud": 2}), LABEL["reported_at"])
    wrong_key = _Record(b"elsewhere", orjson.dumps(LABEL), LABEL["reported_at"])
    batch, rejects = decode_label_records([good, bad, wrong_key], 3_600_000)
    assert batch.tx_id == [LABEL["tx_id"]] and batch.reported_at.tolist() == [LABEL["reported_at"]]
    assert [(i, rj.reason) for i, rj in rejects] == [(1, "bad_is_fraud"), (2, "key_mismatch")]


@pytest.mark.parametrize(("argv", "fix"), [
    (["--horizon-days", "7"], "--horizon-days"), (["--idle-ms", "0"], "--idle-ms"),
    (["--session-timeout-s", "2"], "--session-timeout-s"), (["--topic-lease", "scores"], "must differ"),
    (["--metrics-port", "70000"], "invalid command line"),
])
def test_bad_settings_are_refused_naming_the_fix(argv: list[str], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        parse(argv)


def test_the_rebuild_reads_back_the_horizon_and_the_longest_arrival_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_BUNDLE_KEY", "s3cret-signing-key")
    s = parse(["--horizon-days", "60"])
    assert s.rebuild_span_ms == (60 + 7 + 2) * 86_400_000
    assert s.bundle_key == b"s3cret-signing-key" and "s3cret" not in repr(s)
