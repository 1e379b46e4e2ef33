"""Render and check a Compose file as ``docker compose config`` does, in Python: no Docker, no network.

The steps follow compose-go (the library behind ``docker compose`` v2), in its order:

1. YAML 1.2 (``yes``/``no``/``on``/``off``, ``22:22`` and dates stay strings, as go-yaml v3 reads them),
   anchors and ``<<`` merge keys resolved; a key given twice in one mapping is an error.
2. Interpolation of every string value (not keys): ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
   ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, nested in the
   default (``${A:-${B}}``), ``$$`` for a literal ``$``. Variables come from ``environ`` over the env files
   (by default the project directory's ``.env``, if any). A variable with no value and no default becomes
   ``""`` and is reported in ``Rendered.warnings``. Then the fields compose casts (``deploy.replicas``,
   ``init``, ``healthcheck.retries``, ...) are cast from strings.
3. Validation against the Compose Specification's JSON Schema (``compose-spec.json`` beside this file,
   vendored from compose-go; see README.md here).
4. What compose-go checks beyond the schema: every ``depends_on`` target exists, no dependency cycle, named
   volumes / networks / secrets / configs are declared, an image or a build per service, healthcheck
   tests start with CMD / CMD-SHELL / NONE, durations parse, port and volume short syntax, no two mounts
   on one target, ``container_name`` only on a service of one replica, a local build context exists.
   One check compose only makes when it starts the containers: a ``service_healthy`` dependency on a
   service with no healthcheck in the file (an image's own HEALTHCHECK is not seen here).
5. The canonical form ``config`` prints: ``environment`` as a mapping of strings (``env_file`` merged
   under it), ``depends_on`` as a mapping with ``condition`` and ``required``, ``volumes`` and ``ports`` in
   the long syntax with absolute host paths, ``build`` as a mapping with an absolute context, ``networks``
   as a mapping, a string healthcheck test as ``["CMD-SHELL", ...]``.
6. Profiles: a service with ``profiles`` is active only when one of them is enabled (``*`` enables all;
   without ``profiles`` the ``COMPOSE_PROFILES`` variable); an active service that requires a disabled one
   is an error. ``Rendered.config["services"]`` holds the active services only.

Not supported (an error says so rather than a silent wrong answer): ``extends``, ``include``; several
``-f`` files and ``docker-compose.override.yml``; remote build contexts are not checked. The project
name, container names and image digests are not computed. ``command``/``entrypoint`` strings are left
as written (compose would shell-split them).

``python -m tests.compose.composecheck [-f FILE] [--profile P] [--env-file F]`` prints the rendered
file, like ``docker compose config``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA = Path(__file__).with_name("compose-spec.json")


class ComposeError(Exception):
    """The file is not one ``docker compose`` accepts, or uses what this checker does not support."""


# --- 1. YAML 1.2 ---------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema's implicit types, and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise ComposeError(f"line {key_node.start_mark.line + 1}: mapping key {key!r} already defined")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    return sign * int(digits, 10)


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|[-+]?0o[0-7]+|[-+]?0x[0-9a-fA-F]+", "-+0123456789"),
    ("float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
     "-+0123456789."),
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("merge", r"<<", "<"),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), list(_first))
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as e:
        raise ComposeError(f"the file is not YAML: {e}") from None


# --- 2. interpolation ----------------------------------------------------------------------------

_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_BRACED = re.compile(r"([_A-Za-z][_A-Za-z0-9]*)(?:(:?[-+?])(.*))?", re.DOTALL)


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` that closes the ``{`` at ``start`` (nested braces counted), or -1."""
    depth, i = 0, start
    while i < len(text):
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        elif text[i] == "{":
            depth += 1
            i += 1
        i += 1
    return -1


