"""Kafka's JVM perf tools, fetched once from Maven Central beside the broker's jars."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ops.kafka.launcher import KAFKA_VERSION, cache_dir, classpath, java_binary

POM = Path(__file__).with_name("pom.xml")


def tools_classpath() -> str:
    tools = cache_dir() / f"kafka-{KAFKA_VERSION}" / "tools"
    if not (tools / ".complete").exists():
        mvn = shutil.which("mvn")
        if not mvn:
            raise RuntimeError("Maven (mvn) not found: the JVM perf tools are fetched with it")
        tools.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
                               "-DincludeScope=runtime", f"-DoutputDirectory={tools}"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"Maven could not fetch kafka-tools {KAFKA_VERSION}:\n{done.stdout[-2000:]}")
        (tools / ".complete").write_text(KAFKA_VERSION)
    return f"{tools}/*:{classpath()}"


def _run(main: str, args: list[str]) -> str:
    done = subprocess.run([java_binary(), "-Xmx512m", "-cp", tools_classpath(), main, *args],
                          capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{main} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def produce(bootstrap: str, topic: str, records: int, size: int) -> float:
    """``kafka-producer-perf-test``, unthrottled, acks=all: records/s (it also fills ``topic``)."""
    out = _run("org.apache.kafka.tools.ProducerPerformance",
               ["--topic", topic, "--num-records", str(records), "--record-size", str(size), "--throughput", "-1",
                "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", "linger.ms=5",
                "batch.size=262144"])
    found = re.findall(r"([\d.]+) records/sec", out)
    return float(found[-1])


def consume(bootstrap: str, topic: str, records: int) -> float:
    """``kafka-consumer-perf-test``: messages/s."""
    out = _run("org.apache.kafka.tools.ConsumerPerformance",
               ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records), "--timeout", "60000"])
    header, row = [line for line in out.splitlines() if line.strip()][-2:]
    values = dict(zip([h.strip() for h in header.split(",")], [v.strip() for v in row.split(",")], strict=False))
    return float(values["nMsg.sec"])
