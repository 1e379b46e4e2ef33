"""The batch decoder (``schemas.decode_batch``) is the per-record reference, record for record: the same
accepted rows with the same values, the same rejects (reason and detail), whatever the batch mixes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.loadgen.replay import label_value, transaction_value
from schemas.decode_batch import LabelColumns, TxColumns, decode_labels, decode_transactions
from schemas.messages import MAX_MESSAGE_BYTES, TS_MAX_MS, TS_MIN_MS
from schemas.validate import REASONS, Label, Reject, Tx, decode_label, decode_transaction
from tests.schemas.test_validate_properties import ids, json_values

T0 = 1_600_000_000_000
HOUR = 3_600_000
Pairs = list[tuple[bytes, bytes]]  # an object's (key, value) as raw JSON text: duplicates and odd numbers kept


def _obj(pairs: Pairs) -> bytes:
    return b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"


def _raw(v: object) -> bytes:
    return str(v).encode() if type(v) is int else orjson.dumps(v)  # ints beyond 64 bits too


# Raw JSON texts for one field: the good ones, and what each check of the reference rejects.
odd_numbers = st.sampled_from([b"1e400", b"-1e400", b"NaN", b"Infinity", b"-0", b"0", b"1.0", b"1e2", b"01", b"1.",
                               b"9" * 40, b"-" + b"9" * 30, str(2**63).encode(), str(2**64).encode(), b"1e300",
                               b"true", b"false", b"null", b'"7"', b"[]", b"{}", b"[1,2]"])
id_texts = st.one_of(ids.map(_raw), ids.map(_raw), st.text(max_size=70).map(_raw),
                     st.sampled_from([b'""', _raw("x" * 64), _raw("x" * 65), _raw("a b"), _raw("a\n"), _raw("\u00e9"),
                                      b'"\\u0041b"', b'"a\\/b"', b'"\\ud800"', b'"\xff"', b'"a\\"b"', b'"a,\\"#\\","']),
                     odd_numbers, json_values.map(_raw))
ts_ints = st.one_of(st.integers(T0 - 10 * HOUR, T0 + 10 * HOUR), st.integers(TS_MIN_MS - 2, TS_MIN_MS + 2),
                    st.integers(TS_MAX_MS - 2, TS_MAX_MS + 2), st.integers(-(2**70), 2**70))
ts_texts = st.one_of(ts_ints.map(_raw), ts_ints.map(_raw), ts_ints.map(lambda t: _raw(float(t))), odd_numbers)
amount_texts = st.one_of(
    st.integers(1, 100_000_000).map(lambda c: _raw(c / 100)),
    st.floats(allow_nan=False, allow_infinity=False).map(_raw),
    st.floats(0, 2_000_000).map(_raw), st.integers(-5, 2_000_000).map(_raw),
    st.from_regex(r"\A[1-9][0-9]{0,6}\.[0-9]{1,25}\Z").map(str.encode),
    st.sampled_from([b"1000000", b"1000000.0", b"1000000.01", b"0.01", b"0.005", b"1.001", b"2.675", b"1e-400"]),
    st.sampled_from([b"true", b"false", b'"1.5"', b"null", b"[1]", b'{"v":1}', b"-1.5", b"0.0"]), odd_numbers)
fraud_texts = st.one_of(st.sampled_from([b"0", b"1", b"0", b"1", b"2", b"-1", b"1.0", b'"1"']), odd_numbers)
extra_texts = st.one_of(json_values.map(_raw), odd_numbers,
                        st.sampled_from([b'"\xff"', b'"\xc3\xa9"', b'"\\ud800"', b'"\\ud83d\\ude00"', b'"a\\qb"',
                                         b"[" * 1100 + b"]" * 1100, b'"' + b"x" * MAX_MESSAGE_BYTES + b'"']))
keys = st.one_of(st.text(max_size=8).map(_raw), st.sampled_from([b'"\\u0074s"', b'"\xff"', b'"a\\u0000"']))


def _good_tx(tx_id: str, ts: int, cents: int) -> Pairs:
    return [(_raw(k), _raw(v)) for k, v in (("tx_id", tx_id), ("ts", ts), ("customer_id", "c1"),
                                            ("terminal_id", "t1"), ("amount", cents / 100))]


def _good_label(tx_id: str, ts: int, fraud: int, delay: int) -> Pairs:
    return [(_raw(k), _raw(v)) for k, v in (("tx_id", tx_id), ("customer_id", "c1"), ("terminal_id", "t1"),
                                            ("ts", ts), ("is_fraud", fraud), ("reported_at", ts + delay))]


good_tx = st.builds(_good_tx, ids, st.integers(T0 - HOUR, T0 + HOUR), st.integers(1, 100_000_000))
good_label = st.builds(_good_label, ids, st.integers(T0 - HOUR, T0 + HOUR), st.integers(0, 1),
                       st.integers(0, 2 * HOUR))
FIELD_TEXTS = {"tx_id": id_texts, "customer_id": id_texts, "terminal_id": id_texts, "ts": ts_texts,
               "reported_at": ts_texts, "amount": amount_texts, "is_fraud": fraud_texts}


def _name(key: bytes) -> str:
    """A key's name, "" for one that is not a JSON string (a mutation may have broken it)."""
    try:
        name = orjson.loads(key)
    except orjson.JSONDecodeError:
        return ""
    return name if isinstance(name, str) else ""


