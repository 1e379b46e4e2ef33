"""Prometheus's ``promtool``, found or fetched, to check the alerting rules without a Prometheus.

``python -m ops.promtool ARGS`` runs ``promtool ARGS``. It uses the ``promtool`` on the PATH, or
the copy under ``.state/tools/``, or fetches one: Debian's ``prometheus`` package is downloaded
with ``apt-get download`` (no root, no install, nothing started) and only ``promtool`` is
extracted from it. On a machine without apt it says what to install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".state" / "tools" / "promtool"
DEB_PACKAGE = "prometheus"


class PromtoolMissing(RuntimeError):
    pass


def _fetch_from_debian(dest: Path) -> Path:
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise PromtoolMissing("promtool is not on the PATH and this machine has no apt-get/dpkg-deb to fetch it: "
                              "install Prometheus's promtool (https://prometheus.io/download/) and retry")
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", DEB_PACKAGE], cwd=tmp, capture_output=True, text=True,
                             timeout=300, check=False)
        debs = list(Path(tmp).glob(f"{DEB_PACKAGE}_*.deb"))
        if got.returncode != 0 or not debs:
            raise PromtoolMissing(f"`apt-get download {DEB_PACKAGE}` failed ({got.stderr.strip()[-300:]}): "
                                  "run `apt-get update` or install promtool")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), f"{tmp}/x"], check=True, timeout=300)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f"{tmp}/x/usr/bin/promtool", dest)
    return dest


def promtool() -> Path:
    """The path of a working promtool; raises ``PromtoolMissing`` saying what to install."""
    on_path = shutil.which("promtool")
    if on_path:
        return Path(on_path)
    if CACHE.is_file():
        return CACHE
    return _fetch_from_debian(CACHE)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool()), *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          check=False)


def main() -> int:
    try:
        got = run(*sys.argv[1:])
    except PromtoolMissing as exc:
        print(f"ops.promtool: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(got.stdout)
    sys.stderr.write(got.stderr)
    return got.returncode


if __name__ == "__main__":
    sys.exit(main())
