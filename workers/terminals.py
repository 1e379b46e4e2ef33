"""Terminal aggregates shared by every worker: final whole-day cells from a compacted topic.

Records on the terminal-days topic (one partition, ``cleanup.policy=compact``), value JSON:

- ``tx/<p>/<day>``:    ``{terminal_id: transactions}`` of transactions partition ``p`` on ``day``
- ``txwm/<p>``:        the last day closed by transactions partition ``p``
- ``txlow/<p>``:       the oldest event day partition ``p`` may still score (its oldest uncommitted
                       transaction, or what may still come): no score reads below it minus 37 days
- ``lbl/<q>/<slot>``:  ``{terminal_id: {day: change of frauds}}`` of the labels of labels partition
                       ``q`` reported in report slot ``slot`` (``schemas.features.report_slot``)
- ``lblwm/<q>``:       the last report slot closed by labels partition ``q``

Each value *replaces* the previous one for its key, so re-publishing (a restart, a rebalance) is
idempotent; a tombstone (no value) removes it. A producer publishes a partition's counts before the
watermark that closes them, on the same topic partition, so a reader that has seen ``txwm/p = d``
has every count of ``p`` up to ``d``. A transaction on day ``d`` is **ready** when every
transactions partition has closed ``d - 8`` (the newest day its windows read) and every labels
partition has closed slot ``d``; ``windows`` is only asked about ready days, so no score depends on
scheduling.

Bound: with ``L`` the oldest ``txlow`` of all transactions partitions, no transaction still to be
scored — after a kill -9 too, since ``txlow`` is published after the commit — reads a day before
``L - 37``: cells, record partials and keys below that floor are dropped (the owners of the
partitions then tombstone those keys). The cells are columns (``workers.cells``): terminals x days x
16 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from schemas.features import FEEDBACK_DELAY_DAYS, TERMINAL_HORIZON_DAYS
from workers.cells import Cells

TX, TXWM, TXLOW, LAB, LABWM = "tx", "txwm", "txlow", "lbl", "lblwm"
_MARKS = (TXWM, TXLOW, LABWM)


def partial_key(kind: str, partition: int, index: int) -> bytes:
    return f"{kind}/{partition}/{index}".encode()


def watermark_key(kind: str, partition: int) -> bytes:
    return f"{kind}/{partition}".encode()


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class TerminalTable:
    """Cells per terminal and day: ``terminal -> day -> [transactions, {slot: change of frauds} | None]``."""

    def __init__(self, tx_partitions: int, label_partitions: int) -> None:
        self.tx_partitions = tx_partitions
        self.label_partitions = label_partitions
        self._partials: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.marks: dict[str, dict[int, int]] = {k: {} for k in _MARKS}
        self.tx_wm, self.tx_low, self.label_wm = self.marks[TXWM], self.marks[TXLOW], self.marks[LABWM]
        self.cells = Cells()
        self.floor: int | None = None
        self.stale: set[tuple[str, int, int]] = set()  # keys dropped below the floor, to tombstone
        self.on_mark: Callable[[], None] | None = None  # called when a watermark moves: finality may advance

    def apply(self, key: bytes, value: bytes | None) -> None:
        parts = key.decode().split("/")
        if parts[0] in _MARKS and len(parts) == 2:
            if value is not None:
                marks, p, v = self.marks[parts[0]], int(parts[1]), int(orjson.loads(value))
                before = marks.get(p)
                marks[p] = max(marks.get(p, v), v)
                if parts[0] == TXLOW:
                    self._trim()
                elif marks[p] != before and self.on_mark is not None:
                    self.on_mark()
            return
        if parts[0] not in (TX, LAB) or len(parts) != 3:
            return  # another feature set's records (fs1 wrote "lab"), or a key we do not know
        ident = (parts[0], int(parts[1]), int(parts[2]))
        if value is not None and self.floor is not None and ident[2] < self.floor:
            self.stale.add(ident)  # a late re-publish of a dropped key: its owner tombstones it again
            return
        old = self._partials.pop(ident, None)
        if old is not None:
            self._add(ident, old, -1)
        self.stale.discard(ident)
        if value is None:
            return
        new = self._above_floor(ident, orjson.loads(value))
        if new:
            self._add(ident, new, 1)
            self._partials[ident] = new

    def _above_floor(self, ident: tuple[str, int, int], partial: dict[str, Any]) -> dict[str, Any]:
        floor = self.floor
        if floor is None:
            return partial
        if ident[0] == TX:
            return partial if ident[2] >= floor else {}
        out = {}
        for terminal, per_day in partial.items():
            kept = {d: n for d, n in per_day.items() if int(d) >= floor}
            if kept:
                out[terminal] = kept
        return out

    def _add(self, ident: tuple[str, int, int], partial: dict[str, Any], sign: int) -> None:
        kind, _, index = ident
        if kind == TX:
            self.cells.add_transactions(index, partial, sign)
        else:
            self.cells.add_frauds(index, partial, sign)

    def _trim(self) -> None:
        """Drop what no transaction still to be scored can read: days before the floor."""
        if len(self.tx_low) < self.tx_partitions:
            return
        floor = min(self.tx_low[p] for p in range(self.tx_partitions)) - TERMINAL_HORIZON_DAYS - 1
        if self.floor is not None and floor <= self.floor:
            return
        self.floor = floor
        # No transaction still to be scored is on a day before the oldest low: report slots up to it are
        # counted by every read from now on.
        self.cells.drop_slots_through(floor + TERMINAL_HORIZON_DAYS + 1)
        self.cells.drop_days_before(floor)
        for ident, partial in list(self._partials.items()):
            # A label slot's changes are of earlier days (a slot comes after its labels' days).
            if ident[2] < floor:
                del self._partials[ident]
                self.stale.add(ident)
            elif ident[0] == LAB:
                self._partials[ident] = self._above_floor(ident, partial)

    def take_stale(self, kind: str, partitions: set[int]) -> list[bytes]:
        """Keys of ``kind`` for ``partitions`` dropped below the floor, for their owner to tombstone."""
        mine = [k for k in self.stale if k[0] == kind and k[1] in partitions]
        self.stale.difference_update(mine)
        return [partial_key(*k) for k in mine]

    def tx_final_through(self) -> int | None:
        if len(self.tx_wm) < self.tx_partitions:
            return None
        return min(self.tx_wm[p] for p in range(self.tx_partitions))

    def label_final_through(self) -> int | None:
        if len(self.label_wm) < self.label_partitions:
            return None
        return min(self.label_wm[q] for q in range(self.label_partitions))

    def ready_through(self) -> int | None:
        """The last transaction day whose windows are final (None: not yet known)."""
        tx, lab = self.tx_final_through(), self.label_final_through()
        if tx is None or lab is None:
            return None
        return min(tx + FEEDBACK_DELAY_DAYS + 1, lab)

    def windows(self, terminal_id: str, d: int) -> list[tuple[int, int]]:
        """(transactions, frauds) of each terminal window of a transaction on day ``d`` (asked of ready days only)."""
        counts, frauds = self.cells.windows([terminal_id], np.asarray([d], dtype=np.int64))
        return list(zip(counts[0].tolist(), frauds[0].tolist(), strict=True))

    def windows_many(self, terminals: list[str], days: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64],
                                                                                     npt.NDArray[np.int64]]:
        """[n, windows] transactions and frauds of a batch's terminal windows (ready days only)."""
        return self.cells.windows(terminals, days)

    def sizes(self) -> dict[str, int]:
        return {**self.cells.sizes(), "terminal_records": len(self._partials)}
