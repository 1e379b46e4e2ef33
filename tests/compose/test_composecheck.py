"""tests/compose/composecheck.py: interpolation, env files, YAML 1.2, the canonical form, and every check refusing."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.compose import composecheck
from tests.compose.composecheck import ComposeError, Interpolator, parse_env_file


def render(tmp_path: Path, text: str, **kwargs: Any) -> composecheck.Rendered:
    kwargs.setdefault("environ", {})
    return composecheck.render_text(textwrap.dedent(text), project_dir=tmp_path, **kwargs)


# --- interpolation -------------------------------------------------------------------------------

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(("template", "expected"), [
    ("plain", "plain"),
    ("$SET and ${SET}", "value and value"),
    ("$$", "$"),
    ("$$SET", "$SET"),
    ("a$$$SET", "a$value"),
    ("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", "value d d"),
    ("${SET-d} ${EMPTY-d} ${UNSET-d}", "value  d"),
    ("${SET:+alt} ${EMPTY:+alt} ${UNSET:+alt}", "alt  "),
    ("${SET+alt} ${EMPTY+alt} ${UNSET+alt}", "alt alt "),
    ("${SET:?no} ${EMPTY?no}", "value "),
    ("${UNSET:-${SET}}", "value"),
    ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
    ("${UNSET:-$$}", "$"),
    ("${UNSET:-}", ""),
    ("${SET}${SET}", "valuevalue"),
    ("${SET}-suffix", "value-suffix"),
    ("cost: $5, 100$, $-x", "cost: $5, 100$, $-x"),
    ("${set}", ""),  # names are case-sensitive
])
def test_interpolation(template: str, expected: str) -> None:
    assert Interpolator(ENV)(template) == expected


def test_unset_variables_are_blank_and_reported() -> None:
    interpolator = Interpolator(ENV)
    assert interpolator("a${UNSET}b$OTHER ${WITH_DEFAULT:-x}") == "ab x"
    assert interpolator.unset == {"UNSET", "OTHER"}


@pytest.mark.parametrize(("template", "error"), [
    ("${UNSET:?say why}", "required variable UNSET is missing a value: say why"),
    ("${EMPTY:?}", "required variable EMPTY is missing a value$"),
    ("${UNSET?${SET} needed}", "required variable UNSET is missing a value: value needed"),
    ("${SET", "invalid interpolation format"),
    ("${}", "invalid interpolation format"),
    ("${SET:x}", "invalid interpolation format"),
    ("${SET SET}", "invalid interpolation format"),
    ("${1SET}", "invalid interpolation format"),
    ("${UNSET:-${}}", "invalid interpolation format"),
])
def test_interpolation_errors(template: str, error: str) -> None:
    with pytest.raises(ComposeError, match=error):
        Interpolator(ENV)(template)


def test_interpolation_in_a_document_casts_and_names_the_field(tmp_path: Path) -> None:
    text = """
        services:
          web:
            image: "nginx:${TAG:-1.27}"
            init: "${INIT:-true}"
            deploy: {replicas: "${N:-3}"}
            environment: {KEY: "${UNSET_KEY}"}
    """
    rendered = render(tmp_path, text)
    web = rendered.config["services"]["web"]
    assert (web["image"], web["init"], web["deploy"]["replicas"]) == ("nginx:1.27", True, 3)
    assert web["environment"] == {"KEY": ""}
    assert rendered.warnings == ("the 'UNSET_KEY' variable is not set: a blank string",)
    with pytest.raises(ComposeError, match=r"services\.web\.deploy\.replicas: failed to cast 'x'"):
        render(tmp_path, text, environ={"N": "x"})
    with pytest.raises(ComposeError, match=r"services\.web\.init: failed to cast 'maybe'"):
        render(tmp_path, text, environ={"INIT": "maybe"})
    with pytest.raises(ComposeError, match=r"services\.web\.image: invalid interpolation format"):
        render(tmp_path, text.replace("${TAG:-1.27}", "${TAG:1.27}"))


# --- env files -----------------------------------------------------------------------------------


def test_env_file() -> None:
    text = textwrap.dedent("""\
        # a comment
        A=1
        export B = two words  # a comment
        C='single ${A} $$ #'
        D="double ${A}\\n\\"q\\" \\$A"
        E=${A}-${FROM_ENV}
        F: colon
        G=
        FROM_ENV
        NOT_IN_ENV
    """)
    assert parse_env_file(text, {"FROM_ENV": "env"}) == {
        "A": "1", "B": "two words", "C": "single ${A} $$ #", "D": 'double 1\n"q" $A', "E": "1-env", "F": "colon",
        "G": "", "FROM_ENV": "env"}


@pytest.mark.parametrize("line", ["A B=1", "A='open", "=x", 'A="open'])
def test_env_file_errors(line: str) -> None:
    with pytest.raises(ComposeError, match="env file line 1"):
        parse_env_file(line, {})


def test_project_env_file_and_precedence(tmp_path: Path) -> None:
    text = """
        services:
          web: {image: "nginx:${TAG}", environment: {MODE: "${MODE:-dev}"}}
    """
    (tmp_path / ".env").write_text("TAG=1.27\nMODE=staging\n")
    web = render(tmp_path, text, environ={"MODE": "prod"}).config["services"]["web"]
    assert (web["image"], web["environment"]["MODE"]) == ("nginx:1.27", "prod")
    web = render(tmp_path, text, env_files=[]).config["services"]["web"]
    assert (web["image"], web["environment"]["MODE"]) == ("nginx:", "dev")
    with pytest.raises(ComposeError, match=r"env file .*missing\.env not found"):
        render(tmp_path, text, env_files=[tmp_path / "missing.env"])


# --- YAML 1.2 ------------------------------------------------------------------------------------


def test_yaml_1_2_scalars() -> None:
    doc = composecheck.load_yaml("a: no\nb: on\nc: 22:22\nd: 2024-01-01\ne: 0o17\nf: 017\ng: 1.5\nh: ~\ni: True\n")
    assert doc == {"a": "no", "b": "on", "c": "22:22", "d": "2024-01-01", "e": 15, "f": 17, "g": 1.5, "h": None,
                   "i": True}


def test_yaml_merge_keys_and_duplicates() -> None:
    doc = composecheck.load_yaml("x: &x {a: 1, b: 2}\ny: &y {b: 3, c: 4}\nz:\n  <<: [*x, *y]\n  a: 0\n")
    assert doc["z"] == {"a": 0, "b": 2, "c": 4}
    with pytest.raises(ComposeError, match="line 3: mapping key 'a' already defined"):
        composecheck.load_yaml("s:\n  a: 1\n  a: 2\n")
    with pytest.raises(ComposeError, match="not YAML"):
        composecheck.load_yaml("a: [1, 2\n")


# --- the canonical form --------------------------------------------------------------------------


def test_canonical_form(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app.env").write_text("FROM_FILE=1\nBOTH=file\n")
    text = """
        services:
          app:
            build: ./app
            env_file: app.env
            environment: [BOTH=inline, "PORT=8080", FROM_HOST, NOT_ON_HOST]
            depends_on: [db]
            networks: [default, back]
            ports: ["8080:80", "127.0.0.1:9000-9001:9000-9001/udp", 5000]
            expose: [9400]
            volumes: ["./data:/data:ro,z", "cache:/cache", /anonymous]
            healthcheck: {test: "curl -f localhost", interval: 1m30s}
          db:
            image: postgres:17
            volumes: [{type: bind, source: ., target: /src}]
        networks: {back: null}
        volumes: {cache: null}
    """
    config = render(tmp_path, text, environ={"FROM_HOST": "h"}).config
    app = config["services"]["app"]
    assert app["build"] == {"context": str(tmp_path / "app")}
    assert app["environment"] == {"FROM_FILE": "1", "BOTH": "inline", "PORT": "8080", "FROM_HOST": "h",
                                  "NOT_ON_HOST": None}
    assert app["depends_on"] == {"db": {"condition": "service_started", "required": True}}
    assert app["networks"] == {"default": None, "back": None}
    assert app["ports"] == [
        {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"},
        {"mode": "ingress", "target": 9000, "published": "9000", "protocol": "udp", "host_ip": "127.0.0.1"},
        {"mode": "ingress", "target": 9001, "published": "9001", "protocol": "udp", "host_ip": "127.0.0.1"},
        {"mode": "ingress", "target": 5000, "protocol": "tcp"},
    ]
    assert app["expose"] == ["9400"]
    assert app["volumes"] == [
        {"type": "bind", "source": str(tmp_path / "data"), "target": "/data", "read_only": True,
         "bind": {"selinux": "z"}},
        {"type": "volume", "source": "cache", "target": "/cache"},
        {"type": "volume", "target": "/anonymous"},
    ]
    assert app["healthcheck"]["test"] == ["CMD-SHELL", "curl -f localhost"]
    assert config["services"]["db"]["volumes"][0]["source"] == str(tmp_path)
    assert config["networks"] == {"back": {}} and config["volumes"] == {"cache": {}}


# --- profiles ------------------------------------------------------------------------------------

PROFILED = """
    services:
      app: {image: "app:1"}
      debug: {image: "debug:1", profiles: [debug, all], depends_on: [app]}
      extra: {image: "extra:1", profiles: [all]}
      needs-debug:
        image: "n:1"
        profiles: [tools]
        depends_on: {debug: {condition: service_started}}
      maybe-debug:
        image: "m:1"
        depends_on: {debug: {condition: service_started, required: false}}
