"""The terminal table's cells as columns: transactions and fraud changes per (terminal, day).

A terminal has a row (a dense slot), a day a column. ``count`` holds each cell's transactions,
``fraud`` the sum of every change of its fraud count, whatever the report slot that made it; the
changes themselves are kept by report slot (``changes``) so that a transaction on day ``d``, which
counts only the changes of slots ``<= d``, reads ``fraud`` less the changes of later slots.

``windows`` answers a whole batch at once: per distinct day of the batch, the 30 columns its
windows read gathered for the batch's terminals (one fancy index), the later slots' changes
subtracted, and the nested 1/7/30-day sums taken along the rows — the same numbers as
``schemas.features.nested_windows`` over per-cell dicts (``tests/workers/test_cells.py``).

Bounds: a day's column is cleared and reused once the day is below the table's floor; a report
slot's changes are dropped once no transaction still to be scored can be on a day before it; a
terminal whose row is empty (and that no kept change names) gives its row back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.features import FEEDBACK_DELAY_DAYS, TERMINAL_WINDOWS_DAYS

I64 = npt.NDArray[np.int64]
SPAN = max(TERMINAL_WINDOWS_DAYS)  # the days a transaction's terminal windows read: d - D - SPAN .. d - D - 1


class Cells:
    def __init__(self) -> None:
        self.slots: dict[str, int] = {}
        self._names: list[str] = []
        self._free: list[int] = []
        self.cols: dict[int, int] = {}
        self._free_cols: list[int] = []
        self.count = np.zeros((256, 64), np.int64)
        self.fraud = np.zeros((256, 64), np.int64)
        self.changes: dict[int, list[tuple[int, int, int]]] = {}  # report slot -> (terminal slot, day, change)
        self._table: I64 | None = None  # every kept change as rows (report slot, terminal slot, day, change)

    # -- writing -------------------------------------------------------------------------------

    def add_transactions(self, day: int, counts: dict[str, int], sign: int) -> None:
        rows, col = self._rows(list(counts)), self._col(day)  # both may grow the arrays: before indexing them
        self.count[rows, col] += sign * np.fromiter(counts.values(), np.int64, len(counts))

    def add_frauds(self, slot: int, changes: dict[str, dict[Any, int]], sign: int) -> None:
        kept = self.changes.setdefault(slot, [])
        self._table = None
        for terminal, per_day in changes.items():
            row = self._rows([terminal])[0]
            for day, change in per_day.items():
                d = int(day)
                col = self._col(d)
                self.fraud[row, col] += sign * change
                kept.append((int(row), d, sign * change))

    def _rows(self, terminals: list[str]) -> I64:
        get = self.slots.get
        found = [get(t) for t in terminals]
        if None in found:
            found = [s if s is not None else self._new_row(t) for t, s in zip(terminals, found, strict=True)]
        return np.asarray(found, dtype=np.int64)

    def _new_row(self, terminal: str) -> int:
        s = self.slots.get(terminal)
        if s is not None:
            return s
        if self._free:
            s = self._free.pop()
            self._names[s] = terminal
        else:
            s = len(self._names)
            self._names.append(terminal)
            if s >= len(self.count):
                self.count, self.fraud = (np.concatenate((a, np.zeros_like(a))) for a in (self.count, self.fraud))
        self.slots[terminal] = s
        return s

    def _col(self, day: int) -> int:
        c = self.cols.get(day)
        if c is not None:
            return c
        if self._free_cols:
            c = self._free_cols.pop()
        else:
            c = len(self.cols)
            if c >= self.count.shape[1]:
                self.count, self.fraud = (np.concatenate((a, np.zeros_like(a)), axis=1)
                                          for a in (self.count, self.fraud))
        self.cols[day] = c
        return c

    # -- reading -------------------------------------------------------------------------------

    def windows(self, terminals: Sequence[str], days: I64) -> tuple[I64, I64]:
        """[n, windows] transactions and frauds of each row's terminal windows (its day ``days[i]``)."""
        n = len(terminals)
        counts = np.zeros((n, len(TERMINAL_WINDOWS_DAYS)), np.int64)
        frauds = np.zeros_like(counts)
        get = self.slots.get
        rows = np.asarray([s if (s := get(t)) is not None else -1 for t in terminals], dtype=np.int64)
        for d in np.unique(days).tolist():
            sel = np.flatnonzero((days == d) & (rows >= 0))
            if len(sel):
                terms, inverse = np.unique(rows[sel], return_inverse=True)
                c, f = self._window_sums(terms, d)
                counts[sel], frauds[sel] = c[inverse], f[inverse]
        return counts, frauds

    def _window_sums(self, terms: I64, d: int) -> tuple[I64, I64]:
        first = d - FEEDBACK_DELAY_DAYS - SPAN
        cols = np.asarray([self.cols.get(first + k, -1) for k in range(SPAN)], dtype=np.int64)
        have = np.flatnonzero(cols >= 0)
        c = np.zeros((len(terms), SPAN), np.int64)
        f = np.zeros_like(c)
        if len(have):
            c[:, have] = self.count[np.ix_(terms, cols[have])]
            f[:, have] = self.fraud[np.ix_(terms, cols[have])]
            self._unsee(f, terms, d, first)
        return _nested(c), _nested(f)

    def _unsee(self, f: I64, terms: I64, d: int, first: int) -> None:
        """Take out of ``f`` the changes a transaction on day ``d`` does not count yet (report slot > d)."""
        table = self._changes_table()
        e = table[table[:, 0] > d]
        if not len(e):
            return
        k = np.searchsorted(terms, e[:, 1]).clip(0, len(terms) - 1)
        pos = e[:, 2] - first
        ok = (terms[k] == e[:, 1]) & (pos >= 0) & (pos < SPAN)
        np.subtract.at(f, (k[ok], pos[ok]), e[ok, 3])

    def _changes_table(self) -> I64:
        if self._table is None:
            rows = [(s, *e) for s, entries in self.changes.items() for e in entries]
            self._table = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        return self._table

    # -- dropping ------------------------------------------------------------------------------

    def drop_days_before(self, floor: int) -> None:
        for day in [d for d in self.cols if d < floor]:
            c = self.cols.pop(day)
            self.count[:, c] = 0
            self.fraud[:, c] = 0
            self._free_cols.append(c)
        self._free_rows()

    def drop_slots_through(self, slot: int) -> None:
        """Changes of report slots no transaction still to be scored reads before (its day >= the slot)."""
        for s in [s for s in self.changes if s <= slot]:
            del self.changes[s]
            self._table = None

    def _free_rows(self) -> None:
        used = len(self._names)
        named = {e[0] for entries in self.changes.values() for e in entries}
        empty = np.flatnonzero(~self.count[:used].any(axis=1) & ~self.fraud[:used].any(axis=1)).tolist()
        for s in empty:
            name = self._names[s]
            if name and s not in named:
                del self.slots[name]
                self._names[s] = ""
                self._free.append(s)

    def sizes(self) -> dict[str, int]:
        used = len(self._names)
        live = (self.count[:used] != 0) | (self.fraud[:used] != 0)
        return {"terminals": len(self.slots), "terminal_days": int(np.count_nonzero(live)),
                "terminal_fraud_changes": sum(len(e) for e in self.changes.values())}


def _nested(cells: I64) -> I64:
    """[m, SPAN] per-day values, oldest first -> [m, windows] sums over the last w days of each window."""
    return np.stack([cells[:, SPAN - w:].sum(axis=1) for w in TERMINAL_WINDOWS_DAYS], axis=1)
