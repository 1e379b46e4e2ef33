"""Watermarks: the slowest partition holds a stream back unless it is caught up and silent."""

from __future__ import annotations

from workers.monitor.watermarks import LABELS, SCORES, Watermarks

IDLE = 5.0


def marks() -> Watermarks:
    return Watermarks({SCORES: [0, 1], LABELS: [0]}, IDLE, now=0.0)


def test_min_over_partitions_of_the_max_seen_and_unknown_until_each_has_one() -> None:
    w = marks()
    w.observe(SCORES, 0, 500, now=1.0)
    w.observe(LABELS, 0, 100, now=1.0)
    assert w.current(1.0) == (None, 100)  # partition 1 has not been heard from: scores unknown
    w.observe(SCORES, 1, 300, now=1.0)
    w.observe(SCORES, 1, 200, now=1.0)  # an earlier record does not move its partition back
    assert w.current(1.0) == (300, 100)


def test_a_caught_up_silent_partition_stops_holding_its_stream_back() -> None:
    w = marks()
    w.observe(SCORES, 0, 500, now=1.0)
    w.observe(SCORES, 1, 300, now=1.0)
    w.observe(LABELS, 0, 400, now=1.0)
    w.set_caught_up(SCORES, 1, True)
    assert w.current(1.0 + IDLE - 0.1)[0] == 300  # not silent long enough
    assert w.silent(1.0 + IDLE) == [(SCORES, 0), (SCORES, 1), (LABELS, 0)]
    assert w.current(1.0 + IDLE)[0] == 500
    w.observe(SCORES, 1, 350, now=7.0)  # it speaks again: it holds back again, but marks never go back
    assert w.current(7.0)[0] == 500


def test_a_silent_stream_follows_the_other_and_two_silent_streams_meet_at_the_top() -> None:
    w = marks()
    w.observe(SCORES, 0, 500, now=1.0)
    w.observe(SCORES, 1, 600, now=1.0)
    w.set_caught_up(LABELS, 0, True)  # no label yet, and none waiting
    assert w.current(1.0 + IDLE) == (500, 500)
    w.observe(LABELS, 0, 900, now=10.0)
    w.set_caught_up(SCORES, 0, True)
    w.set_caught_up(SCORES, 1, True)
    assert w.current(10.0 + IDLE - 1) == (900, 900)  # scores silent: they stand at the labels' mark
    w.set_caught_up(LABELS, 0, True)
    w.observe(SCORES, 0, 1000, now=16.0)
    w.set_caught_up(SCORES, 0, True)
    assert w.current(30.0) == (1000, 1000)


def test_a_scores_partition_stands_at_its_slowest_source() -> None:
    """Two input partitions' scores interleaved in one scores partition, days apart (a backlog): the slow
    one holds the partition back until it is silent for SOURCE_IDLE_S while the partition goes on."""
    from workers.monitor.watermarks import SOURCE_IDLE_S

    w = marks()
    w.observe(SCORES, 0, 900, now=1.0, by_source={0: 900, 1: 200})
    w.observe(SCORES, 1, 950, now=1.0, by_source={0: 950, 1: 250})
    assert w.current(1.0)[0] == 200
    w.observe(SCORES, 0, 960, now=2.0, by_source={0: 960, 1: 400})
    w.observe(SCORES, 1, 970, now=2.0, by_source={1: 100})  # older than its source's largest: no step back
    assert w.current(2.0)[0] == 250
    w.observe(SCORES, 1, 980, now=2.0, by_source={1: 300})
    assert w.current(2.0)[0] == 300
    late = 2.0 + SOURCE_IDLE_S
    w.observe(SCORES, 0, 990, now=late, by_source={0: 990})
    w.observe(SCORES, 1, 995, now=late, by_source={0: 995})  # source 1 silent that long: it holds nothing
    assert w.current(late)[0] == 990


def test_an_expected_source_holds_its_partition_until_seen_or_silent_that_long() -> None:
    """The slowest worker's first scores may come long after the fastest one's: the input partitions are
    expected from the start, so none of them is late for having come last."""
    from workers.monitor.watermarks import SOURCE_IDLE_S

    w = marks()
    w.expect_sources(SCORES, [0, 1], now=0.0)
    w.observe(SCORES, 0, 900, now=1.0, by_source={0: 900})
    w.observe(SCORES, 1, 950, now=1.0, by_source={0: 950})
    assert w.current(1.0)[0] is None, "source 1 not seen yet"
    w.observe(SCORES, 0, 100, now=2.0, by_source={1: 100})
    assert w.current(2.0)[0] is None, "seen in partition 0 only"
    w.observe(SCORES, 1, 120, now=2.0, by_source={1: 120})
    assert w.current(2.0)[0] == 100
    other = marks()
    other.expect_sources(SCORES, [0, 1], now=0.0)
    other.observe(SCORES, 0, 900, now=SOURCE_IDLE_S, by_source={0: 900})
    other.observe(SCORES, 1, 950, now=SOURCE_IDLE_S, by_source={0: 950})
    assert other.current(SOURCE_IDLE_S)[0] == 900, "a source never seen stops holding after SOURCE_IDLE_S"
