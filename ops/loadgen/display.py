"""Progress display and the final summary (rich, on stderr so that stdout stays machine-readable)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops.loadgen.schedule import Schedule
from ops.loadgen.send import Progress as ProgressFn
from ops.loadgen.send import Summary

console = Console(stderr=True)


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


def print_summary(s: Summary, schedule: Schedule) -> None:
    t = Table(title="load generator: sent (acknowledged)")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("transactions", f"{s.transactions:,}")
    t.add_row("labels", f"{s.labels:,}")
    t.add_row("bytes (keys + values)", f"{s.bytes:,}")
    t.add_row("seconds (to last ack)", f"{s.seconds:.2f}")
    t.add_row("achieved tx/s", f"{s.tx_rate:,.0f}")
    t.add_row("achieved messages/s", f"{s.message_rate:,.0f}")
    if schedule.rate:
        t.add_row("target tx/s", f"{schedule.rate:,.0f}")
    for i, (step, rate) in enumerate(zip(schedule.steps, s.step_rates, strict=True)):
        t.add_row(f"step {i + 1}: target {step.rate:,.0f}/s for {step.seconds:g}s", f"{rate:,.0f}/s")
    console.print(t)
