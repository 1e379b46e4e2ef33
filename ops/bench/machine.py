"""What the numbers were measured on: machine, versions, command."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata

PACKAGES = ("aiokafka", "kafka-python", "faust-streaming", "onnxruntime-gpu", "onnxruntime", "lightgbm", "numpy",
            "orjson")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from ops.kafka.launcher import KAFKA_VERSION

    out["kafka (local broker)"] = KAFKA_VERSION
    return out


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=False)
        return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def describe() -> dict[str, object]:
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "versions": versions(),
        "commit": git_commit(),
        "command": " ".join(["python -m ops.bench", *sys.argv[1:]]),
    }
