"""The terminal table's columnar cells (workers/cells.py): a whole batch's windows equal the same
windows asked one at a time, and dropping days frees columns and rows for reuse."""

from __future__ import annotations

import numpy as np

from workers.cells import Cells


def test_a_batch_of_mixed_days_reads_what_each_row_reads_alone() -> None:
    rng = np.random.default_rng(5)
    cells = Cells()
    for day in range(100, 160):
        cells.add_transactions(day, {f"t{t}": int(rng.integers(1, 5)) for t in range(40) if rng.random() < 0.5}, 1)
        cells.add_frauds(day + int(rng.integers(1, 9)), {f"t{int(rng.integers(0, 40))}": {day: 1}}, 1)
    terminals = [f"t{int(t)}" for t in rng.integers(0, 45, 300)]  # some unknown
    days = rng.integers(120, 175, 300).astype(np.int64)
    counts, frauds = cells.windows(terminals, days)
    for i in range(300):
        c, f = cells.windows([terminals[i]], days[i:i + 1])
        assert (c[0] == counts[i]).all() and (f[0] == frauds[i]).all()
    assert counts[:, 2].max() > 0 and frauds[:, 2].max() > 0
    assert (counts[:, 0] <= counts[:, 1]).all() and (counts[:, 1] <= counts[:, 2]).all()


def test_dropped_days_free_their_columns_and_empty_terminals_their_rows() -> None:
    cells = Cells()
    for day in range(0, 100):
        cells.add_transactions(day, {f"gone{day}": 1, "stays": 1}, 1)
    assert len(cells.cols) == 100 and len(cells.slots) == 101
    cells.drop_days_before(90)
    assert sorted(cells.cols) == list(range(90, 100))
    assert set(cells.slots) == {"stays"} | {f"gone{d}" for d in range(90, 100)}
    cells.add_transactions(200, {"new": 3}, 1)
    assert cells.count.shape[1] == 128 and cells.sizes()["terminal_days"] == 10 + 10 + 1
    counts, _ = cells.windows(["new", "stays"], np.asarray([208, 108], dtype=np.int64))
    assert counts.tolist() == [[3, 3, 3], [0, 6, 10]]  # day 108 reads days 71..100; 90..99 are kept