@dataclass
class Interpolator:
    """``template -> value`` with compose's rules; ``unset`` collects the variables read without a value."""

    environ: Mapping[str, str]
    unset: set[str] = field(default_factory=set)

    def __call__(self, template: str) -> str:
        out: list[str] = []
        i = 0
        while (j := template.find("$", i)) >= 0:
            out.append(template[i:j])
            following = template[j + 1:j + 2]
            if following == "$":
                out.append("$")
                i = j + 2
            elif following == "{":
                end = _closing_brace(template, j + 1)
                m = _BRACED.fullmatch(template, j + 2, end) if end > 0 else None
                if m is None:
                    raise ComposeError(f"invalid interpolation format in {template!r} (a literal $ is written $$)")
                out.append(self._braced(m[1], m[2], m[3] or ""))
                i = end + 1
            elif m := _NAME.match(template, j + 1):
                out.append(self._plain(m[0]))
                i = m.end()
            else:  # "$1", "$-", a trailing "$": left as written
                out.append("$")
                i = j + 1
        out.append(template[i:])
        return "".join(out)

    def _plain(self, name: str) -> str:
        value = self.environ.get(name)
        if value is None:
            self.unset.add(name)
            return ""
        return value

    def _braced(self, name: str, op: str | None, word: str) -> str:
        value = self.environ.get(name)
        if op is None:
            return self._plain(name)
        if op in (":-", "-"):
            return self(word) if value is None or (op == ":-" and value == "") else value
        if op in (":+", "+"):
            return self(word) if value is not None and (op == "+" or value != "") else ""
        if value is None or (op == ":?" and value == ""):  # ":?" and "?"
            reason = self(word)
            raise ComposeError(f"required variable {name} is missing a value" + (f": {reason}" if reason else ""))
        return value


def _to_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "y", "yes", "on"):
        return True
    if lowered in ("false", "n", "no", "off"):
        return False
    raise ValueError(f"invalid boolean: {text}")


def _to_float(text: str) -> float:
    return float(text)


# The fields compose-go casts after interpolation (loader/interpolate.go); "*" is any key or list item.
_CASTS: dict[tuple[str, ...], Callable[[str], Any]] = {
    **{("services", "*", k): int for k in ("cpu_count", "cpu_period", "cpu_quota", "cpu_rt_period",
                                            "cpu_rt_runtime", "cpu_shares", "oom_score_adj", "pids_limit", "scale")},
    **{("services", "*", k): _to_float for k in ("cpu_percent", "cpus")},
    **{("services", "*", k): _to_bool for k in ("init", "oom_kill_disable", "privileged", "read_only", "stdin_open",
                                                 "tty")},
    ("services", "*", "depends_on", "*", "required"): _to_bool,
    ("services", "*", "depends_on", "*", "restart"): _to_bool,
    ("services", "*", "deploy", "replicas"): int,
    ("services", "*", "deploy", "update_config", "parallelism"): int,
    ("services", "*", "deploy", "update_config", "max_failure_ratio"): _to_float,
    ("services", "*", "deploy", "rollback_config", "parallelism"): int,
    ("services", "*", "deploy", "rollback_config", "max_failure_ratio"): _to_float,
    ("services", "*", "deploy", "restart_policy", "max_attempts"): int,
    ("services", "*", "deploy", "placement", "max_replicas_per_node"): int,
    ("services", "*", "healthcheck", "retries"): int,
    ("services", "*", "healthcheck", "disable"): _to_bool,
    ("services", "*", "ports", "*", "target"): int,
    ("services", "*", "ulimits", "*"): int,
    ("services", "*", "ulimits", "*", "hard"): int,
    ("services", "*", "ulimits", "*", "soft"): int,
    ("services", "*", "volumes", "*", "read_only"): _to_bool,
    ("services", "*", "volumes", "*", "volume", "nocopy"): _to_bool,
    **{("networks", "*", k): _to_bool for k in ("external", "internal", "attachable", "enable_ipv4", "enable_ipv6")},
    **{(kind, "*", "external"): _to_bool for kind in ("volumes", "secrets", "configs")},
}


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _cast_for(path: tuple[str, ...]) -> Callable[[str], Any] | None:
    for pattern, cast in _CASTS.items():
        if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path, strict=True)):
            return cast
    return None


