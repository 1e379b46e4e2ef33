"""``python -m ops.configref``: the README's configuration reference, generated from the parsers.

Every flag of every command is declared once, with its env variable and default, through
``schemas.settings.add``; this renders those declarations as markdown tables between
``<!-- config:<command>:start -->`` and ``<!-- config:<command>:end -->`` markers, so the README
cannot drift from the code (``tests/test_configref.py`` fails when it has). ``--write README.md``
rewrites the tables in place; without it the tables are printed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

_ENV = re.compile(r"\s*\[env (?P<env>[A-Z0-9_]+); default (?P<default>.*)\]\s*$", re.S)


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from ops.bench.__main__ import build_parser as bench
    from ops.loadgen.__main__ import build_parser as loadgen
    from trainer.cli import build_parser as trainer
    from workers.config import build_parser as workers
    from workers.monitor.config import build_parser as monitor

    return {"workers": workers, "monitor": monitor, "trainer": trainer, "loadgen": loadgen, "bench": bench}


def _actions(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{prefix}{name} ")
        elif action.option_strings and action.dest != "help":
            yield prefix, action


def rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str, str]]:
    """(flag, env variable, default, meaning) per option; an option in several subcommands once, with them."""
    seen: dict[str, list[str]] = {}
    out: dict[str, tuple[str, str, str, str]] = {}
    for prefix, action in _actions(parser):
        flag = max(action.option_strings, key=len)
        text = " ".join((action.help or "").split())
        m = _ENV.search(text)
        env, default = (m["env"], m["default"]) if m else ("", "")
        meaning = text[:m.start()] if m else text
        seen.setdefault(flag, []).append(prefix.strip())
        out.setdefault(flag, (flag, env, default, meaning.replace("|", "\\|")))
    table = []
    for flag, (f, env, default, meaning) in out.items():
        subs = [s for s in seen[flag] if s]
        where = f" ({', '.join(subs)})" if subs and len(subs) < _subcommand_count(parser) else ""
        table.append((f"`{f}`{where}", f"`{env}`" if env else "-", f"`{default}`" if default else "-", meaning))
    return table


def _subcommand_count(parser: argparse.ArgumentParser) -> int:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return len(action.choices)
    return 0


def table(command: str) -> str:
    lines = ["| flag | env variable | default | meaning |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(_parsers()[command]())]
    return "\n".join(lines)


def render(text: str) -> str:
    """``text`` with every marked table regenerated."""
    for command in _parsers():
        start, end = f"<!-- config:{command}:start -->", f"<!-- config:{command}:end -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = f"{head}{start}\n{table(command)}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.configref", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", type=Path, help="rewrite the marked tables in this file (e.g. README.md)")
    a = p.parse_args(argv)
    if a.write is None:
        for command in _parsers():
            print(f"## {command}\n\n{table(command)}\n")
        return 0
    a.write.write_text(render(a.write.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
