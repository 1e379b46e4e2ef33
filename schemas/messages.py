"""Every message on fraudstream's topics, defined once as JSON Schema (draft 2020-12).

``python -m schemas.export`` writes them to ``schemas/json/`` (committed, with a test that they
are current) so that clients in any language can use the topics. The limits below are also
what ``schemas.validate`` enforces on every incoming transaction.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1
ID_MAX_LEN = 64
AMOUNT_MAX = 1_000_000.0          # 1 M per card transaction; more is a data error, not a purchase
TS_MIN_MS = 946_684_800_000       # 2000-01-01T00:00:00Z
TS_MAX_MS = 4_102_444_800_000     # 2100-01-01T00:00:00Z
MAX_MESSAGE_BYTES = 4096

JsonSchema = dict[str, Any]
_BASE = "https://fraudstream.dev/schemas"


def _id(desc: str) -> JsonSchema:
    return {"type": "string", "minLength": 1, "maxLength": ID_MAX_LEN, "pattern": "^[\\x21-\\x7e]+$",
            "description": desc}


def _ts(desc: str) -> JsonSchema:
    return {"type": "integer", "minimum": TS_MIN_MS, "maximum": TS_MAX_MS, "description": desc}


def _obj(title: str, desc: str, props: dict[str, JsonSchema], required: list[str] | None = None,
         extra: bool = False) -> JsonSchema:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_BASE}/{title}.schema.json",
        "title": title,
        "description": desc,
        "type": "object",
        "properties": props,
        "required": sorted(props) if required is None else required,
        "additionalProperties": extra,
    }


def _sub(desc: str, props: dict[str, JsonSchema]) -> JsonSchema:
    return {"type": "object", "description": desc, "properties": props, "required": sorted(props),
            "additionalProperties": False}


_AMOUNT: JsonSchema = {"type": "number", "exclusiveMinimum": 0, "maximum": AMOUNT_MAX,
                       "description": "amount in currency units with at most 2 decimals (cents exact)"}
_SCHEMA_VERSION: JsonSchema = {"const": SCHEMA_VERSION, "description": "message schema version"}
_PROB: JsonSchema = {"type": "number", "minimum": 0, "maximum": 1}

TRANSACTION = _obj(
    "Transaction",
    "Topic `transactions`, key = customer_id (UTF-8). Extra fields are allowed and ignored.",
    {
        "tx_id": _id("unique transaction id"),
        "ts": _ts("event time, epoch milliseconds UTC (weekend/night are computed in UTC)"),
        "customer_id": _id("card/customer id; also the record key"),
        "terminal_id": _id("terminal id"),
        "amount": _AMOUNT,
    },
    extra=True,
)

LABEL = _obj(
    "Label",
    "Topic `fraud-labels`: the outcome of an investigation, published when it became known "
    "(`reported_at`; analyst reviews within days, chargebacks weeks later, so labels arrive out of "
    "transaction-time order; a later label for the same tx_id replaces an earlier one). key = terminal_id. "
    "`ts` is the transaction's event time.",
    {
        "tx_id": _id("transaction id"),
        "customer_id": _id("customer id"),
        "terminal_id": _id("terminal id; also the record key"),
        "ts": _ts("the transaction's event time, epoch ms UTC"),
        "is_fraud": {"type": "integer", "enum": [0, 1], "description": "1 fraud, 0 genuine (exactly 0 or 1)"},
        "reported_at": _ts("when the feedback became known, epoch ms UTC (>= ts); a transaction's terminal "
                           "features count the labels reported before one hour ahead of its UTC day"),
    },
    extra=True,
)

_TIMING = _sub("when the record was seen, epoch ms (wall clock of the worker host)", {
    "input_ts": {"type": "integer", "description": "the input record's Kafka timestamp"},
    "consumed_at": {"type": "integer", "description": "when the worker took it off the consumer"},
    "scored_at": {"type": "integer", "description": "when its batch finished inference"},
})

_SOURCE = _sub("the input record it was scored from: the transactions topic's partition and offset (an input "
               "partition's scores are in its offset order; the model monitor's watermarks follow each)", {
    "partition": {"type": "integer", "minimum": 0},
    "offset": {"type": "integer", "minimum": 0},
})

SCORE = _obj(
    "Score",
    "Topic `scores`: every transaction, flag true or false. key = tx_id. A flagged transaction also goes to "
    "`fraud-flags` as a `Flag` message: these fields plus its `explanation`, which the scores topic never carries.",
    {
        "schema_version": _SCHEMA_VERSION,
        "tx_id": _id("transaction id"),
        "customer_id": _id("customer id"),
        "terminal_id": _id("terminal id"),
        "ts": _ts("the transaction's event time"),
        "amount": _AMOUNT,
        "score": {**_PROB, "description": "fraud probability from the model"},
        "threshold": {**_PROB, "description": "the bundle's decision threshold; flag = score >= threshold"},
        "flag": {"type": "boolean"},
        "model_version": {"type": "string", "minLength": 1},
        "worker_id": {"type": "string", "minLength": 1},
        "timing": _TIMING,
        "source": _SOURCE,
    },
)

_REASON = _sub("a feature that raised the score", {
    "feature": {"type": "string", "minLength": 1, "description": "the feature's name (FeatureVector.json)"},
    "value": {"type": "number", "description": "the feature's value in the transaction's row (float32)"},
    "contribution": {"type": "number", "exclusiveMinimum": 0,
                     "description": "its TreeSHAP contribution to the raw score, log-odds (> 0: it raised the score)"},
})
_EXPLANATION = _sub(
    "why the transaction was flagged: TreeSHAP from the bundle's LightGBM model (pred_contrib), in log-odds. "
    "raw_score = bias + the sum of EVERY feature's contribution (the reasons list only the largest positive "
    "ones), and score = sigmoid(raw_score) up to float32 rounding. Absent when the worker runs with --reasons 0, "
    "beyond its --reasons-share (a flood of flags: the highest-scored are explained), or, logged, when explaining "
    "failed (fraudstream_flags_unexplained_total counts the last two): a flag is never held back for want of "
    "its reasons.", {
        "raw_score": {"type": "number", "description": "the model's raw score (log-odds) of the transaction"},
        "bias": {"type": "number",
                 "description": "the expected raw score over the training data (TreeSHAP's base value)"},
        "reasons": {"type": "array", "items": _REASON,
                    "description": "the features that pushed the score up most, largest contribution first: at "
                                   "most --reasons of them (3 by default), fewer when fewer contributions are "
                                   "positive"},
    })

FLAG = _obj(
    "Flag",
    "Topic `fraud-flags`: a flagged transaction's Score message (flag = true) with its reason codes in "
    "`explanation`. key = tx_id. raw_score and bias sit in `explanation` beside the reasons rather than at the "
    "top level: they exist exactly when it does, and they sum with the contributions.",
    {**SCORE["properties"], "flag": {"const": True}, "explanation": _EXPLANATION},
    required=SCORE["required"],
)

_HIST: JsonSchema = _sub("an HdrHistogram, mergeable across workers", {
    "encoding": {"const": "hdrhistogram-v2-base64",
                 "description": "HdrHistogram V2 compressed encoding (as `hdrh` and the Java/Go ports use)"},
    "unit": {"type": "string", "enum": ["us", "count"]},
    "data": {"type": "string"},
})
_NONNEG: JsonSchema = {"type": "number", "minimum": 0}


def _dist(desc: str) -> JsonSchema:
    return _sub(desc, {"count": {"type": "integer", "minimum": 0}, "p50": _NONNEG, "p95": _NONNEG,
                       "p99": _NONNEG, "max": _NONNEG, "mean": _NONNEG, "histogram": _HIST})


_COUNT: JsonSchema = {"type": "integer", "minimum": 0}
_DRIFT_WINDOW = _sub(
    "scored rows of one window counted into the bundle's reference bins (workers/drift.py). Windows of the same "
    "event-time hour or day from several workers merge by adding their counts (PSI of the sum against the "
    "bundle's shares: schemas.drift.psi)", {
        "window": {"type": "string", "enum": ["interval", "hour", "day"],
                   "description": "interval: rows scored in the stats interval (wall clock); hour, day: rows whose "
                                  "event time is in that UTC hour or day"},
        "start": {"type": "integer", "description": "epoch ms (event time for hour and day)"},
        "end": {"type": "integer", "description": "epoch ms, exclusive"},
        "rows": _COUNT,
        "flags": _COUNT,
        "alert_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                       "description": "flags / rows (null: no rows), beside drift.expected_alert_rate"},
        "psi": {"type": "object", "additionalProperties": {"type": ["number", "null"], "minimum": 0},
                "description": "PSI against the reference per monitored feature and `score` (null: no rows); "
                               "> 0.1 worth a look, > 0.25 a shift"},
        "counts": {"type": "object", "additionalProperties": {"type": "array", "items": _COUNT},
                   "description": "rows per reference bin, per monitored feature and `score`"},
        "forced": {"type": "boolean", "description": "closed before the watermark passed its end, to bound the "
                                                      "open windows (see workers/drift.py)"},
    })
_DRIFT: JsonSchema = {
    "type": "object",
    "description": "drift monitoring: the interval's window, and the event-time hours and days closed since the "
                   "last message (an hour or day closes when the worker's event-time watermark passes its end). "
                   "Only `enabled` and `reason` when off (--drift false, or a bundle without a monitoring block)",
    "properties": {
        "enabled": {"type": "boolean"},
        "reason": {"type": ["string", "null"], "description": "why drift is not monitored (null when it is)"},
        "threshold": {**_PROB, "description": "the bundle's decision threshold (flag = score >= threshold)"},
        "expected_alert_rate": {**_PROB, "description": "the bundle's: validation rows at or over the threshold"},
        "watermark": {"type": ["integer", "null"], "description": "event time, epoch ms, that closed windows end "
                                                                  "by (null: not known yet)"},
        "interval": _DRIFT_WINDOW,
        "closed": {"type": "array", "items": _DRIFT_WINDOW, "description": "hours and days closed since the last "
                                                                           "message, by end"},
        "open": {"type": "object", "additionalProperties": _COUNT, "description": "windows still open, per kind"},
        "late_rows": {"type": "object", "additionalProperties": _COUNT,
                      "description": "rows whose window (per kind) had closed when they were scored: not counted"},
        "dropped_windows": {**_COUNT, "description": "closed windows not published: more closed in one interval "
                                                    "than a message carries (the oldest go)"},
    },
    "required": ["enabled", "reason"],
    "if": {"properties": {"enabled": {"const": True}}},
    "then": {"required": ["threshold", "expected_alert_rate", "watermark", "interval", "closed", "open", "late_rows",
                          "dropped_windows"]},
    "additionalProperties": False,
}

LATENCY_STATS = _obj(
    "LatencyStats",
    "Topic `latency-stats`: one summary per worker per interval. key = worker_id. "
    "Latencies in milliseconds; histograms in microseconds, mergeable.",
    {
        "schema_version": _SCHEMA_VERSION,
        "worker_id": {"type": "string", "minLength": 1},
        "interval": _sub("the interval, epoch ms", {"start": {"type": "integer"}, "end": {"type": "integer"}}),
        "counts": _sub("records in the interval (labels_*: label records read, dead-lettered, and counted from "
                       "a later report slot because they arrived after theirs had closed)", {
            k: {"type": "integer", "minimum": 0}
            for k in ("in", "scored", "flagged", "dead_lettered", "redelivered", "labels_in",
                      "labels_dead_lettered", "labels_late_restamped")
        }),
        "state": {"type": "object", "description": "entries in each per-key state structure of the worker (bounded "
                  "by the feature horizon: flat after 37 days of event time)",
                  "additionalProperties": {"type": "integer", "minimum": 0}},
        "throughput_per_s": _NONNEG,
        "batch_size": _dist("records per inference batch"),
        "e2e_ms": _dist("input record timestamp -> broker ack of its output"),
        "queue_ms": _dist("input record timestamp -> start of its batch's inference"),
        "inference_ms": _dist("ONNX Runtime run time per batch"),
        "provider": {"type": "string", "description": "the execution provider the session actually loaded"},
        "model_version": {"type": "string"},
        "drift": _DRIFT,
    },
)

DEAD_LETTER_HEADERS = {
    "dlq.reason": "machine-readable reason code (see schemas.validate.REASONS)",
    "dlq.detail": "human-readable detail",
    "dlq.source.topic": "topic of the original record",
    "dlq.source.partition": "partition of the original record (decimal)",
    "dlq.source.offset": "offset of the original record (decimal)",
    "dlq.worker": "worker id that dead-lettered it",
}

DEAD_LETTER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"{_BASE}/DeadLetter.schema.json",
    "title": "DeadLetter",
    "description": "Topic `transactions.dlq`. The record VALUE is the original bytes, never re-encoded, and the key "
                   "the original key. This schema describes the record HEADERS as a name -> UTF-8 string map.",
    "type": "object",
    "properties": {k: {"type": "string", "description": v} for k, v in DEAD_LETTER_HEADERS.items()},
    "required": ["dlq.reason", "dlq.source.topic", "dlq.source.partition", "dlq.source.offset"],
    "additionalProperties": True,
}

ALL: dict[str, JsonSchema] = {
    "Transaction": TRANSACTION,
    "Label": LABEL,
    "Score": SCORE,
    "Flag": FLAG,
    "LatencyStats": LATENCY_STATS,
    "DeadLetter": DEAD_LETTER,
}