@st.composite
def mutated(draw: st.DrawFn, good: st.SearchStrategy[Pairs]) -> Pairs:
    """A good record with up to three changes: a field's value replaced, a field dropped, a key written with
    an escape, a duplicate key (orjson keeps the last), an extra field."""
    pairs = draw(good)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        what = draw(st.sampled_from(["value", "value", "value", "drop", "escape", "duplicate", "extra"]))
        j = draw(st.integers(0, max(len(pairs) - 1, 0)))
        if not pairs:
            break
        name = _name(pairs[j][0])
        text = draw(FIELD_TEXTS.get(name, extra_texts))
        if what == "value":
            pairs[j] = (pairs[j][0], text)
        elif what == "drop":
            del pairs[j]
        elif what == "escape":
            pairs[j] = (b'"\\u00' + pairs[j][0][1:2].hex().encode() + pairs[j][0][2:], pairs[j][1])
        elif what == "duplicate":
            pairs.insert(draw(st.integers(0, len(pairs))), (pairs[j][0], text))
        else:
            pairs.insert(draw(st.integers(0, len(pairs))), (draw(keys), draw(extra_texts)))
    return pairs


FRAGMENTS = [b"1,2", b"]", b"[", b"{", b"}", b'{"a":1}]', b'"', b'"#"', b',"#",', b"#", b" ", b"\n", b"null", b"[]",
             b"{}", b"1", b'"x"', b"\xef\xbb\xbf{}", b"\xff\xfe", b"NaN", b"[" * 1100 + b"]" * 1100,
             b"{" + b'"a":{' * 1100 + b"}" * 1101]


@st.composite
def raw_values(draw: st.DrawFn, good: st.SearchStrategy[Pairs]) -> bytes | None:
    """One record value: mostly good, else each kind of bad, including values that are not one complete JSON
    value by themselves (halves of a record, two records, fragments) and would reshape a joined array."""
    kind = draw(st.sampled_from(["good"] * 6 + ["mutated"] * 6 + ["split", "two", "fragment", "bytes", "empty",
                                                                   "large", "padded", "truncated", "not_utf8"]))
    body = _obj(draw(mutated(good) if kind == "mutated" else good))
    if kind == "split":
        cut = draw(st.integers(0, len(body)))
        return draw(st.sampled_from([body[:cut], body[cut:]]))
    if kind == "two":
        return body + b"," + _obj(draw(good))
    if kind == "fragment":
        return draw(st.sampled_from(FRAGMENTS))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "empty":
        return draw(st.sampled_from([None, b""]))
    if kind == "truncated":
        return body[: draw(st.integers(1, max(len(body) - 1, 1)))]
    return {"large": body[:-1] + b',"pad":"' + b"x" * (MAX_MESSAGE_BYTES - len(body) - 8 + draw(st.integers(-1, 1)))
                     + b'"}',
            "padded": b" \r\n\t" + body + b"\n ", "not_utf8": body.replace(b'"c1"', b'"c\xff"')}.get(kind, body)


