"""Decode fetched score and label records into the core's batches, and the ones that fail into rejects.

Labels go through the worker's own checks (``schemas.decode_batch.decode_labels``, the per-record
reference ``schemas.validate.decode_label`` to the reason) and key rule (a label's key is its
terminal_id, ``workers.labels``): the monitor counts exactly the labels the workers accept.

Scores: the fields the monitor uses, checked against the Score schema (``schemas/messages.py``)
with the transaction's own rules for ids and event times (``schemas.validate``). Reason codes, as
in the dead-letter headers: the shared ones (``empty``, ``too_large``, ``not_utf8``, ``bad_json``,
``too_deep``, ``not_object``, ``missing_field:<f>``, ``bad_type:<f>``, ``bad_id:<f>``, ``bad_ts``,
``future_ts``) and the monitor's ``SCORE_REASONS``. Fields it does not use (amount, timing, ...) are
not checked: the worker wrote them, and a consumer of them checks them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from schemas.decode_batch import decode_labels
from schemas.messages import SCHEMA_VERSION
from schemas.validate import Label, Reject, _bad_id, _check_ids, _check_ts, _decode
from workers.labels import LabelAggregator
from workers.monitor.windows import LabelBatch, ScoreBatch

SCORE_REASONS = {
    "bad_schema_version": f"schema_version is not {SCHEMA_VERSION}",
    "bad_score": "score is not a number in [0, 1]",
    "bad_model_version": "model_version is not 1..64 printable ASCII characters without spaces or '|' (it names "
                         "the metrics' keys and labels)",
}
_FIELDS = ("schema_version", "tx_id", "customer_id", "terminal_id", "ts", "score", "flag", "model_version")


NO_SOURCE = -1  # a score without ``source`` (written before it existed): one source of its own


def check_score(obj: Any, now_ms: int,
                max_future_ms: int) -> tuple[str, str, str, int, float, bool, int] | Reject:
    """(tx_id, customer_id, model_version, ts, score, flag, source partition) of a decoded Score message, or
    why not."""
    if type(obj) is not dict:
        return Reject("not_object", f"expected a JSON object, got {type(obj).__name__}")
    for name in _FIELDS:
        if name not in obj:
            return Reject(f"missing_field:{name}", f"missing field {name!r}")
    version = obj["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        return Reject("bad_schema_version", f"schema_version must be {SCHEMA_VERSION}, got {version!r}"[:200])
    ids = _check_ids(obj)
    if isinstance(ids, Reject):
        return ids
    bad_ts = _check_ts(obj["ts"], now_ms, max_future_ms)
    if bad_ts is not None:
        return bad_ts
    score, flag, model = obj["score"], obj["flag"], obj["model_version"]
    if type(score) not in (int, float) or not (math.isfinite(score) and 0 <= score <= 1):
        return Reject("bad_score", f"score must be a number in [0, 1], got {score!r}"[:200])
    if type(flag) is not bool:
        return Reject("bad_type:flag", f"flag must be a boolean, got {type(flag).__name__}")
    if type(model) is not str or _bad_id(model) or "|" in model:
        return Reject("bad_model_version", f"model_version {model!r}: {SCORE_REASONS['bad_model_version']}"[:200])
    source = obj.get("source")
    part = source.get("partition") if type(source) is dict else None
    if source is not None and (type(part) is not int or part < 0):
        return Reject("bad_type:source", f"source.partition must be an integer >= 0, got {part!r}"[:200])
    # A card's id once in memory.
    return ids[0], sys.intern(ids[1]), model, obj["ts"], float(score), flag, NO_SOURCE if part is None else part


def decode_scores(values: Sequence[bytes | None], now_ms: Sequence[int],
                  max_future_ms: int) -> tuple[ScoreBatch, dict[int, int], list[tuple[int, Reject]]]:
    """The valid scores of a fetch as a batch, the largest event time of each source among them (the
    watermarks' ``by_source``), and the rejected ones by position."""
    good: list[tuple[str, str, str, int, float, bool, int]] = []
    by_source: dict[int, int] = {}
    rejects: list[tuple[int, Reject]] = []
    for i, (raw, now) in enumerate(zip(values, now_ms, strict=True)):
        obj = _decode(raw)
        got = obj if isinstance(obj, Reject) else check_score(obj, now, max_future_ms)
        if isinstance(got, Reject):
            rejects.append((i, got))
        else:
            good.append(got)
            by_source[got[6]] = max(by_source.get(got[6], got[3]), got[3])
    tx, card, version, ts, score, flag, _ = zip(*good, strict=True) if good else ((),) * 7
    return ScoreBatch(list(tx), list(card), list(version), np.array(ts, np.int64), np.array(score, np.float64),
                      np.array(flag, np.bool_)), by_source, rejects


def decode_label_records(records: Sequence[Any], max_future_ms: int) -> tuple[LabelBatch, list[tuple[int, Reject]]]:
    """The valid labels of a fetch (aiokafka records: ``key``, ``value``, ``timestamp``) and the rejects."""
    outcomes = decode_labels([r.value for r in records], [r.timestamp for r in records], max_future_ms).outcomes()
    good: list[Label] = []
    rejects: list[tuple[int, Reject]] = []
    for i, (r, got) in enumerate(zip(records, outcomes, strict=True)):
        got = LabelAggregator._check_key(r, got)
        if isinstance(got, Reject):
            rejects.append((i, got))
        else:
            good.append(got)
    return LabelBatch([lab.tx_id for lab in good], np.array([lab.ts for lab in good], np.int64),
                      np.array([lab.reported_at for lab in good], np.int64),
                      np.array([lab.is_fraud for lab in good], np.int64)), rejects
