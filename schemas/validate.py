"""Strict validation of one transaction, fast enough for every record at stream speed.

``decode_transaction(raw, now_ms)`` returns either a ``Tx`` or a ``Reject(reason, detail)``;
bad records are values, not exceptions. Reason codes are stable (they travel in the
dead-letter headers): ``category`` or ``category:what`` (``missing_field:amount``,
``bad_type:ts``, ``bad_amount:sub_cent`` ...); ``REASONS`` lists the categories.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from schemas.messages import AMOUNT_MAX, ID_MAX_LEN, MAX_MESSAGE_BYTES, TS_MAX_MS, TS_MIN_MS
from schemas.rules import NOT_POSITIVE, SUB_CENT, TOO_LARGE, amount_reason

REASONS = {
    "empty": "the record value is empty",
    "too_large": f"the record value is larger than {MAX_MESSAGE_BYTES} bytes",
    "not_utf8": "the record value is not valid UTF-8",
    "bad_json": "the record value is not valid JSON (NaN and Infinity literals included)",
    "too_deep": "the JSON nests deeper than the decoder allows",
    "not_object": "the JSON value is not an object",
    "missing_field": "a required field is missing",
    "bad_type": "a field has the wrong JSON type",
    "bad_id": "an id is empty, too long, or has characters outside printable ASCII",
    "bad_amount": "the amount is not finite, not positive, too large, or finer than a cent",
    "bad_ts": "the event time is outside [2000-01-01, 2100-01-01)",
    "future_ts": "the event time is further in the future than allowed",
    "late": "the event is later than the allowed lateness for its customer",
    "key_mismatch": "the record key is not the transaction's customer_id (a label's: its terminal_id)",
    "duplicate_tx_id": "a transaction with this tx_id was already seen at another offset",
    "scoring_failed": "scoring failed after retries",
    "terminal_state_not_final": "the terminal day buckets the features need were not final within the wait bound",
    "bad_label": "a label record is malformed (not a JSON object of the Label schema)",
    "bad_is_fraud": "a label's is_fraud is not exactly the integer 0 or 1",
    "bad_reported_at": "a label's reported_at is missing, not an integer, out of range, or before its ts",
    "late_report": "a label reported before a cut-off its labels partition had already closed (counted from the "
                   "next open cut-off; not dead-lettered: this reason is only a metric label)",
}

# The categories a label can be dead-lettered with (``decode_label`` and the aggregator's key check).
LABEL_REASONS = ("empty", "too_large", "not_utf8", "bad_json", "too_deep", "not_object", "missing_field", "bad_type",
                 "bad_id", "bad_ts", "bad_is_fraud", "bad_reported_at", "key_mismatch")


AMOUNT_DETAILS = {
    NOT_POSITIVE: "amount {amount!r} must be > 0",
    TOO_LARGE: f"amount {{amount!r}} must be <= {AMOUNT_MAX:.0f}",
    SUB_CENT: "amount {amount!r} has a fraction of a cent",
}


class Tx(NamedTuple):
    tx_id: str
    ts: int
    customer_id: str
    terminal_id: str
    cents: int


class Reject(NamedTuple):
    reason: str
    detail: str

    @property
    def category(self) -> str:
        return self.reason.split(":", 1)[0]


class Label(NamedTuple):
    tx_id: str
    ts: int
    customer_id: str
    terminal_id: str
    is_fraud: int
    reported_at: int


def _bad_id(v: Any) -> bool:
    return not (0 < len(v) <= ID_MAX_LEN and v.isascii() and v.isprintable() and " " not in v)


def _check_ids(obj: dict[str, Any]) -> Reject | tuple[str, str, str]:
    """The three ids, present (the caller checked), strings of printable ASCII."""
    ids = obj["tx_id"], obj["customer_id"], obj["terminal_id"]
    for name, v in zip(("tx_id", "customer_id", "terminal_id"), ids, strict=True):
        if type(v) is not str:
            return Reject(f"bad_type:{name}", f"{name} must be a string, got {type(v).__name__}")
        if _bad_id(v):
            return Reject(f"bad_id:{name}", f"{name} must be 1..{ID_MAX_LEN} printable ASCII characters without spaces")
    return ids


def _check_ts(ts: Any, now_ms: int, max_future_ms: int, name: str = "ts", reason: str = "") -> Reject | None:
    """``ts`` must be an integer epoch-ms time in range and not too far ahead of the record's timestamp."""
    if type(ts) is not int:
        return Reject(reason or f"bad_type:{name}", f"{name} must be an integer (epoch ms), got {type(ts).__name__}")
    if not TS_MIN_MS <= ts < TS_MAX_MS:
        return Reject(reason or "bad_ts", f"{name} {ts} outside [{TS_MIN_MS}, {TS_MAX_MS})")
    if ts > now_ms + max_future_ms:
        ahead = (ts - now_ms) / 1000
        return Reject(reason or "future_ts", f"{name} {ts} is {ahead:.0f}s ahead of the record's timestamp")
    return None


