"""The data contract's row rules, vectorised: one definition for the stream and for files.

``schemas.decode_batch`` applies them to a fetch of records (and equals the per-record
``schemas.validate`` record for record); ``trainer.data`` applies them to a user's Parquet files. So a
row the trainer learns from is a row the worker scores, and a row the worker dead-letters is one the
trainer refuses, with the same reason code (``tests/trainer/test_contract.py`` feeds the same hostile
rows to both).

- **ids**: 1 to ``ID_MAX_LEN`` characters, each printable ASCII other than space (``'!'`` .. ``'~'``).
- **event times**: integer epoch milliseconds in ``[TS_MIN_MS, TS_MAX_MS)`` and at most
  ``max_future_ms`` after "now" (a record's broker timestamp in the stream; the wall clock, or
  ``--now``, for files).
- **amounts**: currency units, ``0 < amount <= AMOUNT_MAX``, whole cents. A zero amount (a card
  verification) is refused like a negative one: the customer features divide by amounts. Whole
  cents is checked against an absolute tolerance of ``SUB_CENT_TOLERANCE`` cents, the same at every
  magnitude: a double's error on a cent amount up to the maximum is below 1e-8 cents, while a digit
  past the cents, down to the eighth decimal of a unit, is caught at 0.01 as at 999 999.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from schemas.messages import AMOUNT_MAX, TS_MAX_MS, TS_MIN_MS

Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
ID_FIRST_CHAR, ID_LAST_CHAR = 0x21, 0x7E  # '!' .. '~': printable ASCII without space
SUB_CENT_TOLERANCE = 1e-6  # cents
_SAFE_FUTURE = 2**62  # |max_future_ms| below this: ts - max_future_ms cannot overflow int64

# Amount reason codes (the part after ``bad_amount:``), in the order they are checked.
NOT_POSITIVE, TOO_LARGE, SUB_CENT = "not_positive", "too_large", "sub_cent"


def id_chars_ok(codes: npt.NDArray[np.unsignedinteger], ends: Ints) -> Mask:
    """Per id, whether every character is in ``'!'..'~'``: ``codes`` holds the ids' characters end to
    end (code points, or UTF-8 bytes: a byte of a non-ASCII character is >= 0x80 either way) and
    ``ends`` each id's end offset into it."""
    ok = np.ones(len(ends), dtype=bool)
    bad = np.flatnonzero((codes < ID_FIRST_CHAR) | (codes > ID_LAST_CHAR))
    ok[np.searchsorted(ends, bad, side="right")] = False
    return ok


def ts_ok(ts: Ints, now: Ints | int, max_future_ms: int) -> Mask:
    """``TS_MIN_MS <= ts < TS_MAX_MS`` and ``ts <= now + max_future_ms``, without int64 overflow."""
    ok = (ts >= TS_MIN_MS) & (ts < TS_MAX_MS)
    if abs(max_future_ms) < _SAFE_FUTURE:
        shifted: Ints = np.where(ok, ts, TS_MIN_MS) - max_future_ms
        not_ahead: Mask = shifted <= now
        return ok & not_ahead
    nows = np.broadcast_to(np.asarray(now, dtype=np.int64), ts.shape)
    late = (t <= n + max_future_ms for t, n in zip(ts.tolist(), nows.tolist(), strict=True))
    not_ahead_py: Mask = np.fromiter(late, dtype=bool, count=len(ts))
    return ok & not_ahead_py


def amount_checks(amount: npt.NDArray[np.float64]) -> tuple[Ints, Mask, Mask, Mask]:
    """Integer cents (0 where refused) and the rows refused as not positive (NaN too), too large
    (infinity too), and with a fraction of a cent — each row in at most one, in that order."""
    not_positive = ~(amount > 0)
    too_large = ~not_positive & ~(amount <= AMOUNT_MAX)
    in_range = ~not_positive & ~too_large
    a = np.where(in_range, amount, 1.0)  # no overflow warning from 1e306 * 100
    cents = np.rint(a * 100)
    sub_cent = in_range & ~(np.abs(a * 100 - cents) <= SUB_CENT_TOLERANCE)
    ok = in_range & ~sub_cent
    return np.where(ok, cents, 0).astype(np.int64), not_positive, too_large, sub_cent


def amount_cents(amount: npt.NDArray[np.float64]) -> tuple[Ints, Mask]:
    """Integer cents and which rows pass every amount rule."""
    cents, not_positive, too_large, sub_cent = amount_checks(amount)
    return cents, ~(not_positive | too_large | sub_cent)


def amount_reason(amount: float) -> str | None:
    """The reason code of one amount (None: good) — the scalar twin of ``amount_checks``."""
    if not amount > 0:
        return NOT_POSITIVE
    if not amount <= AMOUNT_MAX:
        return TOO_LARGE
    if not abs(amount * 100 - round(amount * 100)) <= SUB_CENT_TOLERANCE:
        return SUB_CENT
    return None
