"""The columnar customer histories (workers/customers.py) against the per-record reference
(schemas.features.CustomerHistory): same windows for random streams with ties, late arrivals
within the lateness, eviction, freed and reused slots and compaction."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.features import DAY_MS, CustomerHistory
from workers.customers import CustomerStore

T0 = 17_000 * DAY_MS

# (customer, ts step in ms (0: a tie), back-step (late arrival), cents, evict?)
event = st.tuples(st.integers(0, 6), st.sampled_from([0, 1, 3_600_000, DAY_MS, 5 * DAY_MS, 20 * DAY_MS]),
                  st.sampled_from([0, 0, 0, 1, 60_000]), st.integers(1, 10**7), st.booleans())


@settings(max_examples=80, deadline=None)
@given(st.lists(event, min_size=1, max_size=150), st.integers(1, 20))
def test_store_windows_equal_the_reference(events: list[tuple[int, int, int, int, bool]], batch: int) -> None:
    store, ref = CustomerStore(), {}
    clock = T0
    rows = []
    for n, (c, step, back, cents, _) in enumerate(events):
        clock += step
        rows.append((f"c{c}", clock - back, f"tx{(n * 7919) % 1000:04d}", cents, f"t{(n * 31) % 3}"))
    for k in range(0, len(rows), batch):
        part = rows[k:k + batch]
        customers = [r[0] for r in part]
        ts = np.array([r[1] for r in part], np.int64)
        cents = np.array([r[3] for r in part], np.int64)
        ids = [r[2] for r in part]
        terms = [r[4] for r in part]
        fresh = [i for i, r in enumerate(part) if (r[1], r[2]) not in set(ref.get(r[0], CustomerHistory()).keys)
                 and all((r[0], r[1], r[2]) != (q[0], q[1], q[2]) for q in part[:i])]
        slots = store.slot_of([customers[i] for i in fresh])
        store.add(slots, ts[fresh], cents[fresh], [ids[i] for i in fresh], [terms[i] for i in fresh])
        for i in fresh:
            ref.setdefault(customers[i], CustomerHistory()).add(int(ts[i]), ids[i], int(cents[i]), terms[i])
        wins = store.windows(store.slot_of(customers), ts, ids, terms)
        for i, (c, t, x, _, term) in enumerate(part):
            expected = ref[c].windows(t, x)
            assert [(int(cs[i]), int(tt[i])) for cs, tt in zip(wins.counts, wins.totals, strict=True)] == expected
            assert int(wins.familiar[i]) == ref[c].familiar(t, x, term)
        # Evict like the worker: after scoring, 30 days behind each row (events flagged evict only).
        ev = [i for i, e in enumerate(events[k:k + batch]) if e[4]]
        if ev:
            cut = ts[ev] - 30 * DAY_MS
            gone = store.evict(store.slot_of([customers[i] for i in ev]), cut)
            for i in ev:
                ref[customers[i]].evict_before(int(ts[i]) - 30 * DAY_MS)
            for c in gone:
                assert not ref[c].ts
                del ref[c]
    assert store.entries() == sum(len(h.ts) for h in ref.values())
    store.compact()
    assert set(store.slots) == set(ref)


def add_and_compare(store: CustomerStore, ref: dict[str, CustomerHistory], customers: list[str],
                    ts: npt.NDArray[np.int64], cents: npt.NDArray[np.int64], ids: list[str]) -> None:
    """Add a batch to both, then every row's windows must agree (terminals: a few, from the tx id)."""
    terms = [f"t{len(x) % 3}{x[-1]}" for x in ids]
    store.add(store.slot_of(customers), ts, cents, ids, terms)
    for c, t, x, a, term in zip(customers, ts.tolist(), ids, cents.tolist(), terms, strict=True):
        ref.setdefault(c, CustomerHistory()).add(t, x, a, term)
    wins = store.windows(store.slot_of(customers), ts, ids, terms)
    for i, (c, t, x) in enumerate(zip(customers, ts.tolist(), ids, strict=True)):
        got = [(int(cs[i]), int(tt[i])) for cs, tt in zip(wins.counts, wins.totals, strict=True)]
        assert got == ref[c].windows(t, x)
        assert int(wins.familiar[i]) == ref[c].familiar(t, x, terms[i])


def evict_both(store: CustomerStore, ref: dict[str, CustomerHistory], cut: int) -> None:
    """Evict everyone before ``cut``; the customers the store forgets are the ones the reference emptied."""
    everyone = sorted(store.slots)
    for c in store.evict(store.slot_of(everyone), np.full(len(everyone), cut, np.int64)):
        del ref[c]
    for h in ref.values():
        h.evict_before(cut)


def test_a_long_stream_moves_compacts_and_reuses_slots() -> None:
    rng = np.random.default_rng(3)
    store, ref = CustomerStore(), {}
    store.compact_min = 256
    compactions = 0
    compact = store.compact

    def counted() -> None:
        nonlocal compactions
        compactions += 1
        compact()

    store.compact = counted  # type: ignore[method-assign]
    clock = T0
    for b in range(300):
        n = 100
        customers = [f"c{int(c)}" for c in rng.integers(0, 400 if b < 150 else 40, n)]  # churn: most go quiet
        clock += int(rng.integers(1, DAY_MS // 2))
        ts = clock + rng.integers(-50_000, 0, n).astype(np.int64)
        cents = rng.integers(1, 10_000, n).astype(np.int64)
        ids = [f"t{b}-{i}" for i in range(n)]
        add_and_compare(store, ref, customers, ts, cents, ids)
        cut = clock - 31 * DAY_MS
        evict_both(store, ref, cut)
        assert all(h.ts for h in ref.values())
    assert set(store.slots) == set(ref)
    assert store.entries() == sum(len(h.ts) for h in ref.values())
    assert len(store.names) < 500  # freed slots were reused
    assert compactions > 0 and store._end <= 4 * store._reserved + 256


def test_a_compaction_never_leaves_a_block_without_room_for_its_batch() -> None:
    # Few customers, many transactions each per batch, churn: blocks grow by more than their length at once
    # right when the arrays get compacted (compaction changes every block's room).
    rng = np.random.default_rng(11)
    store, ref = CustomerStore(), {}
    store.compact_min = 0
    clock = T0
    for b in range(200):
        cohort = b // 20
        customers = [f"c{cohort}-{int(c)}" for c in rng.integers(0, int(rng.integers(1, 8)), 60)]
        clock += DAY_MS // 3
        ts = clock + np.arange(60, dtype=np.int64)
        ids = [f"t{b}-{i}" for i in range(60)]
        cents = rng.integers(1, 1000, 60).astype(np.int64)
        add_and_compare(store, ref, customers, ts, cents, ids)
        cut = clock - int(rng.integers(0, 2 * DAY_MS))
        evict_both(store, ref, cut)
