"""``python -m ops.decodebench``: microseconds per record of the per-record reference
(``schemas.validate.decode_transaction`` / ``decode_label``) and of the batch decoder
(``schemas.decode_batch``) side by side, on the same simulated records in batches of a fetch's size,
clean and with a share of poison records. Runs interleaved, median quoted. Each batch result is
first checked equal to the reference's, record for record."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from ops.loadgen.replay import label_value, transaction_value
from schemas.decode_batch import LabelColumns, TxColumns, decode_labels, decode_transactions
from schemas.validate import Label, Reject, Tx, decode_label, decode_transaction
from trainer.simulate import SimConfig, labels_of, simulate

MAX_FUTURE_MS = 3_600_000
Batch = tuple[list[bytes | None], list[int]]  # values, each record's timestamp
Reference = Callable[[bytes | None, int, int], Tx | Label | Reject]
Decoder = Callable[[Sequence[bytes | None], Sequence[int], int], TxColumns | LabelColumns]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.decodebench", description=__doc__)
    p.add_argument("--records", type=int, default=100_000, help="records of each kind (default 100 000)")
    p.add_argument("--batch", type=int, default=1000, help="records a batch (default 1000)")
    p.add_argument("--runs", type=int, default=5, help="interleaved runs of each decoder (default 5)")
    p.add_argument("--poison", type=float, default=0.01, help="share of poison records (default 0.01)")
    return p


def records(n: int) -> tuple[Batch, Batch]:
    """``n`` transactions (timestamp: their event time) and ``n`` labels (timestamp: when reported),
    encoded as the load generator sends them."""
    days = 10
    while True:
        h = simulate(SimConfig(customers=1000, terminals=2000, days=days, seed=1))
        if len(h.ts) >= n:
            break
        days *= 2
    lab = labels_of(h)
    tx = [transaction_value(str(h.tx_id[i]), int(h.ts[i]), str(h.customer_id[i]), str(h.terminal_id[i]),
                            int(h.amount_cents[i])) for i in range(n)]
    labels = [label_value(str(lab.tx_id[i]), str(lab.customer_id[i]), str(lab.terminal_id[i]), int(lab.ts[i]),
                          int(lab.is_fraud[i]), int(lab.reported_at[i])) for i in range(n)]
    return (list(tx), h.ts[:n].tolist()), (list(labels), lab.reported_at[:n].tolist())


POISON: list[Callable[[bytes], bytes | None]] = [
    lambda v: v[: len(v) // 2],                          # bad_json (truncated)
    lambda v: v.replace(b'"ts":', b'"ts":"', 1),         # bad_json / bad_type
    lambda v: v.replace(b'_id":"', b'_id":"a b', 1),     # bad_id
    lambda v: v[:-1] + b',"ts":5}',                      # bad_ts (a duplicate key: the last counts)
    lambda v: None,                                      # empty
    lambda v: b"[1, 2]",                                 # not_object
]


def poisoned(batch: Batch, share: float, seed: int = 7) -> Batch:
    """The same records with ``share`` of them, at random places, replaced by each kind of poison in turn."""
    values, now = batch
    rng = np.random.default_rng(seed)
    out = list(values)
    for k, i in enumerate(rng.choice(len(values), size=round(len(values) * share), replace=False).tolist()):
        v = values[i]
        assert v is not None
        out[i] = POISON[k % len(POISON)](v)
    return out, now


def chunks(batch: Batch, size: int) -> list[Batch]:
    values, now = batch
    return [(values[i:i + size], now[i:i + size]) for i in range(0, len(values), size)]


def check(batches: list[Batch], decode: Decoder, reference: Reference) -> None:
    """The batch decoder's results are the reference's, record for record (else the timing means nothing)."""
    for values, now in batches:
        want = [reference(v, t, MAX_FUTURE_MS) for v, t in zip(values, now, strict=True)]
        assert decode(values, now, MAX_FUTURE_MS).outcomes() == want


def time_reference(batches: list[Batch], reference: Reference) -> float:
    t0 = time.perf_counter()
    for values, now in batches:
        [reference(v, t, MAX_FUTURE_MS) for v, t in zip(values, now, strict=True)]
    return time.perf_counter() - t0


def time_batch(batches: list[Batch], decode: Decoder) -> float:
    t0 = time.perf_counter()
    for values, now in batches:
        decode(values, now, MAX_FUTURE_MS)
    return time.perf_counter() - t0


def measure(batches: list[Batch], decode: Decoder, reference: Reference, runs: int) -> tuple[float, float]:
    """Median microseconds a record: reference, batch decoder (runs interleaved)."""
    check(batches, decode, reference)
    n = sum(len(v) for v, _ in batches)
    ref, fast = [], []
    for _ in range(runs):
        ref.append(time_reference(batches, reference) / n * 1e6)
        fast.append(time_batch(batches, decode) / n * 1e6)
    return statistics.median(ref), statistics.median(fast)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    tx, labels = records(a.records)
    print(f"{a.records} records of each kind, batches of {a.batch}, median of {a.runs} interleaved runs; "
          f"poison {a.poison:.1%}")
    print(f"{'records':<26} {'reference us/rec':>17} {'batch us/rec':>13} {'speed-up':>9}")
    cases: list[tuple[str, Batch, Decoder, Reference]] = [
        ("transactions, clean", tx, decode_transactions, decode_transaction),
        (f"transactions, {a.poison:.0%} poison", poisoned(tx, a.poison), decode_transactions, decode_transaction),
        ("labels, clean", labels, decode_labels, decode_label),
        (f"labels, {a.poison:.0%} poison", poisoned(labels, a.poison), decode_labels, decode_label),
    ]
    for name, batch, decode, reference in cases:
        ref, fast = measure(chunks(batch, a.batch), decode, reference, a.runs)
        print(f"{name:<26} {ref:>17.2f} {fast:>13.2f} {ref / fast:>8.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
