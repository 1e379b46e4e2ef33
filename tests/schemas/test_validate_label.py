"""Label validation (``decode_label``): strict like a transaction's, with the label's own reasons."""

from __future__ import annotations

import orjson
import pytest

from schemas.validate import LABEL_REASONS, REASONS, Label, Reject, decode_label

T = 1_525_132_800_000
NOW = T + 30 * 86_400_000
GOOD = {"tx_id": "tx1", "customer_id": "c0", "terminal_id": "t0", "ts": T, "is_fraud": 1, "reported_at": T + 1}


def _with(**change: object) -> bytes:
    return orjson.dumps({k: v for k, v in {**GOOD, **change}.items() if v is not ...})


def test_good_label_decodes() -> None:
    assert decode_label(_with(), NOW) == Label("tx1", T, "c0", "t0", 1, T + 1)
    assert decode_label(_with(is_fraud=0, reported_at=T), NOW) == Label("tx1", T, "c0", "t0", 0, T)


@pytest.mark.parametrize(("raw", "reason"), [
    (_with(is_fraud="0"), "bad_is_fraud"),
    (_with(is_fraud="false"), "bad_is_fraud"),
    (_with(is_fraud=2), "bad_is_fraud"),
    (_with(is_fraud=True), "bad_is_fraud"),
    (_with(is_fraud=None), "bad_is_fraud"),
    (_with(is_fraud=1.0), "bad_is_fraud"),
    (_with(is_fraud=...), "missing_field:is_fraud"),
    (_with(reported_at=...), "missing_field:reported_at"),
    (_with(reported_at="tomorrow"), "bad_reported_at"),
    (_with(reported_at=T - 1), "bad_reported_at"),
    (_with(reported_at=10**15), "bad_reported_at"),
    (_with(reported_at=NOW + 86_400_000), "bad_reported_at"),
    (_with(ts="yesterday"), "bad_type:ts"),
    (_with(ts=5), "bad_ts"),
    (_with(tx_id=7), "bad_type:tx_id"),
    (_with(tx_id="has space"), "bad_id:tx_id"),
    (_with(customer_id="x" * 65), "bad_id:customer_id"),
    (_with(terminal_id="t\u00e9"), "bad_id:terminal_id"),
    (b"[1, 2]", "not_object"),
    (b"{nope", "bad_json"),
    (b"", "empty"),
    (None, "empty"),
])
def test_bad_labels_are_rejected_with_their_reason(raw: bytes | None, reason: str) -> None:
    got = decode_label(raw, NOW)
    assert isinstance(got, Reject), got
    assert got.reason == reason, got
    assert got.category in LABEL_REASONS and got.category in REASONS and got.detail
