"""The README's configuration reference is generated from the parsers and must be current."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.configref import _parsers, render, rows

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_configuration_tables_are_current() -> None:
    text = README.read_text()
    for command in _parsers():
        assert f"<!-- config:{command}:start -->" in text, f"README has no generated table for {command}"
    assert render(text) == text, "README configuration tables are stale: run python -m ops.configref --write README.md"


@pytest.mark.parametrize("command", ["workers", "monitor", "loadgen"])
def test_every_deployment_setting_has_an_env_variable_and_a_stated_default(command: str) -> None:
    table = rows(_parsers()[command]())
    assert len(table) > 10
    missing = [flag for flag, env, default, _ in table if env == "-" or default == "-"]
    assert missing == []


def test_host_dependent_defaults_are_stated_not_captured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "elsewhere:1234")
    text = "\n".join(" ".join(r) for r in rows(_parsers()["workers"]()))
    assert "elsewhere:1234" not in text and "<hostname>-<pid>" in text
