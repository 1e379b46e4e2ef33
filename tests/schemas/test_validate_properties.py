"""Property-based tests of the decoder and validator (hypothesis): never raise, exact cents."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import AMOUNT_MAX, TS_MAX_MS, TS_MIN_MS
from schemas.validate import REASONS, Reject, Tx, decode_transaction

NOW = TS_MAX_MS  # nothing valid is in the future of this clock
ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _category_ok(got: Tx | Reject) -> bool:
    return isinstance(got, Tx) or got.category in REASONS


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert _category_ok(decode_transaction(raw, NOW))


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json_never_raises(value: object) -> None:
    got = decode_transaction(orjson.dumps(value), NOW)
    assert isinstance(got, Reject) and got.category in REASONS


@settings(max_examples=400, deadline=None)
@given(tx_id=ids, customer=ids, terminal=ids, ts=st.integers(TS_MIN_MS, TS_MAX_MS - 1),
       cents=st.integers(1, int(AMOUNT_MAX * 100)), extra=st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_valid_transactions_decode_to_exact_cents(tx_id: str, customer: str, terminal: str, ts: int, cents: int,
                                                  extra: dict[str, object]) -> None:
    body = {**extra, "tx_id": tx_id, "ts": ts, "customer_id": customer, "terminal_id": terminal,
            "amount": cents / 100}
    raw = orjson.dumps(body)
    got = decode_transaction(raw, NOW)
    if len(raw) > 4096:
        assert isinstance(got, Reject) and got.reason == "too_large"
    else:
        assert got == Tx(tx_id, ts, customer, terminal, cents)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["tx_id", "ts", "customer_id", "terminal_id", "amount"]), value=json_values)
def test_a_wrong_field_is_rejected_with_a_reason_naming_it(field: str, value: object) -> None:
    body: dict[str, object] = {"tx_id": "a", "ts": 1_600_000_000_000, "customer_id": "c", "terminal_id": "t",
                               "amount": 1.25}
    body[field] = value
    got = decode_transaction(orjson.dumps(body), NOW)
    if isinstance(got, Reject):
        assert got.category in REASONS and (":" not in got.reason or got.reason.endswith(field)
                                            or got.category in ("bad_amount",))
