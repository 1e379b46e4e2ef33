"""Command-line options that fall back to environment variables, shown in ``--help``.

Every flag of every fraudstream command has an env variable, so ``--help`` documents the
deployment. A bad value fails at start with a message naming the flag, the variable and the fix.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from schemas.errors import ConfigError


def add(parser: argparse.ArgumentParser | Any, flag: str, env: str, default: Any, help: str,
        type: Callable[[str], Any] = str, shown: str | None = None, **kw: Any) -> None:
    """``parser.add_argument(flag)`` whose default comes from ``env`` when that is set.

    ``shown``: how ``--help`` (and the README's generated reference) states a default that depends
    on the host, e.g. ``<hostname>-<pid>``."""
    raw = os.environ.get(env)
    value = default
    if raw is not None and raw != "":
        try:
            value = type(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"environment variable {env}={raw!r} is not a valid {flag}: {exc}") from exc
    if shown is None:
        shown = "unset" if default is None else str(default)
    parser.add_argument(flag, type=type, default=value, help=f"{help} [env {env}; default {shown}]", **kw)


def flag(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise ValueError(f"must be a positive integer, got {n}")
    return n


def non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return n


def non_negative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise ValueError(f"must be >= 0, got {value}")
    return x