"""


@pytest.mark.parametrize(("profiles", "active"), [
    ((), {"app", "maybe-debug"}),
    (("debug",), {"app", "maybe-debug", "debug"}),
    (("all",), {"app", "maybe-debug", "debug", "extra"}),
    (("tools", "debug"), {"app", "maybe-debug", "debug", "needs-debug"}),
    (("*",), {"app", "maybe-debug", "debug", "extra", "needs-debug"}),
])
def test_profiles(tmp_path: Path, profiles: tuple[str, ...], active: set[str]) -> None:
    rendered = render(tmp_path, PROFILED, profiles=profiles)
    assert set(rendered.config["services"]) == active
    assert rendered.disabled == {"app", "maybe-debug", "debug", "extra", "needs-debug"} - active
    assert rendered.profiles == {"debug", "all", "tools"}


def test_profiles_from_the_environment_and_a_required_disabled_dependency(tmp_path: Path) -> None:
    rendered = render(tmp_path, PROFILED, environ={"COMPOSE_PROFILES": "all, debug"})
    assert set(rendered.config["services"]) == {"app", "maybe-debug", "debug", "extra"}
    with pytest.raises(ComposeError, match=r"'needs-debug' depends on 'debug', which its profiles \['debug', 'all'\]"):
        render(tmp_path, PROFILED, profiles=["tools"])


# --- every check refuses -------------------------------------------------------------------------

BROKEN = {
    "unknown key": ("web: {image: 'a:1', replica: 2}", r"services\.web: 'replica' does not match any of the regexes"),
    "wrong type": ("web: {image: 'a:1', ports: 8080}", r"services\.web\.ports: 8080 is not of type 'array'"),
    "bad condition": ("web: {image: 'a:1', depends_on: {db: {condition: healthy}}}\n  db: {image: 'b:1'}",
                      r"services\.web\.depends_on\.db\.condition: 'healthy' is not one of"),
    "bad service name": ("'we b': {image: 'a:1'}", "does not match any of the regexes"),
    "no image": ("web: {command: [sh]}", "services.web: has neither an image nor a build context"),
    "missing context": ("web: {build: ./nowhere}", r"services\.web\.build: the context .*nowhere is not a directory"),
    "missing dependency": ("web: {image: 'a:1', depends_on: [db]}", "'web' depends on undefined service 'db'"),
    "cycle": ("a: {image: 'a:1', depends_on: [b]}\n  b: {image: 'b:1', depends_on: [c]}\n"
              "  c: {image: 'c:1', depends_on: [a]}", "dependency cycle: a -> b -> c -> a"),
    "healthy, no healthcheck": ("web: {image: 'a:1', depends_on: {db: {condition: service_healthy}}}\n"
                                "  db: {image: 'b:1'}", "'web' waits for 'db' to be healthy, but 'db' has no"),
    "healthy, healthcheck off": ("web: {image: 'a:1', depends_on: {db: {condition: service_healthy}}}\n"
                                 "  db: {image: 'b:1', healthcheck: {disable: true}}", "'db' has no healthcheck"),
    "healthcheck prefix": ("web: {image: 'a:1', healthcheck: {test: [curl, x]}}",
                           'healthcheck.test must start with "CMD", "CMD-SHELL" or "NONE"'),
    "bad duration": ("web: {image: 'a:1', stop_grace_period: 30}", r"stop_grace_period: 30 is not of type 'string'"),
    "bad duration text": ("web: {image: 'a:1', healthcheck: {test: [NONE], timeout: 5 s}}",
                          r"services\.web\.healthcheck\.timeout: '5 s' is not a duration"),
    "undeclared volume": ("web: {image: 'a:1', volumes: ['data:/data']}", "refers to undefined volume data"),
    "bad volume mode": ("web: {image: 'a:1', volumes: ['./x:/x:readonly']}", r"unknown volume mode \['readonly'\]"),
    "ro and rw": ("web: {image: 'a:1', volumes: ['./x:/x:ro,rw']}", "both ro and rw"),
    "relative target": ("web: {image: 'a:1', volumes: ['./x:x']}", "the target 'x' is not an absolute path"),
    "too many colons": ("web: {image: 'a:1', volumes: ['./x:/x:ro:z']}", "invalid volume"),
    "two mounts, one target": ("web: {image: 'a:1', volumes: ['./x:/x', './y:/x']}", "target /x already mounted"),
    "undeclared network": ("web: {image: 'a:1', networks: [back]}", "refers to undefined network back"),
    "network_mode and networks": ("web: {image: 'a:1', network_mode: host, networks: [default]}",
                                  "network_mode and networks are mutually exclusive"),
    "undeclared secret": ("web: {image: 'a:1', secrets: [key]}", "refers to undefined secret key"),
    "bad port": ("web: {image: 'a:1', ports: ['80:http']}", r"services\.web\.ports\[0\]: invalid port"),
    "port out of range": ("web: {image: 'a:1', ports: ['70000:80']}", "port number out of range"),
    "ranges differ": ("web: {image: 'a:1', ports: ['8000-8002:80-81']}", "ranges differ in size"),
    "bad host ip": ("web: {image: 'a:1', ports: [{target: 80, host_ip: nowhere}]}", "invalid ip address: nowhere"),
    "named, scaled": ("web: {image: 'a:1', container_name: web, deploy: {replicas: 2}}",
                      "container_name with more than one replica"),
    "scale vs replicas": ("web: {image: 'a:1', scale: 2, deploy: {replicas: 3}}", "distinct values"),
    "negative replicas": ("web: {image: 'a:1', deploy: {replicas: -1}}", "must be >= 0"),
    "count and ids": ("web: {image: 'a:1', deploy: {resources: {reservations: {devices: "
                      "[{capabilities: [gpu], count: 1, device_ids: ['0']}]}}}}", "both count and device_ids"),
    "missing env_file": ("web: {image: 'a:1', env_file: nowhere.env}", r"env_file: .*nowhere\.env not found"),
    "extends": ("web: {image: 'a:1'}\n  b: {extends: web}", "extends: not supported"),
    "bad interpolation": ("web: {image: 'a:${TAG'}", r"services\.web\.image: invalid interpolation format"),
    "required variable": ("web: {image: 'a:${TAG:?pin a tag}'}", "required variable TAG is missing a value: pin a tag"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_documents_are_refused(tmp_path: Path, case: str) -> None:
    services, error = BROKEN[case]
    with pytest.raises(ComposeError, match=error):
        render(tmp_path, f"services:\n  {services}\n")


@pytest.mark.parametrize(("text", "error"), [
    ("- a list\n", "the top level must be a mapping"),
    ("services: {}\n", "no services"),
    ("include: [other.yml]\nservices: {web: {image: 'a:1'}}\n", "include: not supported"),
    ("services: {web: {image: 'a:1'}}\nservices: {}\n", "mapping key 'services' already defined"),
    ("services: {web: {image: 'a:1'}}\nvolumes: {data: {external: maybe}}\n", "failed to cast 'maybe'"),
])
def test_broken_top_level(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ComposeError, match=error):
        render(tmp_path, text)


def test_a_sound_document_passes_and_warns_about_version(tmp_path: Path) -> None:
    text = """
        version: "3.9"
        services:
          web: {image: "a:1", healthcheck: {test: [CMD, "true"], interval: 500ms, start_period: 1m30s}}
          job: {image: "b:1", depends_on: {web: {condition: service_healthy}}, restart: "no"}
    """
    rendered = render(tmp_path, text)
    assert "version" not in rendered.config
    assert rendered.warnings == ("the attribute `version` is obsolete and ignored",)


def test_render_names_the_file_and_main_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAG", raising=False)
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web: {image: 'a:${TAG}'}\n")
    assert composecheck.main(["-f", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "image: 'a:'" in out and "'TAG' variable is not set" in err
    path.write_text("services:\n  web: {image: 'a:1', depends_on: [db]}\n")
    assert composecheck.main(["-f", str(path)]) == 1
    assert "error: compose.yaml: service 'web' depends on undefined service 'db'" in capsys.readouterr().err
