"""Customer histories of one transactions partition, as columns: windows for a whole batch at once.

Every customer has a slot (a dense integer) and a block of a shared set of entry arrays: its
transactions within the horizon, in the canonical order ``(ts, tx_id)``, with a running sum of
cents. A block is ``[head, head + length)`` inside ``[start, start + capacity)``; appending is a
write at its end, eviction moves its head, a block that runs out of room moves to the end of the
arrays with twice the room, and the arrays are compacted when more than half of them is dead.

``windows`` answers, for a batch of (slot, ts, tx_id) already in state, the count and the sum of
cents of each customer window — the customer's entries with ``ts`` in ``(ts - w, ts]`` at or
before the transaction in canonical order — by a binary search run on every row at once
(``_search``); ``schemas.features.customer_columns`` turns those into feature values with the
trainer's arithmetic. The per-record reference is ``schemas.features.CustomerHistory``
(``tests/workers/test_customers.py`` compares both).

Bounds: a slot is freed when its block empties (``evict``); dead entry space is reclaimed by
compaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from schemas.features import CUSTOMER_WINDOWS_MS, FAMILIAR_MS

I64 = npt.NDArray[np.int64]
_MIN_CAPACITY = 4
_ENTRY_ARRAYS = ("ts", "cents", "cum", "tx_id", "terminal")


def terminal_keys(terminals: Sequence[str]) -> I64:
    """Terminals as 64-bit keys (``hash``: stable within the process, as the store is), so that a window's
    entries compare with a row's terminal as integers. Two terminals of one card's 30 days would have to
    share a 64-bit hash to be counted together."""
    return np.fromiter(map(hash, terminals), dtype=np.int64, count=len(terminals))


class Windows(NamedTuple):
    """Per customer window the count and the sum of cents of each row's window, and the row's
    transactions at its terminal within ``FAMILIAR_MS``."""

    counts: list[I64]
    totals: list[I64]
    familiar: I64


class CustomerStore:
    compact_min = 4096  # entries below which the arrays are never compacted

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}
        self.names: list[str] = []      # slot -> customer ("" when free)
        self._free: list[int] = []
        n = 64
        self.start, self.cap = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.head, self.length = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self._used_slots = 0
        m = 1024
        self.ts, self.cents, self.cum = np.zeros(m, np.int64), np.zeros(m, np.int64), np.zeros(m, np.int64)
        self.tx_id = np.empty(m, dtype=object)
        self.terminal = np.zeros(m, np.int64)  # terminal_keys
        self._end = 0          # entries handed out from 0 (blocks, and space left behind by moved or freed ones)
        self._reserved = 0     # entries of the live slots' blocks
        self.live = 0          # live entries

    def __len__(self) -> int:
        return len(self.slots)

    def __contains__(self, customer: object) -> bool:
        return customer in self.slots

    # -- slots ---------------------------------------------------------------------------------

    def slot_of(self, customers: Sequence[str]) -> I64:
        """The slots of these customers, new ones allocated."""
        get = self.slots.get
        found = [get(c) for c in customers]
        if None in found:
            found = [s if s is not None else self._slot(c) for c, s in zip(customers, found, strict=True)]
        return np.asarray(found, dtype=np.int64)

    def _slot(self, customer: str) -> int:
        s = self.slots.get(customer)
        return s if s is not None else self._new_slot(customer)

    def _new_slot(self, customer: str) -> int:
        if self._free:
            s = self._free.pop()
        else:
            s = self._used_slots
            self._used_slots += 1
            self.names.append("")
            if s >= len(self.start):
                for name in ("start", "cap", "head", "length"):
                    old = getattr(self, name)
                    new = np.zeros(2 * len(old), np.int64)
                    new[:len(old)] = old
                    setattr(self, name, new)
        self.slots[customer] = s
        self.names[s] = customer
        self.start[s] = self.head[s] = self._alloc(_MIN_CAPACITY)
        self.cap[s], self.length[s] = _MIN_CAPACITY, 0
        self._reserved += _MIN_CAPACITY
        return s

    def _alloc(self, n: int) -> int:
        """Room for ``n`` entries at the end of the arrays (grown by doubling)."""
        if self._end + n > len(self.ts):
            size = max(2 * len(self.ts), self._end + n)
            for name in _ENTRY_ARRAYS:
                old = getattr(self, name)
                new = np.zeros(size, np.int64) if old.dtype != object else np.empty(size, dtype=object)
                new[:self._end] = old[:self._end]
                setattr(self, name, new)
        at = self._end
        self._end += n
        return at

    # -- adding --------------------------------------------------------------------------------

    def add(self, slots: I64, ts: I64, cents: I64, tx_ids: Sequence[str], terminals: Sequence[str]) -> None:
        """Add new transactions (none already in state), in any order."""
        if not len(slots):
            return
        self._maybe_compact()  # before the blocks' room is checked: compaction changes every block's room
        order = np.lexsort((np.asarray(tx_ids, dtype=object), ts, slots))
        slots, ts, cents = slots[order], ts[order], cents[order]
        ids = [tx_ids[i] for i in order.tolist()]
        terms = terminal_keys(terminals)[order]
        first = np.ones(len(slots), dtype=bool)
        first[1:] = slots[1:] != slots[:-1]
        appendable = self._appendable(slots, ts, ids, first)
        group = np.cumsum(first) - 1
        ok = appendable[group]
        if ok.any():
            keep = np.flatnonzero(ok).tolist()
            self._append(slots[ok], ts[ok], cents[ok], [ids[i] for i in keep], terms[ok], first[ok])
        for i in np.flatnonzero(~ok).tolist():
            self._insert(int(slots[i]), int(ts[i]), int(cents[i]), ids[i], int(terms[i]))

    def _appendable(self, slots: I64, ts: I64, ids: list[str], first: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Per slot group (sorted rows): whether its first row comes after the block's last entry."""
        heads = np.flatnonzero(first)
        s = slots[heads]
        n = self.length[s]
        last = np.maximum(self.head[s] + n - 1, 0)
        after = (n == 0) | (ts[heads] > self.ts[last])
        for j in np.flatnonzero((n > 0) & (ts[heads] == self.ts[last])).tolist():
            after[j] = ids[int(heads[j])] > self.tx_id[int(last[j])]
        return np.asarray(after, dtype=bool)

    def _append(self, slots: I64, ts: I64, cents: I64, ids: list[str], terms: I64,
                first: npt.NDArray[np.bool_]) -> None:
        """Sorted rows whose groups all go at their blocks' ends."""
        heads = np.flatnonzero(first)
        counts = np.diff(np.append(heads, len(slots)))
        grp = slots[heads]
        full = self.head[grp] + self.length[grp] + counts > self.start[grp] + self.cap[grp]
        for s, k in zip(grp[full].tolist(), counts[full].tolist(), strict=True):
            self._move(s, int(self.length[s]) + k)
        rank = np.arange(len(slots)) - np.repeat(heads, counts)
        pos = np.repeat(self.head[grp] + self.length[grp], counts) + rank
        base = np.where(self.length[grp] > 0, self.cum[np.maximum(self.head[grp] + self.length[grp] - 1, 0)], 0)
        running = np.cumsum(cents)
        before = np.repeat(running[heads] - cents[heads], counts)
        self.ts[pos], self.cents[pos], self.tx_id[pos], self.terminal[pos] = ts, cents, ids, terms
        self.cum[pos] = np.repeat(base, counts) + running - before
        self.length[grp] += counts
        self.live += len(slots)

    def _insert(self, s: int, ts: int, cents: int, tx_id: str, terminal: int) -> None:
        """One transaction into the middle of its block (it arrived late, within the lateness)."""
        if self.head[s] + self.length[s] + 1 > self.start[s] + self.cap[s]:
            self._move(s, int(self.length[s]) + 1)
        h, n = int(self.head[s]), int(self.length[s])
        block_ts, block_ids = self.ts[h:h + n], self.tx_id[h:h + n]
        i = int(np.searchsorted(block_ts, ts, side="left"))
        while i < n and block_ts[i] == ts and block_ids[i] < tx_id:
            i += 1
        at = h + i
        for arr in (self.ts, self.cents, self.tx_id, self.terminal):
            arr[at + 1:h + n + 1] = arr[at:h + n].copy()
        self.ts[at], self.cents[at], self.tx_id[at], self.terminal[at] = ts, cents, tx_id, terminal
        base = int(self.cum[at - 1]) if i > 0 else 0
        self.cum[at:h + n + 1] = base + np.cumsum(self.cents[at:h + n + 1])
        self.length[s] += 1
        self.live += 1

    def _move(self, s: int, need: int) -> None:
        """Give slot ``s`` a block with room for ``need`` entries (twice that), at the end of the arrays. Never
        compacts: a caller may hold positions of other blocks (``add`` compacts before it plans)."""
        h, n = int(self.head[s]), int(self.length[s])
        cap = max(2 * need, _MIN_CAPACITY)
        at = self._alloc(cap)
        for name in _ENTRY_ARRAYS:
            arr = getattr(self, name)
            arr[at:at + n] = arr[h:h + n]
        self._reserved += cap - int(self.cap[s])
        self.start[s] = self.head[s] = at
        self.cap[s] = cap

    # -- reading -------------------------------------------------------------------------------

    def windows(self, slots: I64, ts: I64, tx_ids: Sequence[str], terminals: Sequence[str]) -> Windows:
        """Per customer window (``CUSTOMER_WINDOWS_MS``), the count and the sum of cents of each row's
        window, and its familiarity with its terminal; every row must be in state."""
        lo, hi = self.head[slots], self.head[slots] + self.length[slots]
        end = self._search(lo, hi, ts)
        for i in np.flatnonzero(self.ts[end - 1] == ts).tolist():  # ties on ts: order by tx_id
            while self.tx_id[end[i] - 1] > tx_ids[i]:
                end[i] -= 1
        counts, totals = [], []
        for w in CUSTOMER_WINDOWS_MS:
            first = self._search(lo, end, ts - w)
            counts.append(end - first)
            totals.append(self.cum[end - 1] - self.cum[first] + self.cents[first])
        return Windows(counts, totals, self._familiar(self._search(lo, end, ts - FAMILIAR_MS), end, terminals))

    def _familiar(self, first: I64, end: I64, terminals: Sequence[str]) -> I64:
        """Per row, the entries in ``[first, end)`` at the row's terminal: every window's entries laid end
        to end and compared with their row's terminal in one go."""
        n = end - first
        bounds = np.cumsum(n)
        pos = np.repeat(first - (bounds - n), n) + np.arange(int(bounds[-1]) if len(n) else 0)
        same = self.terminal[pos] == np.repeat(terminal_keys(terminals), n)
        c = np.concatenate(([0], np.cumsum(same)))
        out: I64 = c[bounds] - c[bounds - n]
        return out

    def _search(self, lo: I64, hi: I64, value: I64) -> I64:
        """Per row, the first index in ``[lo, hi)`` whose ts is greater than ``value`` (``hi`` if none): a
        binary search over every row's block at once."""
        lo, hi = lo.copy(), hi.copy()
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi) >> 1
            right = open_ & (self.ts[np.where(open_, mid, 0)] <= value)
            lo = np.where(right, mid + 1, lo)
            hi = np.where(open_ & ~right, mid, hi)

    # -- eviction ------------------------------------------------------------------------------

    def evict(self, slots: I64, cut: I64) -> list[str]:
        """Drop the entries older than ``cut`` (per row; the latest cut per slot wins) and free the slots
        left empty; returns the customers forgotten."""
        if not len(slots):
            return []
        uniq, inv = np.unique(slots, return_inverse=True)
        cuts = np.full(len(uniq), np.iinfo(np.int64).min)
        np.maximum.at(cuts, inv, cut)
        lo, hi = self.head[uniq], self.head[uniq] + self.length[uniq]
        new_head = self._search(lo, hi, cuts - 1)
        self.live -= int((new_head - lo).sum())
        self.head[uniq], self.length[uniq] = new_head, hi - new_head
        empty = uniq[self.length[uniq] == 0]
        return self._free_slots(empty.tolist())

    def _free_slots(self, empty: list[int]) -> list[str]:
        names = [self.names[s] for s in empty]
        for s, c in zip(empty, names, strict=True):
            del self.slots[c]
            self.names[s] = ""
        self._free.extend(empty)
        self._reserved -= int(self.cap[empty].sum())
        self.cap[empty] = 0
        self._maybe_compact()
        return names

    def _maybe_compact(self) -> None:
        if self._end - self._reserved > self._reserved and self._end > self.compact_min:  # more left behind than used
            self.compact()

    def compact(self) -> None:
        """Copy the live entries of every block to the front, each with its capacity kept."""
        used = np.array(sorted(self.slots.values()), dtype=np.int64)
        caps = np.maximum(self.length[used] * 2, _MIN_CAPACITY)
        starts = np.concatenate(([0], np.cumsum(caps)[:-1])).astype(np.int64)
        n = self.length[used]
        src = np.repeat(self.head[used], n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
        dst = np.repeat(starts, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
        size = max(int(caps.sum()) * 2, 1024)
        for name in _ENTRY_ARRAYS:
            old = getattr(self, name)
            new = np.zeros(size, np.int64) if old.dtype != object else np.empty(size, dtype=object)
            new[dst] = old[src]
            setattr(self, name, new)
        self.start[used], self.head[used], self.cap[used] = starts, starts, caps
        self._end = self._reserved = int(caps.sum())

    def history(self, customer: str) -> list[tuple[int, str]]:
        """A customer's entries (ts, tx_id) in canonical order ([] when unknown)."""
        slot = self.slots.get(customer)
        if slot is None:
            return []
        h, n = int(self.head[slot]), int(self.length[slot])
        return list(zip(self.ts[h:h + n].tolist(), self.tx_id[h:h + n].tolist(), strict=True))

    def entries(self) -> int:
        return self.live
