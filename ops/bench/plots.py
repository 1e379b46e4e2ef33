"""PNG plots of a benchmark run (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def latency_cdf(per_load: Mapping[str, Sequence[float]], path: Path,
                title: str = "latency CDF per offered load") -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in per_load.items():
        v = np.sort(np.asarray(values, dtype=np.float64))
        if v.size:
            ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency, ms (output ts - input ts)")
    ax.set_ylabel("fraction of transactions")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path,
               title: str = "throughput over time (drain of the same input)",
               xlabel: str = "seconds from the first output", ylabel: str = "outputs/s") -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (t, rate) in series.items():
        ax.plot(t, rate, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(points: Sequence[Mapping[str, float]], path: Path) -> None:
    """Throughput per batch size, one line per max wait."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for wait in sorted({p["max_wait_ms"] for p in points}):
        pts = sorted((p["batch_size"], p["tx_per_s"]) for p in points if p["max_wait_ms"] == wait)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"max wait {wait:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("drain throughput, tx/s")
    ax.set_title("worker sweep: batch size x max wait (1 process)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def over_days(lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str, ylabel: str,
              hlines: Mapping[str, float] | None = None, vline: tuple[str, float] | None = None,
              log_y: bool = False, span: tuple[str, float, float] | None = None) -> None:
    """Values per day, one marked line each; dashed horizontal references (alert bounds, the training
    report's figure), a dotted vertical marker (when a drift began) and a shaded span (a cold start)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if span is not None:
        ax.axvspan(span[1], span[2], color="grey", alpha=0.12, label=span[0])
    for label, (x, y) in lines.items():
        ax.plot(x, y, marker="o", markersize=3, label=label)
    for (label, level), style in zip((hlines or {}).items(), ("--", "-.", ":"), strict=False):
        ax.axhline(level, color="grey", linestyle=style, linewidth=1, label=label)
    if vline is not None:
        ax.axvline(vline[1], color="red", linestyle=":", linewidth=1.5, label=vline[0])
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("day of the replayed history (UTC days from its first)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
