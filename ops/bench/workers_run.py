"""Run fraudstream workers (``python -m workers`` subprocesses) against given topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

WORKER_OUTPUTS = ("flags", "scores", "stats", "dlq", "terminal_days")


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
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def scores_topic(self) -> str:
        return f"{self.tag}-scores"

    def args(self, worker_id: str) -> list[str]:
        out = ["--bootstrap", self.bootstrap, "--bundle", str(self.bundle), "--group-id", f"{self.tag}-g",
               "--worker-id", worker_id, "--topic-transactions", self.tx_topic, "--topic-labels", self.label_topic,
               "--partitions", str(self.partitions), "--batch-size", str(self.batch_size),
               "--max-wait-ms", str(self.max_wait_ms), "--data-dir", str(self.logdir / "faust"),
               "--stats-interval", "5", "--provider", "cpu"]
        for name in WORKER_OUTPUTS:
            out += [f"--topic-{name.replace('_', '-')}", f"{self.tag}-{name}"]
        return out

    def log(self, i: int) -> Path:
        return self.logdir / f"{self.tag}-w{i}.log"

    def start(self, n: int) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            with open(self.log(i), "ab") as log:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "workers", *self.args(f"{self.tag}-w{i}")],
                                                   stdout=log, stderr=subprocess.STDOUT,
                                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}))

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

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def tail(self, lines: int = 20) -> str:
        return "\n".join("\n".join(self.log(i).read_text(errors="replace").splitlines()[-lines:])
                         for i in range(len(self.procs)))