def check_transaction(obj: Any, now_ms: int, max_future_ms: int) -> Tx | Reject:
    """Validate a decoded JSON value as a transaction."""
    if type(obj) is not dict:
        return Reject("not_object", f"expected a JSON object, got {type(obj).__name__}")
    for name in ("tx_id", "ts", "customer_id", "terminal_id", "amount"):
        if name not in obj:
            return Reject(f"missing_field:{name}", f"missing field {name!r}")
    ids = _check_ids(obj)
    if isinstance(ids, Reject):
        return ids
    ts, amount = obj["ts"], obj["amount"]
    bad_ts = _check_ts(ts, now_ms, max_future_ms)
    if bad_ts is not None:
        return bad_ts
    t = type(amount)
    if t is not float and t is not int:
        return Reject("bad_type:amount", f"amount must be a number, got {t.__name__}")
    bad_amount = amount_reason(amount)
    if bad_amount is not None:
        return Reject(f"bad_amount:{bad_amount}", AMOUNT_DETAILS[bad_amount].format(amount=amount))
    return Tx(ids[0], ts, ids[1], ids[2], round(amount * 100))


def check_label(obj: Any, now_ms: int, max_future_ms: int) -> Label | Reject:
    """Validate a decoded JSON value as a label: the transaction's ids and ``ts`` as a transaction's,
    ``is_fraud`` exactly 0 or 1 (not "0", not true, not 2), ``reported_at`` an integer time not before ``ts``."""
    if type(obj) is not dict:
        return Reject("not_object", f"expected a JSON object, got {type(obj).__name__}")
    for name in ("tx_id", "customer_id", "terminal_id", "ts", "is_fraud", "reported_at"):
        if name not in obj:
            return Reject(f"missing_field:{name}", f"missing field {name!r}")
    ids = _check_ids(obj)
    if isinstance(ids, Reject):
        return ids
    ts, fraud, rep = obj["ts"], obj["is_fraud"], obj["reported_at"]
    bad = _check_ts(ts, now_ms, max_future_ms) or _check_ts(rep, now_ms, max_future_ms, "reported_at",
                                                             "bad_reported_at")
    if bad is not None:
        return bad
    if type(fraud) is not int or fraud not in (0, 1):
        return Reject("bad_is_fraud", f"is_fraud must be the integer 0 or 1, got {fraud!r}"[:200])
    if rep < ts:
        return Reject("bad_reported_at", f"reported_at {rep} is before the transaction's ts {ts}")
    return Label(ids[0], ts, ids[1], ids[2], fraud, rep)


def _decode(raw: bytes | None) -> Any:
    """The JSON value of a record, or a ``Reject``."""
    if not raw:
        return Reject("empty", "the record value is empty")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Reject("too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Reject("not_utf8", "the record value is not valid UTF-8")
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            return Reject("too_deep", str(exc)[:200])
        return Reject("bad_json", str(exc)[:200])


def decode_transaction(raw: bytes | None, now_ms: int, max_future_ms: int = 3_600_000) -> Tx | Reject:
    """Decode and validate one transaction record value."""
    obj = _decode(raw)
    return obj if isinstance(obj, Reject) else check_transaction(obj, now_ms, max_future_ms)


def decode_label(raw: bytes | None, now_ms: int, max_future_ms: int = 3_600_000) -> Label | Reject:
    """Decode and validate one label record value."""
    obj = _decode(raw)
    return obj if isinstance(obj, Reject) else check_label(obj, now_ms, max_future_ms)