def interpolate(node: Any, interpolator: Interpolator, path: tuple[str, ...] = ()) -> Any:
    """A copy of ``node`` with every string value interpolated and the cast fields cast."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise ComposeError(f"{_dotted(path)}: non-string key {key!r}")
            out[key] = interpolate(value, interpolator, (*path, key))
        return out
    if isinstance(node, list):
        return [interpolate(v, interpolator, (*path, "*")) for v in node]
    if not isinstance(node, str):
        return node
    try:
        value = interpolator(node)
    except ComposeError as e:
        raise ComposeError(f"{_dotted(path)}: {e}") from None
    cast = _cast_for(path)
    if cast is None:
        return value
    try:
        return cast(value)
    except ValueError as e:
        raise ComposeError(f"{_dotted(path)}: failed to cast {value!r} to the expected type: {e}") from None


# --- env files -----------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"(?:export\s+)?(?P<key>[A-Za-z0-9_.\-\[\]]+)\s*(?:(?P<sep>[=:])\s*(?P<value>.*))?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$$", "a": "\a", "b": "\b", "f": "\f",
            "v": "\v"}


def parse_env_file(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """A ``.env`` file: ``KEY=value`` (or ``KEY: value``), ``export`` allowed, ``#`` comments, single quotes
    literal, double quotes with escapes and interpolation, unquoted values interpolated and cut at `` #``; a
    bare ``KEY`` takes its value from ``environ``. Interpolation sees ``environ`` first, then the earlier
    lines. Quoted values spanning lines are not supported."""
    out: dict[str, str] = {}

    def lookup_env() -> dict[str, str]:
        return {**out, **environ}

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ENV_LINE.fullmatch(line)
        if m is None:
            raise ComposeError(f"env file line {number}: cannot parse {raw!r}")
        key, value = m["key"], m["value"]
        if m["sep"] is None:
            if key in environ:
                out[key] = environ[key]
            continue
        assert value is not None
        if value[:1] in ("'", '"'):
            quote = value[0]
            close = value.find(quote, 1) if quote == "'" else _closing_double_quote(value)
            if close < 0:
                raise ComposeError(f"env file line {number}: unterminated quoted value {value!r}")
            inner = value[1:close]
            if quote == "'":
                out[key] = inner
                continue
            inner = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e[1], "\\" + e[1]), inner)
        else:
            inner = value.split(" #", 1)[0].rstrip()
        out[key] = Interpolator(lookup_env())(inner)
    return out


def _closing_double_quote(value: str) -> int:
    i = 1
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == '"':
            return i
        i += 1
    return -1


# --- 3. the schema -------------------------------------------------------------------------------


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def validate_schema(doc: Mapping[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        raise ComposeError(f"{_dotted(list(error.absolute_path))}: {error.message}")


# --- 4 and 5. the checks beyond the schema, the canonical form -----------------------------------

_DURATION = re.compile(r"[-+]?(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+)")
_VOLUME_OPTIONS = {"rw", "ro", "z", "Z", "nocopy", "consistent", "cached", "delegated", "shared", "slave",
                   "private", "rshared", "rslave", "rprivate"}
_PORT = re.compile(r"(?:(?:(?P<ip>\[[0-9A-Fa-f:.]+\]|[0-9.]+|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*):)?"
                   r"(?P<published>[0-9]+(?:-[0-9]+)?)?:)?(?P<target>[0-9]+(?:-[0-9]+)?)(?:/(?P<protocol>tcp|udp|sctp))?")


def _is_remote(context: str) -> bool:
    return "://" in context or context.startswith(("git@", "github.com/"))


def _host_path(source: str, project_dir: Path) -> str:
    return os.path.normpath(project_dir / Path(source).expanduser())


def _check_duration(where: str, value: Any) -> None:
    if value is not None and not _DURATION.fullmatch(str(value)):
        raise ComposeError(f"{where}: {value!r} is not a duration (like 10s, 1m30s)")


def _env_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _environment(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            out[key] = val if sep else None
        return out
    return dict(value or {})


def _ports(where: str, ports: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, port in enumerate(ports):
        here = f"{where}.ports[{i}]"
        if isinstance(port, dict):
            if "host_ip" in port:
                _check_ip(here, port["host_ip"])
            out.append({"mode": "ingress", "protocol": "tcp", **port})
            continue
        m = _PORT.fullmatch(str(port))
        if m is None:
            raise ComposeError(f"{here}: invalid port {port!r}")
        low, _, high = m["target"].partition("-")
        targets = list(range(int(low), int(high or low) + 1))
        published: list[str | None] = [m["published"]] * len(targets)
        if m["published"] and "-" in m["published"] and len(targets) > 1:
            plow, _, phigh = m["published"].partition("-")
            if int(phigh) - int(plow) + 1 != len(targets):
                raise ComposeError(f"{here}: the published and target ranges differ in size: {port!r}")
            published = [str(p) for p in range(int(plow), int(phigh) + 1)]
        for target, pub in zip(targets, published, strict=True):
            if not 0 < target < 65536 or (pub and not all(0 <= int(p) < 65536 for p in pub.split("-"))):
                raise ComposeError(f"{here}: port number out of range: {port!r}")
            entry: dict[str, Any] = {"mode": "ingress", "target": target, "protocol": m["protocol"] or "tcp"}
            if pub:
                entry["published"] = pub
            if m["ip"]:
                entry["host_ip"] = m["ip"].strip("[]")
                _check_ip(here, entry["host_ip"])
            out.append(entry)
    return out


def _check_ip(where: str, ip: str) -> None:
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ComposeError(f"{where}: invalid ip address: {ip}") from None


def _volume(where: str, spec: Any, project_dir: Path, declared: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, dict):
        volume = dict(spec)
    else:
        parts = str(spec).split(":")
        if len(parts) > 3:
            raise ComposeError(f"{where}: invalid volume {spec!r} (source:target[:mode])")
        if len(parts) == 1:  # an anonymous volume
            parts = ["", *parts]
        source, target, mode = [*parts, ""][:3]
        options = [o for o in mode.split(",") if o]
        unknown = set(options) - _VOLUME_OPTIONS
        if unknown:
            raise ComposeError(f"{where}: unknown volume mode {sorted(unknown)} in {spec!r}")
        if {"ro", "rw"} <= set(options):
            raise ComposeError(f"{where}: both ro and rw in {spec!r}")
        bind = source.startswith(("/", ".", "~"))
        volume = {"type": "bind" if bind else "volume", "target": target}
        if source:
            volume["source"] = source
        if "ro" in options:
            volume["read_only"] = True
        selinux = [o for o in options if o in ("z", "Z")]
        if bind and selinux:
            volume["bind"] = {"selinux": selinux[0]}
        if not bind and "nocopy" in options:
            volume["volume"] = {"nocopy": True}
    target = str(volume.get("target", ""))
    if not target.startswith("/"):
        raise ComposeError(f"{where}: the target {target!r} is not an absolute path in the container")
    if volume["type"] == "bind" and "source" in volume:
        volume["source"] = _host_path(str(volume["source"]), project_dir)
    if volume["type"] == "volume" and volume.get("source") and volume["source"] not in declared:
        raise ComposeError(f"{where}: refers to undefined volume {volume['source']} (declare it under volumes:)")
    return volume


def _service(name: str, raw: dict[str, Any], top: Mapping[str, Any], project_dir: Path,
             lookup: Mapping[str, str]) -> dict[str, Any]:
    where = f"services.{name}"
    s = dict(raw)
    if "extends" in s:
        raise ComposeError(f"{where}.extends: not supported by this checker")
    if "build" not in s and "image" not in s and "provider" not in s:
        raise ComposeError(f"{where}: has neither an image nor a build context")
    if "build" in s:
        build = {"context": s["build"]} if isinstance(s["build"], str) else dict(s["build"])
        context = str(build.setdefault("context", "."))
        if not _is_remote(context):
            build["context"] = _host_path(context, project_dir)
            if not Path(build["context"]).is_dir():
                raise ComposeError(f"{where}.build: the context {build['context']} is not a directory")
        if build.get("dockerfile") and build.get("dockerfile_inline"):
            raise ComposeError(f"{where}.build: dockerfile and dockerfile_inline are mutually exclusive")
        s["build"] = build

    env: dict[str, Any] = {}
    env_files = s.pop("env_file", None)
    for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files or []:
        spec = {"path": entry} if isinstance(entry, str) else entry
        path = Path(_host_path(str(spec["path"]), project_dir))
        if path.is_file():
            env.update(parse_env_file(path.read_text(), {}))
        elif spec.get("required", True):
            raise ComposeError(f"{where}.env_file: {path} not found")
    env.update(_environment(s.get("environment")))
    for key, value in list(env.items()):
        env[key] = lookup.get(key) if value is None else _env_string(value)
    if env or "environment" in s:
        s["environment"] = env

    depends = s.get("depends_on")
    if depends is not None:
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        s["depends_on"] = {d: {"required": True, **dict(v)} for d, v in depends.items()}

    if "healthcheck" in s:
        check = dict(s["healthcheck"])
        test = check.get("test")
        if isinstance(test, str):
            check["test"] = ["CMD-SHELL", test]
        elif test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ComposeError(f'{where}.healthcheck.test must start with "CMD", "CMD-SHELL" or "NONE": {test[0]!r}')
        for key in ("interval", "timeout", "start_period", "start_interval"):
            _check_duration(f"{where}.healthcheck.{key}", check.get(key))
        s["healthcheck"] = check
    _check_duration(f"{where}.stop_grace_period", s.get("stop_grace_period"))

    networks = s.get("networks")
    if networks is not None:
        if isinstance(networks, list):
            networks = dict.fromkeys(networks)
        if "network_mode" in s:
            raise ComposeError(f"{where}: network_mode and networks are mutually exclusive")
        for network in networks:
            if network != "default" and network not in top.get("networks", {}):
                raise ComposeError(f"{where}: refers to undefined network {network}")
        s["networks"] = networks
    for kind in ("secrets", "configs"):
        for ref in s.get(kind, []):
            source = ref if isinstance(ref, str) else ref.get("source")
            if source not in top.get(kind, {}):
                raise ComposeError(f"{where}: refers to undefined {kind[:-1]} {source}")

    if "volumes" in s:
        s["volumes"] = [_volume(f"{where}.volumes[{i}]", v, project_dir, top.get("volumes", {}))
                        for i, v in enumerate(s["volumes"])]
    mounts: dict[str, str] = {}
    for i, tmpfs in enumerate(s.get("tmpfs", []) if isinstance(s.get("tmpfs"), list) else [s.get("tmpfs")]):
        if tmpfs:
            mounts[str(tmpfs).split(":")[0]] = f"{where}.tmpfs[{i}]"
    for i, v in enumerate(s.get("volumes", [])):
        if v["target"] in mounts:
            raise ComposeError(f"{where}.volumes[{i}]: target {v['target']} already mounted as {mounts[v['target']]}")
        mounts[v["target"]] = f"{where}.volumes[{i}]"

    if "ports" in s:
        s["ports"] = _ports(where, s["ports"])
    if "expose" in s:
        s["expose"] = [str(e) for e in s["expose"]]

    deploy = s.get("deploy") or {}
    replicas = deploy.get("replicas")
    if "scale" in s and replicas is not None and s["scale"] != replicas:
        raise ComposeError(f"{where}: distinct values on scale and deploy.replicas")
    if any(n is not None and n < 0 for n in (s.get("scale"), replicas)):
        raise ComposeError(f"{where}: scale and deploy.replicas must be >= 0")
    if s.get("container_name") and max(s.get("scale") or 1, replicas or 1) > 1:
        raise ComposeError(f"{where}: container_name with more than one replica (container names are unique)")
    for i, device in enumerate(deploy.get("resources", {}).get("reservations", {}).get("devices", [])):
        if "count" in device and "device_ids" in device:
            raise ComposeError(f"{where}.deploy.resources.reservations.devices[{i}]: both count and device_ids")
    return s


def _has_healthcheck(service: Mapping[str, Any]) -> bool:
    """A healthcheck in the file that is not turned off (one without ``test`` tunes the image's own)."""
    check = service.get("healthcheck")
    return check is not None and not check.get("disable") and check.get("test", ["CMD"])[:1] != ["NONE"]


def _check_dependencies(services: Mapping[str, Mapping[str, Any]]) -> None:
    for name, s in services.items():
        for dep, spec in s.get("depends_on", {}).items():
            if dep not in services:
                raise ComposeError(f"service {name!r} depends on undefined service {dep!r}")
            if spec.get("condition") == "service_healthy" and not _has_healthcheck(services[dep]):
                raise ComposeError(f"service {name!r} waits for {dep!r} to be healthy, but {dep!r} has no healthcheck")
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name):], name]
            raise ComposeError(f"dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for dep in services[name].get("depends_on", {}):
            visit(dep, [*path, name])
        state[name] = 2

    for name in services:
        visit(name, [])


# --- 6. profiles, and the whole ------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    config: dict[str, Any]  # as `docker compose config` prints it: the active services only
    profiles: frozenset[str]  # every profile the file declares
    disabled: frozenset[str]  # the services the profiles left out
    warnings: tuple[str, ...]


def render_text(text: str, *, project_dir: Path, environ: Mapping[str, str] | None = None,
                profiles: Iterable[str] = (), env_files: Sequence[Path] | None = None) -> Rendered:
    """Render a Compose document; ``environ`` defaults to ``os.environ``, ``env_files`` to ``project_dir/.env``
    when it exists; raises ``ComposeError`` where ``docker compose config`` would fail."""
    environ = dict(os.environ if environ is None else environ)
    if env_files is None:
        env_files = [p for p in [project_dir / ".env"] if p.is_file()]
    dotenv: dict[str, str] = {}
    for path in env_files:
        if not path.is_file():
            raise ComposeError(f"env file {path} not found")
        dotenv.update(parse_env_file(path.read_text(), {**dotenv, **environ}))
    lookup = {**dotenv, **environ}

    raw = load_yaml(text)
    if not isinstance(raw, dict):
        raise ComposeError("the top level must be a mapping")
    interpolator = Interpolator(lookup)
    doc = interpolate(raw, interpolator)  # new containers: no two services share one (YAML aliases do)
    validate_schema(doc)
    warnings = [f"the {name!r} variable is not set: a blank string" for name in sorted(interpolator.unset)]
    if "version" in doc:
        warnings.append("the attribute `version` is obsolete and ignored")
    if "include" in doc:
        raise ComposeError("include: not supported by this checker")
    if not doc.get("services"):
        raise ComposeError("no services")

    top = {k: ({} if v is None else v) for k, v in doc.items() if k != "version"}
    for kind in ("volumes", "networks"):
        if kind in top:
            top[kind] = {name: {} if spec is None else spec for name, spec in top[kind].items()}
    services = {name: _service(name, s, top, project_dir, lookup) for name, s in sorted(top["services"].items())}
    _check_dependencies(services)

    enabled = set(profiles) or {p.strip() for p in lookup.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    declared = frozenset(p for s in services.values() for p in s.get("profiles", []))
    active = {name for name, s in services.items()
              if not s.get("profiles") or "*" in enabled or enabled & set(s["profiles"])}
    for name in sorted(active):
        for dep, spec in services[name].get("depends_on", {}).items():
            if dep not in active and spec.get("required", True):
                raise ComposeError(f"service {name!r} depends on {dep!r}, which its profiles "
                                   f"{services[dep]['profiles']} leave out (enabled: {sorted(enabled) or 'none'})")
    top["services"] = {name: s for name, s in services.items() if name in active}
    return Rendered(top, declared, frozenset(services) - active, tuple(warnings))


def render(path: Path | str, *, environ: Mapping[str, str] | None = None, profiles: Iterable[str] = (),
           project_dir: Path | None = None, env_files: Sequence[Path] | None = None) -> Rendered:
    """``render_text`` of a file; the project directory is the file's own by default."""
    path = Path(path).resolve()
    try:
        return render_text(path.read_text(), project_dir=project_dir or path.parent, environ=environ,
                           profiles=profiles, env_files=env_files)
    except ComposeError as e:
        raise ComposeError(f"{path.name}: {e}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compose.composecheck",
                                     description="Check and print a Compose file as `docker compose config` does.")
    parser.add_argument("-f", "--file", type=Path, default=Path("docker-compose.yml"))
    parser.add_argument("--profile", action="append", default=[], help="enable a profile (repeat; * for all)")
    parser.add_argument("--env-file", action="append", type=Path, help="instead of the project's .env (repeat)")
    args = parser.parse_args(argv)
    try:
        rendered = render(args.file, profiles=args.profile, env_files=args.env_file)
    except ComposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(yaml.safe_dump(rendered.config, sort_keys=True), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
