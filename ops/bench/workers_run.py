"""Run fraudstream workers (``python -m workers`` subprocesses) against given topics."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER_OUTPUTS = ("flags", "scores", "stats", "dlq", "terminal_days")


# Run as ``python -c CODE <parent pid> <argv...>``: ask the kernel for SIGTERM when the parent dies
# (PR_SET_PDEATHSIG survives exec), then become ``python <argv...>`` in the same process.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)  # the parent died before the request\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def die_with_parent(argv: list[str]) -> list[str]:
    """``[sys.executable, *rest]`` -> the same command, sent SIGTERM by the kernel if this process dies
    (even by SIGKILL), so that no child outlives its driver. Linux only; elsewhere ``argv`` unchanged."""
    if not sys.platform.startswith("linux") or not argv or argv[0] != sys.executable:
        return argv
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv[1:]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc; NaN elsewhere or once it is gone)."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


@functools.cache
def worker_supports(option: str) -> bool:
    """Whether ``python -m workers`` has ``option`` (read from its parser, without starting a worker)."""
    from workers.config import build_parser

    return option in build_parser().format_help()


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 30) -> int:
    """SIGTERM (a clean stop: workers drain and commit), SIGKILL after ``timeout_s``; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


@dataclass
class WorkerSet:
    bootstrap: str
    bundle: Path
    tx_topic: str
    label_topic: str
    tag: str                      # fresh outputs and group per run
    logdir: Path
    batch_size: int = 1000
    max_wait_ms: float = 5.0
    partitions: int = 4
    provider: str = "cpu"
    stats_interval_s: float = 5.0
    metrics_ports: list[int] = field(default_factory=list)  # per worker; none given: 0 (off) where supported
    die_with_parent: bool = False  # the kernel stops the workers if this process dies (Linux)
    extra_args: list[str] = field(default_factory=list)  # more worker flags
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def scores_topic(self) -> str:
        return f"{self.tag}-scores"

    def args(self, worker_id: str, index: int = 0) -> list[str]:
        out = ["--bootstrap", self.bootstrap, "--bundle", str(self.bundle), "--group-id", f"{self.tag}-g",
               "--worker-id", worker_id, "--topic-transactions", self.tx_topic, "--topic-labels", self.label_topic,
               "--partitions", str(self.partitions), "--batch-size", str(self.batch_size),
               "--max-wait-ms", str(self.max_wait_ms), "--data-dir", str(self.logdir / "faust"),
               "--stats-interval", f"{self.stats_interval_s:g}", "--provider", self.provider]
        for name in WORKER_OUTPUTS:
            out += [f"--topic-{name.replace('_', '-')}", f"{self.tag}-{name}"]
        if worker_supports("--topic-shadow-scores"):  # the run's own, not the shared default
            out += ["--topic-shadow-scores", f"{self.tag}-shadow_scores"]
        if worker_supports("--metrics-port"):  # several workers on one host must not share the default port
            out += ["--metrics-port", str(self.metrics_ports[index] if index < len(self.metrics_ports) else 0)]
        return out + self.extra_args

    def log(self, i: int) -> Path:
        return self.logdir / f"{self.tag}-w{i}.log"

    def start(self, n: int) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            argv = [sys.executable, "-m", "workers", *self.args(f"{self.tag}-w{i}", i)]
            with open(self.log(i), "ab") as log:
                self.procs.append(subprocess.Popen(die_with_parent(argv) if self.die_with_parent else argv,
                                                   stdout=log, stderr=subprocess.STDOUT,
                                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}))

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of all the workers so far."""
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def wait_ready(self, timeout_s: float = 60) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(" ready in " in self.log(i).read_text(errors="replace") for i in range(len(self.procs))):
                return True
            if not self.alive():
                return False
            time.sleep(0.1)
        return False

    def wait_assigned(self, timeout_s: float = 60, settle_s: float = 1.0) -> bool:
        """Until every worker is ready and holds transactions partitions (the group has settled)."""
        deadline = time.monotonic() + timeout_s
        if not self.wait_ready(timeout_s):
            return False
        while time.monotonic() < deadline:
            logs = [self.log(i).read_text(errors="replace") for i in range(len(self.procs))]
            marker = "transactions partitions assigned: "
            if all(marker in text and not text.rsplit(marker, 1)[-1].startswith("[]") for text in logs):
                time.sleep(settle_s)
                return True
            if not self.alive():
                return False
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            terminate(p, timeout_s=30)
        self.procs.clear()

    def tail(self, lines: int = 20) -> str:
        return "\n".join("\n".join(self.log(i).read_text(errors="replace").splitlines()[-lines:])
                         for i in range(len(self.procs)))
