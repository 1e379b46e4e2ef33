"""docker-compose.yml is valid (no engine needed: `docker-compose config` only parses)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def test_compose_file_validates(repo_root: Path) -> None:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is required for this test (Debian package docker-compose; .ci/run installs it)"
    done = subprocess.run([exe, "-f", str(repo_root / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "apache/kafka" in done.stdout
    assert "KAFKA_PROCESS_ROLES: broker,controller" in done.stdout
