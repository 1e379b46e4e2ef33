"""Progress display and the final summary (rich, on stderr so that stdout stays machine-readable)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops.loadgen.schedule import Schedule
from ops.loadgen.send import Progress as ProgressFn
from ops.loadgen.send import Summary

console = Console(stderr=True)


def _utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


@contextmanager
def live_progress(total: int) -> Iterator[ProgressFn]:
    columns = (TextColumn("transactions"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TextColumn("labels {task.fields[labels]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("send", total=total, rate="", labels=0)

        def update(n_tx: int, n_lab: int, elapsed: float) -> None:
            rate = f"{n_tx / elapsed:,.0f} tx/s" if elapsed > 0 else ""
            bar.update(task, completed=n_tx, rate=rate, labels=n_lab)

        yield update


@contextmanager
def live_mode_progress(history_records: int, live_total: int) -> Iterator[tuple[ProgressFn, ProgressFn]]:
    """``--live``: the history's records (transactions + labels), then the live phase's transactions."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TextColumn("labels {task.fields[labels]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        hist = bar.add_task("history (records)", total=history_records, rate="", labels=0)
        live = bar.add_task("live transactions", total=live_total, rate="", labels=0, start=False)

        def update_history(n_tx: int, n_lab: int, elapsed: float) -> None:
            rate = f"{(n_tx + n_lab) / elapsed:,.0f} msg/s" if elapsed > 0 else ""
            bar.update(hist, completed=n_tx + n_lab, rate=rate, labels=n_lab)

        def update_live(n_tx: int, n_lab: int, elapsed: float) -> None:
            if not bar.tasks[live].started:
                bar.start_task(live)
            rate = f"{n_tx / elapsed:,.0f} tx/s" if elapsed > 0 else ""
            bar.update(live, completed=n_tx, rate=rate, labels=n_lab)

        yield update_history, update_live


def print_summary(s: Summary, schedule: Schedule) -> None:
    t = Table(title="load generator: sent (acknowledged)")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("transactions", f"{s.transactions:,}")
    t.add_row("labels", f"{s.labels:,}")
    t.add_row("bytes (keys + values)", f"{s.bytes:,}")
    t.add_row("seconds (to last ack)" + (", live phase" if s.live is not None else ""), f"{s.seconds:.2f}")
    t.add_row("achieved tx/s", f"{s.tx_rate:,.0f}")
    t.add_row("achieved messages/s", f"{s.message_rate:,.0f}")
    if schedule.rate:
        t.add_row("target tx/s", f"{schedule.rate:,.0f}")
    for i, (step, rate) in enumerate(zip(schedule.steps, s.step_rates, strict=True)):
        t.add_row(f"step {i + 1}: target {step.rate:,.0f}/s for {step.seconds:g}s", f"{rate:,.0f}/s")
    if s.live is not None:
        v = s.live
        t.add_row("live: clock offset", f"{v['clock_offset_ms']:,} ms")
        t.add_row("live: history (sent first)", f"{v['history_transactions']:,} transactions + "
                  f"{v['history_labels']:,} labels, last ts {_utc(v['history_last_ts'])}")
        t.add_row("live: labels held back", f"{v['labels_held']:,} ({v['held_labels_sent']:,} sent when due)")
        t.add_row("live: labels of live transactions sent", f"{v['live_labels_sent']:,}")
        t.add_row("live: labels not due at the end (not sent)", f"{v['labels_not_due']:,}")
    console.print(t)
