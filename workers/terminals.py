"""Terminal aggregates shared by every worker: final whole-day buckets from a compacted topic.

Records on the terminal-days topic (one partition, ``cleanup.policy=compact``), value JSON:

- ``tx/<p>/<day>``: ``{terminal_id: transactions}`` of transactions partition ``p`` on ``day``
- ``txwm/<p>``:     the last day closed by transactions partition ``p``
- ``lab/<q>/<day>``: ``{terminal_id: frauds}`` labelled on labels partition ``q`` for ``day``
- ``labwm/<q>``:    the last day closed by labels partition ``q``

Each value *replaces* the previous one for its key, so re-publishing (a restart, a rebalance) is
idempotent. A producer publishes a partition's day counts before the watermark that closes them,
on the same topic partition, so a reader that has seen ``txwm/p = d`` has every count of ``p`` up
to ``d``. A day is **final** when every transactions partition and every labels partition has
closed it; ``lookup`` is only asked about final days, so no score depends on scheduling.
"""

from __future__ import annotations

import orjson

from schemas.features import nested_windows

TX, TXWM, LAB, LABWM = "tx", "txwm", "lab", "labwm"


def partial_key(kind: str, partition: int, day: int) -> bytes:
    return f"{kind}/{partition}/{day}".encode()


def watermark_key(kind: str, partition: int) -> bytes:
    return f"{kind}/{partition}".encode()


class TerminalTable:
    """Final and pending day buckets per terminal: ``terminal -> day -> [transactions, frauds]``.

    Nothing is ever dropped: after a restart or a rebalance, a partition is re-scored from its last
    committed offset, which can be many event days behind the watermarks its previous owner had
    already published (admission runs ahead of commits by up to the backpressure bound), so no
    bound derived from finality is safe. (Trimming below the final day broke scores after a kill -9
    in the fault suite.) Memory grows with terminals x days: ~100 bytes per pair.
    """

    def __init__(self, tx_partitions: int, label_partitions: int) -> None:
        self.tx_partitions = tx_partitions
        self.label_partitions = label_partitions
        self._partials: dict[tuple[str, int, int], dict[str, int]] = {}
        self.tx_wm: dict[int, int] = {}
        self.label_wm: dict[int, int] = {}
        self._days: dict[str, dict[int, list[int]]] = {}

    def apply(self, key: bytes, value: bytes | None) -> None:
        parts = key.decode().split("/")
        if parts[0] in (TXWM, LABWM) and len(parts) == 2 and value is not None:
            wm = self.tx_wm if parts[0] == TXWM else self.label_wm
            wm[int(parts[1])] = max(wm.get(int(parts[1]), int(orjson.loads(value))), int(orjson.loads(value)))
            return
        if parts[0] not in (TX, LAB) or len(parts) != 3:
            return
        kind, p, day = parts[0], int(parts[1]), int(parts[2])
        col = 0 if kind == TX else 1
        days = self._days
        for terminal, n in self._partials.pop((kind, p, day), {}).items():
            days[terminal][day][col] -= n
        new: dict[str, int] = orjson.loads(value) if value else {}
        for terminal, n in new.items():
            cells = days.get(terminal)
            if cells is None:
                cells = days[terminal] = {}
            cell = cells.get(day)
            if cell is None:
                cell = cells[day] = [0, 0]
            cell[col] += n
        self._partials[(kind, p, day)] = new

    def tx_final_through(self) -> int | None:
        if len(self.tx_wm) < self.tx_partitions:
            return None
        return min(self.tx_wm[p] for p in range(self.tx_partitions))

    def final_through(self) -> int | None:
        """The last day that every transactions and labels partition has closed (None: not yet known)."""
        tx = self.tx_final_through()
        if tx is None or len(self.label_wm) < self.label_partitions:
            return None
        return min(tx, *(self.label_wm[q] for q in range(self.label_partitions)))

    def windows(self, terminal_id: str, hi: int) -> list[tuple[int, int]]:
        """(transactions, frauds) of each terminal window ending with day ``hi`` (asked of final days only)."""
        return nested_windows(self._days.get(terminal_id), hi)