@st.composite
def batches(draw: st.DrawFn, good: st.SearchStrategy[Pairs]) -> tuple[list[bytes | None], list[int], int]:
    """A batch, each record's own timestamp (some records are ahead of it), one ``max_future_ms``."""
    values = draw(st.lists(raw_values(good), max_size=24))
    split = draw(st.booleans())
    if split:  # a record split in two adjacent values, the second bundled with a good record
        cut = draw(st.integers(0, len(values)))
        body = _obj(draw(good))
        half = draw(st.integers(1, len(body) - 1))
        values[cut:cut] = [body[:half], body[half:] + b"," + _obj(draw(good))]
    if draw(st.integers(0, 3)):  # mostly nothing is ahead of its record's timestamp
        return values, [T0 + 3 * HOUR] * len(values), HOUR
    now = draw(st.lists(st.one_of(st.integers(T0 - 2 * HOUR, T0 + 2 * HOUR), st.sampled_from([-1, 0, 2**62])),
                        min_size=len(values), max_size=len(values)))
    return values, now, draw(st.sampled_from([HOUR, HOUR, 0, -HOUR, 2**62, -(2**63), 2**70]))


Reference = Callable[[bytes | None, int, int], object]


def _assert_like_reference(cols: TxColumns | LabelColumns, values: Sequence[bytes | None], now: Sequence[int],
                           future: int, reference: Reference) -> None:
    want = [reference(v, t, future) for v, t in zip(values, now, strict=True)]
    assert cols.outcomes() == want
    assert cols.rejects == [(i, w) for i, w in enumerate(want) if isinstance(w, Reject)]
    assert cols.index.tolist() == [i for i, w in enumerate(want) if not isinstance(w, Reject)]
    assert [cols.row(j) for j in range(len(cols))] == [w for w in want if not isinstance(w, Reject)]
    assert all(type(x) is int for j in range(len(cols)) for x in cols.row(j) if not isinstance(x, str))
    assert all(rj.category in REASONS for _, rj in cols.rejects)


PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])


@PROPERTY
@given(batches(good_tx))
def test_transactions_equal_the_reference(batch: tuple[list[bytes | None], list[int], int]) -> None:
    values, now, future = batch
    _assert_like_reference(decode_transactions(values, now, future), values, now, future, decode_transaction)


@PROPERTY
@given(batches(good_label))
def test_labels_equal_the_reference(batch: tuple[list[bytes | None], list[int], int]) -> None:
    values, now, future = batch
    _assert_like_reference(decode_labels(values, now, future), values, now, future, decode_label)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=12))
def test_arbitrary_bytes_equal_the_reference(values: list[bytes]) -> None:
    now = [T0] * len(values)
    _assert_like_reference(decode_transactions(values, now), values, now, HOUR, decode_transaction)
    _assert_like_reference(decode_labels(values, now), values, now, HOUR, decode_label)


def _clean(n: int) -> tuple[list[bytes | None], list[int]]:
    return [transaction_value(f"tx{i}", T0 + i, f"c{i % 7}", f"t{i % 11}", 100 + i) for i in range(n)], [T0] * n


