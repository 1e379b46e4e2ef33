"""The join store: scores bucketed by their transaction's UTC day, with each transaction's latest label.

A ``DayBucket`` holds one UTC day of transactions: a dense index per tx_id, the latest word of the
transaction's labels (``word``), and per model version a columnar table of its scores. Dropping a
whole day at once is what bounds the state (``windows.MonitorCore`` decides when); nothing is
evicted entry by entry.

Latest word: a label is the integer ``2 * reported_at + is_fraud`` and a transaction keeps the
largest it has seen, so a later report replaces an earlier one, fraud wins a tie, and the order in
which labels arrive does not matter (``max`` is commutative). ``-1``: no label yet.

A transaction has one row per model version that scored it (a shadow model scores the same
transactions); a second score of the same transaction and version (a worker's redelivery after a
restart, which carries the same score) is a duplicate and keeps the first. Every score of a
transaction lands on one ``scores`` partition (its key is the tx_id), so "the first" is the first in
offset order, the same in every replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
Objs = npt.NDArray[np.object_]
NO_WORD = -1
MIN_CAPACITY = 64
A = TypeVar("A", bound=npt.NDArray[np.generic])


def _grown(a: A, need: int, fill: object = 0) -> A:
    """``a`` with room for ``need`` entries (capacity doubles, so appends cost O(1) amortised)."""
    if need <= len(a):
        return a
    out = np.full(max(need, 2 * len(a), MIN_CAPACITY), fill, dtype=a.dtype)
    out[: len(a)] = a
    return cast(A, out)


@dataclass
class VersionRows:
    """One model version's scores of one day, as columns of ``n`` rows; ``row_of_t`` maps a transaction
    of the bucket to its row (-1: this version did not score it)."""

    n: int = 0
    t: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    score: F64 = field(default_factory=lambda: np.zeros(0, np.float64))
    flag: Bool = field(default_factory=lambda: np.zeros(0, np.bool_))
    card: Objs = field(default_factory=lambda: np.zeros(0, object))
    row_of_t: I64 = field(default_factory=lambda: np.zeros(0, np.int64))

    def append(self, t: I64, score: F64, flag: Bool, card: Objs) -> None:
        n, m = self.n, self.n + len(t)
        self.t = _grown(self.t, m)
        self.score = _grown(self.score, m)
        self.flag = _grown(self.flag, m, False)
        self.card = _grown(self.card, m, None)
        self.t[n:m], self.score[n:m], self.flag[n:m], self.card[n:m] = t, score, flag, card
        self.row_of_t[t] = np.arange(n, m)
        self.n = m


@dataclass(frozen=True)
class Rows:
    """Rows of one window and version: score, flag, label (-1 unlabelled, else 0/1) and card (customer id)."""

    score: F64
    flag: Bool
    y: npt.NDArray[np.int8]
    card: Objs

    def __len__(self) -> int:
        return len(self.score)

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(np.concatenate([p.score for p in parts]), np.concatenate([p.flag for p in parts]),
                    np.concatenate([p.y for p in parts]), np.concatenate([p.card for p in parts]))


class DayBucket:
    """The transactions of one UTC day that have a score: their scores per version and their latest label."""

    def __init__(self, day: int) -> None:
        self.day = day
        self.index: dict[str, int] = {}
        self.word: I64 = np.zeros(0, np.int64)
        self.versions: dict[str, VersionRows] = {}

    def __len__(self) -> int:
        return len(self.index)

    def add_scores(self, version: str, tx_ids: list[str], score: F64, flag: Bool, card: Objs) -> int:
        """Add one version's scores; returns how many were duplicates (dropped, the first kept)."""
        index = self.index
        t = np.empty(len(tx_ids), np.int64)
        for i, tx in enumerate(tx_ids):
            j = index.get(tx)
            if j is None:
                j = index[tx] = len(index)
            t[i] = j
        self.word = _grown(self.word, len(index), NO_WORD)
        rows = self.versions.setdefault(version, VersionRows())
        for v in self.versions.values():  # every version maps every transaction of the bucket
            v.row_of_t = _grown(v.row_of_t, len(self.word), -1)
        first = np.zeros(len(t), np.bool_)
        first[np.unique(t, return_index=True)[1]] = True  # a tx twice in this batch: its first score
        keep = first & (rows.row_of_t[t] < 0)
        rows.append(t[keep], score[keep], flag[keep], card[keep])
        return int(len(t) - keep.sum())

    def label(self, tx_id: str, word: int) -> int | None:
        """Apply a label word to a scored transaction: its index, or None when no version scored it."""
        t = self.index.get(tx_id)
        if t is not None and word > self.word[t]:
            self.word[t] = word
        return t

    def rows(self, version: str, t: I64 | None = None) -> Rows | None:
        """The version's rows, all of them or those of transactions ``t``; None when it scored none."""
        v = self.versions.get(version)
        if v is None:
            return None
        r = np.arange(v.n) if t is None else v.row_of_t[t]
        r = r[r >= 0]
        if len(r) == 0:
            return None
        word = self.word[v.t[r]]
        y = np.where(word >= 0, word & 1, -1).astype(np.int8)
        return Rows(v.score[r], v.flag[r], y, v.card[r])

    def sizes(self) -> tuple[int, int]:
        """(score rows, labelled transactions)."""
        return sum(v.n for v in self.versions.values()), int((self.word[: len(self.index)] >= 0).sum())
