"""The alerting rules: valid, loaded by Prometheus, each one fires on its series, and documented.

``promtool`` (``ops/promtool.py``: on the PATH, or fetched from Debian's ``prometheus`` package)
checks the rules and the config that loads them, then runs the rule unit tests in
``ops/prometheus/alerts.test.yml``: every rule is driven by input series to fire, and kept quiet
by healthy ones. What promtool cannot know is checked here: each rule queries only metrics that
fraudstream exports, each has a unit test, and the README says what to do when it fires.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ops import promtool
from tests.test_compose import PROMETHEUS, ROOT, exported_sample_names

RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts.test.yml"
README = ROOT / "README.md"
PROM_FUNCTIONS_AND_LABELS = {"up"}


@cache
def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def exported_by_fraudstream() -> set[str]:
    """The workers' registry, plus the names the monitor's collector yields (it has no fixed registry)."""
    monitor = (ROOT / "workers" / "monitor" / "metrics.py").read_text()
    names = set(re.findall(r'"(fraudstream_[a-z_]+)"', monitor))
    counts = re.findall(r'"([a-z_]+)"', monitor.split("COUNTS", 1)[1][:400])
    names |= {f"fraudstream_monitor_{n}{total}" for n in counts for total in ("", "_total")}  # counters get _total
    return set(exported_sample_names()) | names


def test_promtool_checks_the_rules_and_the_config_that_loads_them() -> None:
    got = promtool.run("check", "rules", str(RULES))
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"SUCCESS: {len(rules())} rules found" in got.stdout
    got = promtool.run("check", "config", str(PROMETHEUS))
    assert got.returncode == 0, got.stdout + got.stderr
    assert "SUCCESS: 1 rule files found" in got.stdout


def test_every_rule_fires_in_its_unit_test() -> None:
    got = promtool.run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert got.returncode == 0, got.stdout + got.stderr
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    missing = {r["alert"] for r in rules()} - fired
    assert not missing, f"rules no unit test makes fire: {sorted(missing)}"


def test_rules_query_only_exported_metrics() -> None:
    exported = exported_by_fraudstream()
    for rule in rules():
        names = set(re.findall(r"\b(fraudstream_[a-z_]+)", rule["expr"]))
        assert names or "up{" in rule["expr"], rule["alert"]
        unknown = names - exported
        assert not unknown, f"{rule['alert']} queries metrics nothing exports: {sorted(unknown)}"


def test_every_rule_has_a_severity_a_summary_and_a_readme_entry() -> None:
    text = README.read_text()
    section = text[text.index("\n## Alerts"):]
    section = section[:section.index("\n## ", 4)]
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"] == "README.md#alerts"
        assert f"`{rule['alert']}`" in section, f"README's Alerts section does not document {rule['alert']}"


def test_compose_mounts_the_rules_beside_the_config() -> None:
    from tests.test_compose import _bind_mounts

    config = yaml.safe_load(PROMETHEUS.read_text())
    mounts = _bind_mounts("prometheus")
    config_dir = Path(next(k for k, v in mounts.items() if v == PROMETHEUS)).parent
    for name in config["rule_files"]:
        assert mounts[str(config_dir / name)] == PROMETHEUS.parent / name
