"""``python -m ops.docker.healthcheck``: exit 0 when a worker's health endpoint answers 200.

The image has no curl; compose's worker healthcheck runs this instead. The port is the worker's
own setting (``FRAUDSTREAM_METRICS_PORT``, default 9400), so one env variable moves both.
Exit 1 on any other status, a refused connection or a timeout, with one line saying which.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from schemas.settings import add


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.docker.healthcheck",
                                description="probe a fraudstream worker's health endpoint (exit 0 when it answers 200)")
    add(p, "--port", "FRAUDSTREAM_METRICS_PORT", 9400, "the worker's health/metrics port", int)
    p.add_argument("--host", default="127.0.0.1", help="the worker's address (default %(default)s)")
    p.add_argument("--path", default="/healthz", help="/healthz (alive) or /readyz (ready) (default %(default)s)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    url = f"http://{a.host}:{a.port}{a.path}"
    try:
        with urllib.request.urlopen(url, timeout=a.timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