def test_a_clean_batch_decodes_to_columns() -> None:
    values, now = _clean(5)
    cols = decode_transactions(values, np.array(now, dtype=np.int64))
    assert len(cols) == 5 and cols.rejects == []
    assert cols.index.tolist() == [0, 1, 2, 3, 4] and cols.index.dtype == np.int64
    assert cols.tx_id == [f"tx{i}" for i in range(5)] and cols.customer_id[3] == "c3" and cols.terminal_id[4] == "t4"
    assert cols.ts.tolist() == [T0 + i for i in range(5)] and cols.cents.tolist() == [100, 101, 102, 103, 104]
    assert cols.row(2) == Tx("tx2", T0 + 2, "c2", "t2", 102)


def test_a_clean_label_batch_decodes_to_columns() -> None:
    values = [label_value(f"tx{i}", "c", f"t{i}", T0 + i, i % 2, T0 + 10 * i) for i in range(4)]
    cols = decode_labels(values, [T0 + HOUR] * 4)
    assert cols.rejects == [] and cols.is_fraud.tolist() == [0, 1, 0, 1]
    assert cols.reported_at.tolist() == [T0, T0 + 10, T0 + 20, T0 + 30]
    assert cols.outcomes()[3] == Label("tx3", T0 + 3, "c", "t3", 1, T0 + 30)


def test_an_empty_batch() -> None:
    for cols in (decode_transactions([], []), decode_labels([], np.zeros(0, dtype=np.int64))):
        assert len(cols) == 0 and cols.rejects == [] and cols.outcomes() == [] and cols.index.dtype == np.int64


def test_one_poison_record_among_good_ones_is_the_only_reject() -> None:
    values, now = _clean(9)
    values[4] = b'{"tx_id":"tx4","ts":true,"customer_id":"c","terminal_id":"t","amount":1}'
    cols = decode_transactions(values, now)
    assert cols.rejects == [(4, Reject("bad_type:ts", "ts must be an integer (epoch ms), got bool"))]
    assert cols.index.tolist() == [0, 1, 2, 3, 5, 6, 7, 8] and cols.tx_id[4] == "tx5" and cols.cents[4] == 105


@pytest.mark.parametrize(("extra", "reason"), [
    (b'"merchant":"shop"', None),                # extra fields are allowed (the reference decodes these)
    (b'"x":"\xff"', "not_utf8"),                 # msgspec would skip this unchecked
    (b'"x":1e400', "bad_json"),                  # and this
    (b'"amount":"1"', "bad_type:amount"),        # a duplicate key: the last one counts
    (b'"\\u0074s":1', "bad_ts"),                 # an escaped key is the same key
])
def test_what_msgspec_would_skip_is_the_reference_s(extra: bytes, reason: str | None) -> None:
    values, now = _clean(3)
    values[1] = cast_bytes(values[1])[:-1] + b"," + extra + b"}"
    got = decode_transactions(values, now).outcomes()
    assert got == [decode_transaction(v, T0) for v in values]
    assert (isinstance(got[1], Tx) if reason is None else isinstance(got[1], Reject) and got[1].reason == reason)


def test_records_with_extra_fields_are_accepted_in_input_order() -> None:
    """The reference accepts them (the structs forbid unknown fields); they merge with the fast rows."""
    values, now = _clean(6)
    for i in (0, 3, 4):
        values[i] = cast_bytes(values[i])[:-1] + b',"merchant":{"mcc":5411}}'
    values[2] = None
    cols = decode_transactions(values, now)
    assert cols.index.tolist() == [0, 1, 3, 4, 5] and cols.tx_id == ["tx0", "tx1", "tx3", "tx4", "tx5"]
    assert cols.cents.tolist() == [100, 101, 103, 104, 105] and cols.ts.tolist() == [T0, T0 + 1, T0 + 3, T0 + 4, T0 + 5]
    assert cols.outcomes() == [decode_transaction(v, T0) for v in values]


