"""The demo's model monitor: one ``python -m workers.monitor`` on the demo's topics, and the wait for its windows.

It starts beside the workers and follows the scores and labels as they come; at the end the demo
waits until it has published the transaction days it should have (``watch.waiting_for``), then reads
``<prefix>-model-metrics`` back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ops.bench import kafka_io
from ops.bench.workers_run import die_with_parent, terminate
from ops.demo.watch import tx_days, waiting_for


@dataclass
class DemoMonitor:
    bootstrap: str
    topic: Callable[[str], str]     # the demo's topic name of a role
    bundles: Path                   # <bundles>/<model_version>/model.json: the calibrations
    logs: Path
    metrics_port: int               # 0: no HTTP server
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.logs / "monitor.log"

    def start(self) -> None:
        t = self.topic
        argv = [sys.executable, "-m", "workers.monitor", "--bootstrap", self.bootstrap,
                "--topic-transactions", t("transactions"), "--topic-scores", t("scores"), "--topic-labels", t("labels"),
                "--topic-shadow-scores", t("shadow_scores"),
                "--topic-metrics", t("model-metrics"),
                "--topic-metrics-dlq", t("model-metrics.dlq"), "--topic-lease", t("model-metrics.lease"),
                "--group-id", t("monitor"), "--monitor-id", t("monitor-0"), "--bundles", str(self.bundles),
                "--idle-ms", "2000", "--session-timeout-s", "6", "--metrics-port", str(self.metrics_port),
                "--data-dir", str(self.logs.parent / "monitor-data")]
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(die_with_parent(argv), stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            terminate(self.proc, timeout_s=15)

    def read(self) -> list[dict[str, Any]]:
        """The monitor's transaction days now on its topic (the last record of each key)."""
        try:
            records = kafka_io.read_records(self.bootstrap, self.topic("model-metrics"))
        except Exception:  # the monitor creates its topic when it becomes active: none yet is none published
            return []
        return tx_days((r.key, orjson.loads(r.value)) for r in records if r.value is not None)

    def wait(self, first_ms: int, clock_ms: int, timeout_s: float) -> tuple[list[dict[str, Any]], list[Any]]:
        """Poll until every day ``waiting_for`` names is in (or the timeout, or the monitor exits);
        (the days read, what is still missing)."""
        deadline = time.monotonic() + timeout_s
        while True:
            days = self.read()
            missing = waiting_for(days, first_ms, clock_ms)
            if not missing or time.monotonic() > deadline or not self.alive():
                return days, missing
            time.sleep(1.0)

    def tail(self, n: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
