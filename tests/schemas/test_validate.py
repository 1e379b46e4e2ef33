"""Strict validation of one transaction: every rule has a reason; good records pass."""

from __future__ import annotations

import time

import orjson
import pytest

from schemas.messages import MAX_MESSAGE_BYTES
from schemas.validate import REASONS, Reject, Tx, decode_transaction

NOW = 1_700_000_000_000
GOOD = {"tx_id": "tx1", "ts": 1522540800000, "customer_id": "c1", "terminal_id": "t1", "amount": 12.34}


def _raw(**changes: object) -> bytes:
    d = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


def test_good_transaction_decodes_to_exact_cents() -> None:
    got = decode_transaction(_raw(), NOW)
    assert got == Tx("tx1", 1522540800000, "c1", "t1", 1234)
    assert decode_transaction(_raw(amount=7), NOW) == Tx("tx1", 1522540800000, "c1", "t1", 700)
    assert decode_transaction(_raw(amount=0.29), NOW) == Tx("tx1", 1522540800000, "c1", "t1", 29)
    # A double's own error on a cent amount is not a sub-cent digit, whatever the magnitude.
    assert decode_transaction(_raw(amount=0.1 + 0.2), NOW) == Tx("tx1", 1522540800000, "c1", "t1", 30)
    assert decode_transaction(_raw(amount=999999.99), NOW) == Tx("tx1", 1522540800000, "c1", "t1", 99999999)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "too_large"),
        (b"\xff\xfe{}", "not_utf8"),
        (b'{"tx_id": ', "bad_json"),
        (b"[1, 2]", "not_object"),
        (b'"just a string"', "not_object"),
        (_raw(amount=...), "missing_field:amount"),
        (_raw(tx_id=...), "missing_field:tx_id"),
        (_raw(ts="2018-04-01"), "bad_type:ts"),
        (_raw(ts=1.5e12), "bad_type:ts"),
        (_raw(ts=True), "bad_type:ts"),
        (_raw(customer_id=42), "bad_type:customer_id"),
        (_raw(amount="12.34"), "bad_type:amount"),
        (_raw(amount=None), "bad_type:amount"),
        (_raw(amount=True), "bad_type:amount"),
        (_raw(tx_id=""), "bad_id:tx_id"),
        (_raw(tx_id="x" * 65), "bad_id:tx_id"),
        (_raw(terminal_id="t 1"), "bad_id:terminal_id"),
        (_raw(customer_id="ç1"), "bad_id:customer_id"),
        (_raw(amount=-5.0), "bad_amount:not_positive"),
        (_raw(amount=0), "bad_amount:not_positive"),
        (_raw(amount=1e12), "bad_amount:too_large"),
        (_raw(amount=1.005), "bad_amount:sub_cent"),
        # A digit past the cents is caught at every magnitude (a tolerance relative to the amount let these by).
        (_raw(amount=12345.678), "bad_amount:sub_cent"),
        (_raw(amount=123456.781), "bad_amount:sub_cent"),
        (_raw(amount=999999.995), "bad_amount:sub_cent"),
        (_raw(amount=1e17), "bad_amount:too_large"),
        (_raw(amount=1e300), "bad_amount:too_large"),
        (b'{"tx_id":"a","ts":1522540800000,"customer_id":"c","terminal_id":"t","amount":NaN}', "bad_json"),
        (_raw(ts=1), "bad_ts"),
        (b"[" * 2000, "too_deep"),
        (_raw(ts=NOW + 86_400_000), "future_ts"),
    ],
)
def test_bad_records_are_rejected_with_their_reason(raw: bytes, reason: str) -> None:
    got = decode_transaction(raw, NOW)
    assert isinstance(got, Reject), got
    assert got.reason == reason, got
    assert got.category in REASONS and got.detail


def test_validation_is_fast_enough_for_stream_speed() -> None:
    """Reported, not asserted: the per-record cost of decode + validate."""
    raws = [_raw(tx_id=f"tx{i}", amount=round(1 + i * 0.37, 2)) for i in range(20000)]
    t0 = time.perf_counter()
    out = [decode_transaction(r, NOW) for r in raws]
    per = (time.perf_counter() - t0) / len(raws) * 1e6
    assert all(isinstance(o, Tx) for o in out)
    print(f"decode+validate: {per:.2f} us/record")
