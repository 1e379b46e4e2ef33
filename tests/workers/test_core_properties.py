"""Property: the columnar core (whole-batch decoding, partitions admitted in one go, customer windows
from the columnar store) decides exactly what the per-record reference decides.

Random batches over two partitions mix good transactions (customers from a small pool, event
times out of order within the lateness, some beyond it), malformed records of every kind,
duplicated tx ids at other offsets, redeliveries of the same offset and re-driven dead letters;
both cores see the same batches and must return the same closures, the same decisions (records,
dead letters with reason and detail, commit offsets) and bit-identical feature rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.features import DAY_MS, N_FEATURES, CustomerHistory, online_row
from workers import core as core_module
from workers.batch import Record, admit_batch_reference
from workers.config import Topics
from workers.core import Core, CoreConfig, Decision
from workers.state import TxPartition
from workers.terminals import TerminalTable

D0 = 17_700 * DAY_MS + 20 * 3_600_000
LATENESS = 60_000
BAD_VALUES = [b"", b"{broken", b"[1,2]", b'{"tx_id":"a"}', b'{"tx_id":1,"ts":1,"customer_id":"c","terminal_id":"t",'
              b'"amount":1}', b'{"tx_id":"a b","ts":%d,"customer_id":"c0","terminal_id":"t0","amount":1}' % D0,
              b'{"tx_id":"z","ts":%d,"customer_id":"c0","terminal_id":"t0","amount":-1}' % D0,
              b'{"tx_id":"z","ts":%d,"customer_id":"c0","terminal_id":"t0","amount":1.001}' % D0,
              b'{"tx_id":"z","ts":1.5,"customer_id":"c0","terminal_id":"t0","amount":1}', b"\xff\xfe", b"null",
              b'{"tx_id":"z","ts":true,"customer_id":"c0","terminal_id":"t0","amount":1}']

# One step: (kind, partition, customer, ts offset in ms, cents, bad value index)
step = st.tuples(st.sampled_from(["good", "good", "good", "bad", "dup", "again", "redrive", "late"]),
                 st.integers(0, 1), st.integers(0, 4), st.integers(0, 50_000), st.integers(1, 10**6),
                 st.integers(0, len(BAD_VALUES) - 1))


class Stream:
    """Turns steps into records, per partition in offset order, like a topic would hold them."""

    def __init__(self) -> None:
        self.offsets = [0, 0]
        self.clock = [D0, D0]
        self.sent: list[Record] = []
        self.n = 0

    def record(self, kind: str, p: int, customer: int, dt: int, cents: int, bad: int) -> Record:
        self.n += 1
        if kind in ("again", "dup", "redrive") and self.sent:
            old = self.sent[(customer * 7 + dt) % len(self.sent)]
            if kind == "again":  # a redelivery: the same record at the same offset
                return old
            self.offsets[old.partition] += 1
            offset = self.offsets[old.partition] - 1
            replay = old.offset if kind == "redrive" else None
            return Record(old.partition, offset, old.timestamp, old.key, old.value, 0, replay)
        offset = self.offsets[p]
        self.offsets[p] += 1
        if kind == "bad":
            return Record(p, offset, self.clock[p], b"c0", BAD_VALUES[bad], 0)
        self.clock[p] += dt
        ts = self.clock[p] - (dt % LATENESS if kind == "good" else LATENESS + 1 + dt)
        value = orjson.dumps({"tx_id": f"x{self.n}", "ts": ts, "customer_id": f"c{customer}",
                              "terminal_id": f"t{customer % 3}", "amount": cents / 100})
        rec = Record(p, offset, self.clock[p], f"c{customer}".encode(), value, 0)
        self.sent.append(rec)
        return rec


def make_core() -> Core:
    table = TerminalTable(tx_partitions=2, label_partitions=1)
    core = Core(CoreConfig(LATENESS, 3_600_000, 60.0, 0.5, "m", "w", Topics()), table)
    for p in (0, 1):
        core.install(p, TxPartition(p, LATENESS))
    table.tx_wm.update({0: D0 // DAY_MS + 10, 1: D0 // DAY_MS + 10})
    table.label_wm.update({0: D0 // DAY_MS + 20})
    return core


def summary(d: Decision | None) -> tuple[object, ...]:
    if d is None:
        return ()
    return ([(r.partition, r.offset) for r in d.records], [(r.offset, rj) for r, rj in d.dead],
            [(a.record.offset, a.tx, a.new) for a in d.ready], d.commits, d.min_ts)


def batches(steps: Sequence[tuple[str, int, int, int, int, int]], cuts: int) -> list[list[Record]]:
    stream = Stream()
    records = [stream.record(*s) for s in steps]
    size = max(len(records) // max(cuts, 1), 1)
    return [records[i:i + size] for i in range(0, len(records), size)]


class ReferenceRows:
    """Feature rows the per-record way: ``CustomerHistory`` per (partition, customer), fed every new
    admitted transaction, never evicted (eviction must not change a window), rows by ``online_row``."""

    def __init__(self) -> None:
        self.histories: dict[tuple[int, str], CustomerHistory] = {}
        self.fed: set[tuple[int, str]] = set()

    def feed(self, core: Core) -> None:
        for p, q in core.pending.items():
            for item in q:
                a = item.admitted
                if a is not None and a.new and (p, a.tx.tx_id) not in self.fed:
                    self.fed.add((p, a.tx.tx_id))
                    self.histories.setdefault((p, a.tx.customer_id), CustomerHistory()).add(a.tx.ts, a.tx.tx_id,
                                                                                             a.tx.cents,
                                                                                             a.tx.terminal_id)

    def rows(self, d: Decision, core: Core) -> npt.NDArray[np.float32]:
        return np.asarray([online_row(a.tx.ts, a.tx.tx_id, a.tx.cents,
                                      self.histories[(a.record.partition, a.tx.customer_id)], a.tx.terminal_id,
                                      core.table.windows) for a in d.ready], dtype=np.float32).reshape(-1, N_FEATURES)


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=120), st.integers(1, 5))
def test_whole_batch_decoding_decides_what_the_per_record_reference_decides(
        steps: list[tuple[str, int, int, int, int, int]], cuts: int) -> None:
    fast, slow, ref = make_core(), make_core(), ReferenceRows()
    mp = pytest.MonkeyPatch()
    for batch in batches(steps, cuts):
        closures = fast.admit(batch, now=0.0)
        with mp.context() as m:
            m.setattr(core_module, "admit_batch", admit_batch_reference)
            assert slow.admit(batch, now=0.0) == closures
        ref.feed(slow)
        a, b = fast.decide(now=0.0), slow.decide(now=0.0)
        assert summary(a) == summary(b)
        if a is not None and b is not None:
            assert a.rows.tobytes() == b.rows.tobytes()
            expected = ref.rows(b, slow)
            np.testing.assert_array_equal(a.rows, expected)
            assert a.rows.tobytes() == expected.tobytes()