def test_values_that_would_reshape_the_joined_array_are_rejected() -> None:
    """Two values that are not JSON alone, joined with a comma, make an array of two good records (the first
    one's tx_id swallows the comma); a value of two records and one of a record's half make two elements."""
    good = cast_bytes(_clean(1)[0][0])
    a, b = b'{"tx_id":"a', b'b","ts":%d,"customer_id":"c","terminal_id":"t","amount":1}, ' % T0 + good
    assert len(orjson.loads(b"[" + b",".join([a, b]) + b"]")) == 2
    for values in ([a, b], [good, a, b, good], [good + b"," + good, good[:30]], [b"1,2", good], [good, b"]"]):
        cols = decode_transactions(values, [T0] * len(values))
        assert cols.outcomes() == [decode_transaction(v, T0) for v in values]
        assert all(isinstance(decode_transaction(values[i], T0), Reject) for i, _ in cols.rejects)


def _tx(**change: object) -> bytes:
    body = {"tx_id": "a", "ts": T0, "customer_id": "c", "terminal_id": "t", "amount": 1.25, **change}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def _label(**change: object) -> bytes:
    body = {"tx_id": "a", "customer_id": "c", "terminal_id": "t", "ts": T0, "is_fraud": 1, "reported_at": T0,
            **change}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


COMMON = [None, b"x" * (MAX_MESSAGE_BYTES + 1), b'{"tx_id":"\xff"}', b"{nope",
          b"[" * 1100 + b"]" * 1100, b"[1]"]
TX_BAD = [*COMMON, _tx(amount=...), _tx(ts="1"), _tx(tx_id="a b"), _tx(amount=0), _tx(amount=2e6), _tx(amount=1.001),
          _tx(ts=5), _tx(ts=T0 + 2 * HOUR), _tx(amount=True), _tx(customer_id=7), _tx(terminal_id="\u00e9")]
LABEL_BAD = [*COMMON, _label(is_fraud=...), _label(ts=1.5), _label(terminal_id=""), _label(is_fraud=2),
             _label(is_fraud=True), _label(reported_at=T0 - 1), _label(reported_at="x"), _label(ts=T0 + 2 * HOUR)]


COMMON_REASONS = ["empty", "too_large", "not_utf8", "bad_json", "too_deep", "not_object"]
TX_REASONS = [*COMMON_REASONS, "missing_field:amount", "bad_type:ts", "bad_id:tx_id", "bad_amount:not_positive",
              "bad_amount:too_large", "bad_amount:sub_cent", "bad_ts", "future_ts", "bad_type:amount",
              "bad_type:customer_id", "bad_id:terminal_id"]
LABEL_BAD_REASONS = [*COMMON_REASONS, "missing_field:is_fraud", "bad_type:ts", "bad_id:terminal_id", "bad_is_fraud",
                 "bad_is_fraud", "bad_reported_at", "bad_reported_at", "future_ts"]


@pytest.mark.parametrize(("bad", "reasons", "good", "decode", "reference"), [
    (TX_BAD, TX_REASONS, _tx(), decode_transactions, decode_transaction),
    (LABEL_BAD, LABEL_BAD_REASONS, _label(), decode_labels, decode_label),
])
def test_every_reason_among_good_records(bad: list[bytes | None], reasons: list[str], good: bytes,
                                         decode: Callable[..., object], reference: Reference) -> None:
    """Each reason the decoder can give, one record each, between good records: each is the reference's."""
    values = [v for b in bad for v in (good, b)] + [good]
    cols = decode(values, [T0] * len(values), HOUR)
    assert isinstance(cols, TxColumns | LabelColumns)
    _assert_like_reference(cols, values, [T0] * len(values), HOUR, reference)
    assert len(cols) == len(bad) + 1 and [i for i, _ in cols.rejects] == list(range(1, 2 * len(bad), 2))
    assert [rj.reason for _, rj in cols.rejects] == reasons


def test_now_ms_must_match_the_values() -> None:
    with pytest.raises(ValueError, match="now_ms"):
        decode_transactions([b"{}"], [T0, T0])


def cast_bytes(v: bytes | None) -> bytes:
    assert v is not None
    return v
