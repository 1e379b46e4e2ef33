"""The soak's pure pieces: the churned year, its chunks, and the flatness rule."""

from __future__ import annotations

import itertools

import numpy as np

from ops.soak.history import Churn, year_history
from ops.soak.run import RSS, Sample, Soak, chunks, csv, flat, growing
from schemas.features import DAY_MS


def test_cohorts_come_and_go_with_ids_of_their_own() -> None:
    h = year_history(Churn(days=200, cohort_days=60, every_days=50, customers=20, terminals=100))
    day = (h.ts - h.ts[0]) // DAY_MS
    assert (np.diff(h.ts) >= 0).all() and len(np.unique(h.tx_id)) == len(h)
    cohort = np.array([int(c[1:c.index("c", 1)]) for c in h.customer_id.tolist()])
    assert sorted(set(cohort.tolist())) == [0, 1, 2, 3]
    for k in range(4):  # each cohort lives within its own 60 days, then never comes back
        mine = day[cohort == k]
        assert mine.min() >= 50 * k - 1 and mine.max() < 50 * k + 60
    terminals = {t[: t.index("t")] for t in h.terminal_id.tolist()}
    assert terminals == {"k0", "k1", "k2", "k3"}


def test_chunks_cover_the_history_once_in_order() -> None:
    h = year_history(Churn(days=100, cohort_days=60, every_days=30, customers=10, terminals=50))
    parts = chunks(h, 30)
    assert parts[0][0] == 0 and parts[-1][1] == len(h)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert [end for _, _, end in parts][:3] == [30, 60, 90]


def test_flat_names_only_what_keeps_growing() -> None:
    samples = [Sample(d, 100.0, {"steady": 1000 + d % 7, "growing": 10 * d, "pending": d * 100})
               for d in range(30, 390, 30)]
    # Linear growth from day 0 is 1.5x over the last third: caught; 'pending' (a queue) is not state.
    assert flat(samples, after_day=240, factor=1.25) == {"growing": (2400, 3600)}


def test_growing_names_a_slow_leak_not_the_steady_ups_and_downs() -> None:
    noise = [0, 40, -30, 25, -10, 35, -20]
    samples = [Sample(d, 150.0 + d / 30, {"steady": 1000 + noise[i % 7], "leak": 20000 + 30 * d, "pending": d})
               for i, d in enumerate(range(30, 390, 30))]
    # +30/day on 20 000 (+0.15 %/day): inside the 1.25x of flat(), but it never goes down: a leak.
    assert flat(samples, after_day=240, factor=1.25) == {}
    assert set(growing(samples, after_day=180)) == {"leak"}
    samples[-1].state["steady"] = 5000  # the end of the stream is no steady state: left out of both
    samples[-1].final = True
    assert flat(samples, after_day=240, factor=1.25) == {} and set(growing(samples, after_day=180)) == {"leak"}


def test_rss_counts_as_a_structure() -> None:
    samples = [Sample(d, 100.0 if d <= 240 else 200.0, {"steady": 10}) for d in range(30, 390, 30)]
    assert flat(samples, after_day=240, factor=1.25) == {RSS: (100.0, 200.0)}


def test_csv_has_a_row_per_sample_and_a_column_per_structure() -> None:
    s = Soak([Sample(30, 120.5, {"a": 1, "b": 2}, 29.9, 100, peak_mib=130.0),
              Sample(60, 121.0, {"a": 3}, 59.9, 200, final=True, peak_mib=131.0)])
    rows = csv(s).splitlines()
    assert rows[0] == "day,event_day,scored,rss_mib,peak_mib,a,b,final"
    assert rows[1:] == ["30,29.900,100,120.5,130.0,1,2,0", "60,59.900,200,121.0,131.0,3,0,1"]


def test_flat_compares_with_the_second_third_when_asked() -> None:
    # A spike in the first months (a backfill) must not hide growth later on.
    samples = [Sample(d, 100.0, {"x": 5000 if d == 30 else 1000 + (600 if d > 240 else 0)}) for d in range(30, 390, 30)]
    assert flat(samples, after_day=240, factor=1.25) == {}
    assert flat(samples, after_day=240, factor=1.25, from_day=120) == {"x": (1000.0, 1600.0)}
