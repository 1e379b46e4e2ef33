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
    "key_mismatch": "the record key is not the transaction's customer_id",
    "duplicate_tx_id": "a transaction with this tx_id was already seen at another offset",
    "scoring_failed": "scoring failed after retries",
    "terminal_state_not_final": "the terminal day buckets the features need were not final within the wait bound",
    "bad_label": "a label record is malformed",
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


def _bad_id(v: Any) -> bool:
    return not (0 < len(v) <= ID_MAX_LEN and v.isascii() and v.isprintable() and " " not in v)


def check_transaction(obj: Any, now_ms: int, max_future_ms: int) -> Tx | Reject:
    """Validate a decoded JSON value as a transaction."""
    if type(obj) is not dict:
        return Reject("not_object", f"expected a JSON object, got {type(obj).__name__}")
    try:
        tx_id = obj["tx_id"]
        ts = obj["ts"]
        customer_id = obj["customer_id"]
        terminal_id = obj["terminal_id"]
        amount = obj["amount"]
    except KeyError as exc:
        return Reject(f"missing_field:{exc.args[0]}", f"missing field {exc.args[0]!r}")
    for name, v in (("tx_id", tx_id), ("customer_id", customer_id), ("terminal_id", terminal_id)):
        if type(v) is not str:
            return Reject(f"bad_type:{name}", f"{name} must be a string, got {type(v).__name__}")
        if _bad_id(v):
            return Reject(f"bad_id:{name}", f"{name} must be 1..{ID_MAX_LEN} printable ASCII characters without spaces")
    if type(ts) is not int:
        return Reject("bad_type:ts", f"ts must be an integer (epoch ms), got {type(ts).__name__}")
    if not TS_MIN_MS <= ts < TS_MAX_MS:
        return Reject("bad_ts", f"ts {ts} outside [{TS_MIN_MS}, {TS_MAX_MS})")
    if ts > now_ms + max_future_ms:
        return Reject("future_ts", f"ts {ts} is {(ts - now_ms) / 1000:.0f}s ahead of the record's timestamp")
    t = type(amount)
    if t is not float and t is not int:
        return Reject("bad_type:amount", f"amount must be a number, got {t.__name__}")
    if not amount > 0:
        return Reject("bad_amount:not_positive", f"amount {amount!r} must be > 0")
    if not amount <= AMOUNT_MAX:
        return Reject("bad_amount:too_large", f"amount {amount!r} must be <= {AMOUNT_MAX:.0f}")
    cents = round(amount * 100)
    if abs(amount * 100 - cents) > 1e-6 * max(1.0, abs(amount)):
        return Reject("bad_amount:sub_cent", f"amount {amount!r} has a fraction of a cent")
    return Tx(tx_id, ts, customer_id, terminal_id, int(cents))


def decode_transaction(raw: bytes | None, now_ms: int, max_future_ms: int = 3_600_000) -> Tx | Reject:
    """Decode and validate one record value."""
    if not raw:
        return Reject("empty", "the record value is empty")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Reject("too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Reject("not_utf8", "the record value is not valid UTF-8")
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            return Reject("too_deep", str(exc)[:200])
        return Reject("bad_json", str(exc)[:200])
    return check_transaction(obj, now_ms, max_future_ms)
