"""The live model metrics the monitor publishes (``python -m workers.monitor``), as JSON Schema.

One record per window, model version and kind on the compacted topic ``model-metrics``, keyed
``{model_version}|{kind}|{window_start as ISO-8601 UTC}``: a later record for a key replaces the
earlier one (a transaction day's stages, a republication after a restart, which is identical).
The rules that decide each window's rows are in ``workers/monitor/windows.py``; here, what the
fields mean. Means are exactly rounded (``math.fsum`` then one division), so a reimplementation
over the same rows reproduces every number to the bit, whatever order it reads them in.
"""

from __future__ import annotations

from schemas.messages import _SCHEMA_VERSION, TS_MAX_MS, TS_MIN_MS, JsonSchema, _obj

KINDS = ("arrival_1h", "arrival_1d", "arrival_7d", "tx_day")
STAGES = ("closed", "provisional", "feedback", "final")
METRIC_FIELDS = ("n_scored", "n_labelled", "label_coverage", "n_fraud", "fraud_rate", "alerts", "alert_rate",
                 "mean_score", "precision", "recall", "auc", "average_precision", "card_precision_at_100",
                 "estimated_precision")


def _null_count(desc: str) -> JsonSchema:
    return {"type": ["integer", "null"], "minimum": 0, "description": desc}


def _null_share(desc: str) -> JsonSchema:
    return {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": desc}


def _null_ranking(desc: str) -> JsonSchema:
    # No maximum: scikit-learn's sums may pass 1 by a rounding error (1.0000000000000002), and the value is
    # the trainer's to the bit.
    return {"type": ["number", "null"], "minimum": 0, "description": desc + ", as scikit-learn computes it"}


def _time(desc: str, nullable: bool = False) -> JsonSchema:
    return {"type": ["integer", "null"] if nullable else "integer", "minimum": TS_MIN_MS, "maximum": TS_MAX_MS,
            "description": desc}


_ROWS = ("Rows: arrival_* windows, the transactions with a label reported in [window_start, window_end) that "
         "have a score of this model version, each with its latest label reported before window_end; tx_day, "
         "every transaction of this version with its event time in the UTC day [window_start, window_end), "
         "labelled by its latest label reported before labels_before (none in the provisional stage). "
         "Unlabelled rows count in n_scored and the alert figures, never in precision, recall, auc, "
         "average_precision or card_precision_at_100; label_coverage says how many rows those rest on.")

MODEL_METRICS = _obj(
    "ModelMetrics",
    "Topic `model-metrics` (compacted), key = `{model_version}|{kind}|{window_start ISO-8601}`: the realised "
    "metrics of one model version over one window, joined from the `scores` and `fraud-labels` topics. " + _ROWS
    + " A null is a metric undefined on the window (no rows, one class, no alerts) or not computed for its "
      "kind or stage.",
    {
        "schema_version": _SCHEMA_VERSION,
        "model_version": {"type": "string", "minLength": 1, "description": "the scores' model_version"},
        "kind": {"enum": list(KINDS), "description": "arrival_1h/1d/7d: labels by report time, a window closing "
                 "at every hour boundary; tx_day: transactions by their UTC day"},
        "stage": {"enum": list(STAGES), "description": "closed (arrival windows: never updated); tx_day: "
                  "provisional (scores only, once the day's scores are complete), feedback (labels reported "
                  "within 7 days after the day), final (within the monitor's --horizon-days)"},
        "window_start": _time("window start, epoch ms UTC (inclusive)"),
        "window_end": _time("window end, epoch ms UTC (exclusive)"),
        "labels_before": _time("the labels counted were reported before this time (epoch ms); null: none counted",
                               nullable=True),
        "n_scored": _null_count("tx_day: rows (scored transactions); arrival: null"),
        "n_labelled": _null_count("rows with a label"),
        "label_coverage": _null_share("tx_day: n_labelled / n_scored"),
        "n_fraud": _null_count("labelled rows whose label is fraud"),
        "fraud_rate": _null_share("n_fraud / n_labelled"),
        "alerts": {"type": "integer", "minimum": 0, "description": "rows flagged (score >= the bundle's threshold, "
                   "the score message's `flag`)"},
        "alert_rate": _null_share("tx_day: alerts / n_scored"),
        "mean_score": _null_share("tx_day: mean score of the rows"),
        "precision": _null_share("labelled flagged rows that are fraud / labelled flagged rows"),
        "recall": _null_share("labelled flagged rows that are fraud / n_fraud"),
        "auc": _null_ranking("ROC AUC of the labelled rows (trainer.evaluate.roc_auc; null with one class)"),
        "average_precision": _null_ranking("average precision of the labelled rows (trainer.evaluate."
                                           "average_precision; null without a fraud)"),
        "card_precision_at_100": _null_share("tx_day: the handbook's card precision@100 of the day's labelled rows "
                                             "(trainer.evaluate.card_precision_at_k, k = 100)"),
        "estimated_precision": _null_share("mean calibrated probability of the flagged rows (the bundle's "
                                           "monitoring.calibration); null without alerts or without the bundle"),
        "agreement": {
            "type": ["object", "null"],
            "description": "tx_day: this version's flags against each other version that scored some of the same "
                           "transactions of the day (a champion and its shadow), keyed by that version; {} when "
                           "none did; arrival windows: null",
            "additionalProperties": {
                "type": "object", "additionalProperties": False,
                "required": ["rows", "same_flag", "flagged_only_here", "flagged_only_there"],
                "properties": {
                    "rows": {"type": "integer", "minimum": 1, "description": "transactions both versions scored"},
                    "same_flag": {"type": "number", "minimum": 0, "maximum": 1,
                                  "description": "share of those rows where both flags are the same"},
                    "flagged_only_here": {"type": "integer", "minimum": 0},
                    "flagged_only_there": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
)
