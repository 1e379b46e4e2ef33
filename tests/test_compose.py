"""docker-compose.yml, the Prometheus config and the Grafana provisioning: valid and consistent.

No Docker is needed: ``tests/compose/composecheck.py`` renders the file as ``docker compose config``
does (YAML 1.2, anchors and merge keys, interpolation with the file's defaults, the Compose
Specification's JSON Schema, compose's own consistency checks, the canonical form, profiles; its
tests feed it broken documents). The rendering sees no environment and no ``.env``, so a
developer's settings do not change what is tested. What a schema cannot see is checked here:
images and builds, dependencies, the GPU reservation, that every FRAUDSTREAM_* variable a service
sets is one its command reads, that Prometheus finds the (scaled) workers, that the dashboard
queries only the metrics the workers export (``workers.metrics``), all of them, and that the
``cluster`` profile, rendered with ``ops/docker/cluster.env`` (the project's file, no other
environment), is one three-node KRaft cluster that every client uses whole, while the default
stays a single broker (``cluster_problems``; its mistakes are fed to it too).

The known services are checked by name; a service added later must sit behind a profile (what
``docker compose up`` starts is listed in the file's header and the README) and passes the
generic checks (pinned images, one build per image, a project command that documents its
variables).

Helpers without a ``test_`` prefix are imported by ``tests/test_image.py`` and ``tests/test_alerts.py``.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose import composecheck
from tests.compose.composecheck import ComposeError

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "ops" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fraudstream.json"

CLUSTER_ENV = ROOT / "ops" / "docker" / "cluster.env"

SERVICES = {"kafka", "kafka-2", "kafka-3", "topic-init", "trainer", "worker", "worker-gpu", "monitor", "retrain",
            "loadgen", "prometheus", "grafana"}
PROFILES = {"loadgen": ["load"], "worker-gpu": ["gpu"], "kafka-2": ["cluster"], "kafka-3": ["cluster"]}
KAFKA_NODES = ("kafka", "kafka-2", "kafka-3")   # the cluster's; `kafka` alone by default
THIRD_PARTY_SERVICES = (*KAFKA_NODES, "prometheus", "grafana")
WORKERS = ("worker", "worker-gpu")
ONE_SHOT = ("topic-init", "trainer")
THIRD_PARTY = ("apache/kafka:", "prom/prometheus:", "grafana/grafana:")
METRICS_PORT = 9400
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def compose_env() -> dict[str, str]:
    """This process's environment without this machine's settings (for the commands' ``--help``)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("FRAUDSTREAM_", "GRAFANA_", "COMPOSE_", "KAFKA_"))}


def render_compose(*profiles: str, text: str | None = None, **environ: str) -> composecheck.Rendered:
    """docker-compose.yml (or ``text`` in its place) rendered with ``profiles``: only ``environ``, no ``.env``."""
    if text is None:
        return composecheck.render(COMPOSE, environ=environ, profiles=profiles, env_files=[])
    return composecheck.render_text(text, project_dir=ROOT, environ=environ, profiles=profiles, env_files=[])


@cache
def compose_config() -> dict[str, Any]:
    """The file as ``docker compose --profile '*' config`` prints it with the defaults: every service."""
    return render_compose("*").config


def services() -> dict[str, dict[str, Any]]:
    svc: dict[str, dict[str, Any]] = compose_config()["services"]
    return svc


def built_services() -> list[str]:
    """Services that run the project's image (they have a build section)."""
    return sorted(name for name, s in services().items() if "build" in s)


def service_argv(name: str) -> list[str]:
    """What the container runs: compose's entrypoint + command (the image has no ENTRYPOINT)."""
    s = services()[name]
    entry, command = s.get("entrypoint") or [], s.get("command") or []
    assert isinstance(entry, list) and isinstance(command, list), f"{name}: use the exec (list) form"
    return [*entry, *command]


def healthcheck_argv(name: str) -> list[str] | None:
    test = services()[name].get("healthcheck", {}).get("test")
    if not test:
        return None
    assert test[0] == "CMD", f"{name}: the project's healthchecks use the exec form (no shell in the argv)"
    return list(test[1:])


def dashboard() -> dict[str, Any]:
    d: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return d


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def dashboard_queries(d: dict[str, Any] | None = None) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template variable queries."""
    d = dashboard() if d is None else d
    out = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    for var in d.get("templating", {}).get("list", []):
        q = var.get("query")
        out.append(q["query"] if isinstance(q, dict) else str(q or ""))
        out.append(str(var.get("definition", "")))
    return [q for q in out if q]


def dashboard_metric_names(d: dict[str, Any] | None = None) -> set[str]:
    """The series names the dashboard's queries select (``fraudstream_*``, suffixes included)."""
    return {m for q in dashboard_queries(d) for m in re.findall(r"\bfraudstream_[a-z0-9_]+", q)}


def exported_sample_names() -> dict[str, str]:
    """sample name -> metric family, for every metric a worker exports (its registry, not a copy)."""
    from workers.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": HISTOGRAM_SUFFIXES, "gauge": ("",), "info": ("_info",)}
    out: dict[str, str] = {}
    for family in Metrics().registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            out[family.name + suffix] = family.name + ("_total" if family.type == "counter" else "")
    return out


def help_env_names(argv: list[str]) -> set[str]:
    """The FRAUDSTREAM_* variables ``argv --help`` documents, run with this interpreter."""
    assert argv[:2] == ["python", "-m"], argv
    done = subprocess.run([sys.executable, *argv[1:], "--help"], capture_output=True, text=True, cwd=ROOT,
                          env=compose_env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"\benv\s+(FRAUDSTREAM_[A-Z0-9_]+)", done.stdout))


# --- the compose file ------------------------------------------------------------------------------


@pytest.mark.parametrize("profiles", [(), ("load",), ("gpu",), ("load", "gpu"), ("cluster",)],
                         ids=lambda p: "+".join(p) or "none")
def test_compose_file_validates(profiles: tuple[str, ...]) -> None:
    rendered = render_compose(*profiles)
    assert not rendered.warnings, "every variable the file reads has a default; no obsolete `version`"
    active = set(rendered.config["services"])
    wanted = {name for name in SERVICES if not PROFILES.get(name) or set(PROFILES[name]) & set(profiles)}
    assert active & SERVICES == wanted
    assert rendered.config["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_every_profile_combination_renders() -> None:
    """Each set of the profiles the file declares (a profile added later included) renders and checks."""
    declared = sorted(render_compose("*").profiles)
    assert set(declared) >= {p for ps in PROFILES.values() for p in ps}
    for n in range(len(declared) + 1):
        for profiles in itertools.combinations(declared, n):
            rendered = render_compose(*profiles)
            assert not rendered.warnings, profiles
            assert set(rendered.config["services"]) | rendered.disabled == set(services()), profiles


def test_settings_reach_the_services(tmp_path: Path) -> None:
    """The header's settings, from the environment or an env file (the environment wins), land where they should."""
    rendered = render_compose("*", FRAUDSTREAM_IMAGE="registry.example/fs", FRAUDSTREAM_PARTITIONS="3",
                              FRAUDSTREAM_THREADS="2", GRAFANA_ADMIN_PASSWORD="pa$$word").config["services"]
    assert rendered["worker"]["image"] == "registry.example/fs:cpu"
    assert rendered["worker-gpu"]["image"] == "registry.example/fs:gpu"
    assert rendered["topic-init"]["environment"]["FRAUDSTREAM_PARTITIONS"] == "3"
    assert rendered["worker"]["environment"]["FRAUDSTREAM_THREADS"] == "2"
    assert rendered["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "pa$$word", "a value is not re-read"
    env_file = tmp_path / ".env"
    env_file.write_text("# settings\nFRAUDSTREAM_SIM_DAYS=120\nexport FRAUDSTREAM_LOADGEN_RATE='500'\n"
                        "FRAUDSTREAM_RETRAIN=true  # once\n")
    rendered = composecheck.render(COMPOSE, environ={"FRAUDSTREAM_RETRAIN": "false"}, env_files=[env_file],
                                   profiles=["*"]).config["services"]
    assert rendered["trainer"]["environment"]["FRAUDSTREAM_SIM_DAYS"] == "120"
    assert rendered["trainer"]["environment"]["FRAUDSTREAM_RETRAIN"] == "false"
    assert rendered["loadgen"]["environment"]["FRAUDSTREAM_LOADGEN_RATE"] == "500"


def _broken(doc: dict[str, Any], change: str) -> str:
    """The compose document with one deliberate mistake, as YAML text."""
    doc = json.loads(json.dumps(doc))  # no longer sharing the anchors' mappings between services
    svc = doc["services"]
    if change == "unknown key":
        svc["worker"]["replica"] = 2
    elif change == "missing dependency":
        svc["monitor"]["depends_on"]["schema-registry"] = {"condition": "service_started"}
    elif change == "bad condition":
        svc["worker"]["depends_on"]["kafka"]["condition"] = "healthy"
    elif change == "undeclared volume":
        svc["retrain"]["volumes"] = ["models:/bundles"]
    elif change == "default needs a profile's service":
        svc["monitor"]["depends_on"]["loadgen"] = {"condition": "service_started"}
    elif change == "default needs a cluster node":  # why topic-init waits for nodes 2 and 3 instead
        svc["worker"]["depends_on"]["kafka-2"] = {"condition": "service_healthy"}
    elif change == "healthy without a healthcheck":
        svc["worker"]["depends_on"]["retrain"] = {"condition": "service_healthy"}
    elif change == "cycle":
        svc["kafka"]["depends_on"] = {"worker": {"condition": "service_started"}}
    elif change == "bad duration":
        svc["worker"]["healthcheck"]["interval"] = "10 seconds"
    elif change == "bad port":
        svc["grafana"]["ports"] = ["3000:http"]
    elif change == "bad replicas":
        svc["monitor"]["deploy"]["replicas"] = "${FRAUDSTREAM_MONITORS:-two}"
    elif change == "required variable":
        svc["trainer"]["environment"]["FRAUDSTREAM_SIM_DAYS"] = "${FRAUDSTREAM_SIM_DAYS:?set the history length}"
    elif change == "bad interpolation":
        svc["trainer"]["environment"]["FRAUDSTREAM_SIM_DAYS"] = "${FRAUDSTREAM_SIM_DAYS:84}"
    else:
        raise AssertionError(change)
    return yaml.safe_dump(doc, sort_keys=False)


BROKEN = {
    "unknown key": r"services\.worker: 'replica' does not match any of the regexes",
    "missing dependency": "'monitor' depends on undefined service 'schema-registry'",
    "bad condition": r"services\.worker\.depends_on\.kafka\.condition: 'healthy' is not one of",
    "undeclared volume": "refers to undefined volume models",
    "default needs a profile's service": r"'monitor' depends on 'loadgen', which its profiles \['load'\] leave out",
    "default needs a cluster node": r"'worker' depends on 'kafka-2', which its profiles \['cluster'\] leave out",
    "healthy without a healthcheck": "'worker' waits for 'retrain' to be healthy, but 'retrain' has no healthcheck",
    "cycle": "dependency cycle: ",
    "bad duration": r"services\.worker\.healthcheck\.interval: '10 seconds' is not a duration",
    "bad port": r"services\.grafana\.ports\[0\]: invalid port",
    "bad replicas": r"services\.monitor\.deploy\.replicas: failed to cast 'two'",
    "required variable": "required variable FRAUDSTREAM_SIM_DAYS is missing a value: set the history length",
    "bad interpolation": r"services\.trainer\.environment\.FRAUDSTREAM_SIM_DAYS: invalid interpolation format",
}


@pytest.mark.parametrize("change", sorted(BROKEN))
def test_compose_checks_can_fail(change: str) -> None:
    """The checks above would catch a mistake: the real file, with one, is refused with the reason."""
    doc = composecheck.load_yaml(COMPOSE.read_text())
    text = _broken(doc, change)
    with pytest.raises(ComposeError, match=BROKEN[change]):
        render_compose("gpu" if change.startswith("default needs") else "*", text=text)


def test_profiles() -> None:
    for name, s in services().items():
        if name in SERVICES:
            assert s.get("profiles", []) == PROFILES.get(name, []), name
        else:
            assert s.get("profiles"), (f"{name}: a new service outside any profile changes what `docker compose up` "
                                       "starts (listed in the file's header and the README): add it to SERVICES")


def test_images_and_builds() -> None:
    for name, s in services().items():
        image = s.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag, not {image!r}"
        if "build" in s:
            build = s["build"]
            assert Path(build["context"]).resolve() == ROOT, name
            assert (ROOT / build.get("dockerfile", "Dockerfile")).is_file(), name
            variant = build["args"]["VARIANT"]
            assert variant in ("cpu", "gpu") and image.endswith(f":{variant}"), f"{name}: {image} vs {variant}"
        elif name in SERVICES:
            assert name in THIRD_PARTY_SERVICES, f"{name}: not built from this repo?"
        else:
            assert image.startswith(THIRD_PARTY), f"{name}: {image} is neither built here nor a known image"
    assert {services()[name]["image"] for name in KAFKA_NODES} == {services()["kafka"]["image"]}, "one Kafka image"
    assert services()["kafka"]["image"].startswith("apache/kafka:")
    assert set(built_services()) & SERVICES == SERVICES - set(THIRD_PARTY_SERVICES)
    # One image per variant: the services that share a tag build it with the same arguments.
    builds: dict[str, Any] = {}
    for name in built_services():
        s = services()[name]
        assert builds.setdefault(s["image"], s["build"]) == s["build"], f"{name}: {s['image']} built differently"


def test_commands_are_the_projects() -> None:
    expected = {"topic-init": "ops.docker.init_topics", "trainer": "ops.docker.train", "worker": "workers",
                "worker-gpu": "workers", "monitor": "workers.monitor", "loadgen": "ops.loadgen"}
    for name in built_services():
        argv = service_argv(name)
        if name == "retrain":  # the one service with arguments: its schedule
            assert argv == ["python", "-m", "trainer", "retrain", "--every", "1d"], argv
        elif name in expected:
            assert argv == ["python", "-m", expected[name]], f"{name}: {argv}"
        else:  # a service added later: one of the project's modules
            assert argv[:2] == ["python", "-m"] and importlib.util.find_spec(argv[2]), f"{name}: {argv}"


def test_workers_scale() -> None:
    """No fixed name or host port, a health check, the metrics port, ordered after the one-shot jobs."""
    for name in WORKERS:
        s = services()[name]
        assert "container_name" not in s and "ports" not in s, f"{name} would not scale"
        assert s["environment"]["FRAUDSTREAM_METRICS_PORT"] == str(METRICS_PORT)
        assert str(METRICS_PORT) in [str(p) for p in s["expose"]]
        assert healthcheck_argv(name) == ["python", "-m", "ops.docker.healthcheck", "--path", "/healthz"]
        deps = s["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        for job in ONE_SHOT:
            assert deps[job]["condition"] == "service_completed_successfully", f"{name} -> {job}"
        assert s["environment"]["FRAUDSTREAM_BOOTSTRAP"] == "kafka:19092"
        assert "bundles:/bundles:ro" in [_volume(v) for v in s["volumes"]]
    assert services()["worker"]["environment"]["FRAUDSTREAM_PROVIDER"] == "cpu"
    for job in ONE_SHOT:
        assert services()[job].get("restart", "no") == "no", f"{job} is a one-shot job"
    kafka_env = services()["kafka"]["environment"]
    assert "PLAINTEXT://kafka:19092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert "CMD-SHELL" in services()["kafka"]["healthcheck"]["test"]


def test_monitor_stands_by_and_is_scraped() -> None:
    """Two monitor instances (one active, one standby), the bundles read-only, scraped on 9410."""
    m = services()["monitor"]
    assert m["deploy"]["replicas"] >= 2 and "ports" not in m
    assert "bundles:/bundles:ro" in [_volume(v) for v in m["volumes"]]
    port = m["environment"]["FRAUDSTREAM_MONITOR_METRICS_PORT"]
    assert healthcheck_argv("monitor") == ["python", "-m", "ops.docker.healthcheck", "--port", port, "--path",
                                           "/healthz"]
    jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    sd = jobs["fraudstream-monitor"]["dns_sd_configs"]
    assert {str(e["port"]) for e in sd} == {port}
    assert {n for e in sd for n in e["names"]} & set(m["networks"]["default"]["aliases"])


def _volume(v: dict[str, Any]) -> str:
    """``source:target[:ro]`` of a rendered (long syntax) volume entry."""
    return f"{v.get('source', '')}:{v['target']}" + (":ro" if v.get("read_only") else "")


def test_gpu_profile_reserves_a_gpu() -> None:
    gpu = services()["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), devices
    assert gpu["environment"]["FRAUDSTREAM_PROVIDER"] == "cuda"
    assert gpu["build"]["args"]["VARIANT"] == "gpu"
    assert "deploy" not in services()["worker"], "the CPU worker reserves no GPU"


def test_trainer_is_quick_by_default() -> None:
    from trainer.cli import QUICK

    trainer = services()["trainer"]
    env = trainer["environment"]
    assert (int(env["FRAUDSTREAM_SIM_CUSTOMERS"]), int(env["FRAUDSTREAM_SIM_TERMINALS"]),
            int(env["FRAUDSTREAM_SIM_DAYS"])) == (QUICK.customers, QUICK.terminals, QUICK.days)
    assert env["FRAUDSTREAM_FOLDS"] == "0"
    assert env["FRAUDSTREAM_RETRAIN"] == "false", "a scale-out must not retrain"
    # Where the trainer writes is where the workers read: the same named volume.
    assert "bundles:/bundles" in [_volume(v) for v in trainer["volumes"]]
    bundles = env["FRAUDSTREAM_BUNDLES"]
    for name in WORKERS:
        assert Path(services()[name]["environment"]["FRAUDSTREAM_BUNDLE"]).parent == Path(bundles)
    assert "bundles" in compose_config()["volumes"]


def test_environment_is_read_by_the_commands() -> None:
    """Every FRAUDSTREAM_* variable a service sets is one its command documents in --help."""
    for name in built_services():
        known = help_env_names(service_argv(name))
        check = healthcheck_argv(name)
        if check:
            known |= help_env_names(check)
        unknown = {k for k in services()[name]["environment"] if k.startswith("FRAUDSTREAM_")} - known
        assert not unknown, f"{name} sets variables its command does not read: {sorted(unknown)}"


# --- the Kafka cluster: profile cluster, switched on by ops/docker/cluster.env -----------------------


def render_cluster(*profiles: str, text: str | None = None) -> composecheck.Rendered:
    """``docker compose --env-file ops/docker/cluster.env [--profile ...] config``: the file's COMPOSE_PROFILES
    unless ``profiles`` are given (they replace it, as ``--profile`` does)."""
    if text is None:
        return composecheck.render(COMPOSE, environ={}, profiles=profiles, env_files=[CLUSTER_ENV])
    return composecheck.render_text(text, project_dir=ROOT, environ={}, profiles=profiles, env_files=[CLUSTER_ENV])


def _addresses(value: str, sep: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` (sep ``://``) or ``id@host:port,...`` (sep ``@``) -> name -> (host, port)."""
    out: dict[str, tuple[str, int]] = {}
    for entry in value.split(","):
        name, _, address = entry.partition(sep)
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def kafka_nodes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run a Kafka node (the official image)."""
    return {name: s for name, s in config["services"].items() if str(s.get("image", "")).startswith("apache/kafka:")}


def kafka_clients(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of the project that talk to Kafka (they set a bootstrap)."""
    return {name: s for name, s in config["services"].items() if "FRAUDSTREAM_BOOTSTRAP" in s.get("environment", {})}


def cluster_problems(config: dict[str, Any], size: int = 3) -> list[str]:
    """What keeps a rendered configuration from being ``size`` KRaft nodes (each a broker and a controller,
    all voters) replicated as ``schemas.replication`` says, that every client uses whole; empty when nothing."""
    from ops.docker.init_topics import brokers_wanted
    from schemas.replication import AUTO, choose, min_insync, parse_factor

    problems: list[str] = []
    nodes = kafka_nodes(config)
    env = {name: {k: str(v) for k, v in s.get("environment", {}).items()} for name, s in nodes.items()}
    if len(nodes) != size:
        problems.append(f"{len(nodes)} Kafka node(s), not {size}: {sorted(nodes)}")
    for key in ("CLUSTER_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS"):
        values = {name: e.get(key) for name, e in env.items()}
        if len(set(values.values())) != 1:
            problems.append(f"{key} differs between the nodes: {values}")
    ids = {name: int(e.get("KAFKA_NODE_ID", "0")) for name, e in env.items()}
    if len(set(ids.values())) != len(ids):
        problems.append(f"node ids are not distinct: {ids}")
    advertised: dict[str, dict[str, tuple[str, int]]] = {}
    published: dict[str, list[int]] = {}
    data: dict[str, str] = {}
    for name, e in env.items():
        names = {name, nodes[name].get("hostname", name)}
        if e.get("KAFKA_PROCESS_ROLES") != "broker,controller":
            problems.append(f"{name}: KAFKA_PROCESS_ROLES {e.get('KAFKA_PROCESS_ROLES')}, not broker,controller")
        cluster_id = e.get("CLUSTER_ID", "")
        try:
            valid = len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
        except ValueError:
            valid = False
        if not valid:
            problems.append(f"{name}: CLUSTER_ID {cluster_id!r} is not a base64 UUID (kafka-storage.sh random-uuid)")
        listening = _addresses(e["KAFKA_LISTENERS"], "://")
        voters = _addresses(e["KAFKA_CONTROLLER_QUORUM_VOTERS"], "@")
        if {int(v) for v in voters} != set(ids.values()):
            problems.append(f"{name}: the voters {sorted(voters)} are not the nodes {sorted(ids.values())}")
        for other, node_id in ids.items():
            if str(node_id) not in voters:
                continue  # reported above
            host, port = voters[str(node_id)]
            if host not in {other, nodes[other].get("hostname", other)} or port != listening["CONTROLLER"][1]:
                problems.append(f"{name}: voter {node_id} is {host}:{port}, not {other}'s controller listener")
        advertised[name] = _addresses(e["KAFKA_ADVERTISED_LISTENERS"], "://")
        host, port = advertised[name]["PLAINTEXT"]
        if host not in names or port != listening["PLAINTEXT"][1]:
            problems.append(f"{name}: advertises PLAINTEXT {host}:{port}, not its own name and listener")
        ports = {int(p["target"]): int(p["published"]) for p in nodes[name].get("ports", [])}
        published[name] = sorted(ports.values())
        if "EXTERNAL" in advertised[name] and ports.get(listening["EXTERNAL"][1]) != advertised[name]["EXTERNAL"][1]:
            problems.append(f"{name}: advertises EXTERNAL {advertised[name]['EXTERNAL']}, not the port it publishes")
        mounts = [v for v in nodes[name].get("volumes", []) if v["target"] == e.get("KAFKA_LOG_DIRS")]
        if not mounts or mounts[0]["type"] != "volume":
            problems.append(f"{name}: KAFKA_LOG_DIRS {e.get('KAFKA_LOG_DIRS')} is not on a named volume")
        else:
            data[name] = mounts[0]["source"]
        if not nodes[name].get("healthcheck", {}).get("test"):
            problems.append(f"{name}: no healthcheck")
    shared: dict[str, dict[str, str]] = {
        "advertised listeners": {n: str(sorted(a.items())) for n, a in advertised.items()},
        "host ports": {n: str(p) for n, p in published.items()}, "data volumes": data}
    for what, values in shared.items():
        if len(set(values.values())) != len(values):
            problems.append(f"the nodes share {what}: {values}")
    # Replication: as the project's rule for topics has it, for the internal topics too.
    factor = choose(AUTO, size)
    wanted = {"KAFKA_DEFAULT_REPLICATION_FACTOR": factor, "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": factor,
              "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": factor,
              "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": factor,
              "KAFKA_MIN_INSYNC_REPLICAS": min_insync(factor),
              "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": min_insync(factor),
              "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": min_insync(factor)}
    for name, e in env.items():
        for key, value in wanted.items():
            if e.get(key) != str(value):
                problems.append(f"{name}: {key}={e.get(key)}, not {value}")
    # The clients: every broker in the bootstrap; the topics they create replicated as the cluster's
    # size says (stated in a cluster); started after topic-init, which waits for every broker.
    brokers = {f"{a['PLAINTEXT'][0]}:{a['PLAINTEXT'][1]}" for a in advertised.values()}
    for name, s in kafka_clients(config).items():
        client = {k: str(v) for k, v in s["environment"].items()}
        bootstrap = set(client["FRAUDSTREAM_BOOTSTRAP"].split(","))
        if bootstrap != brokers:
            problems.append(f"{name}: bootstrap {sorted(bootstrap)}, not the brokers {sorted(brokers)}")
        if name in ("topic-init", *WORKERS, "loadgen"):
            requested = parse_factor(client.get("FRAUDSTREAM_REPLICATION_FACTOR", "auto"))
            if requested != factor and not (requested == AUTO and factor == 1):
                problems.append(f"{name}: creates topics with --replication-factor "
                                f"{client.get('FRAUDSTREAM_REPLICATION_FACTOR', 'auto')}, not {factor}")
        deps = s.get("depends_on", {})
        if name == "topic-init":
            need = brokers_wanted(int(client.get("FRAUDSTREAM_INIT_MIN_BROKERS", "1")),
                                  parse_factor(client.get("FRAUDSTREAM_REPLICATION_FACTOR", "auto")))
            if need < size:
                problems.append(f"topic-init waits for {need} broker(s), not {size}")
            if deps.get("kafka", {}).get("condition") != "service_healthy":
                problems.append("topic-init does not wait for kafka to be healthy")
        elif deps.get("topic-init", {}).get("condition") != "service_completed_successfully":
            problems.append(f"{name} does not wait for topic-init (which waits for every broker)")
    return problems


def test_cluster_env_file_renders() -> None:
    """``--env-file ops/docker/cluster.env`` is the whole switch: the cluster profile, and every variable it needs."""
    rendered = render_cluster()
    assert not rendered.warnings
    default = set(render_compose().config["services"])
    assert set(rendered.config["services"]) == default | {"kafka-2", "kafka-3"}
    assert rendered.disabled == {"loadgen", "worker-gpu"}
    assert {"kafka-2", "kafka-3", "loadgen"} <= set(render_cluster("cluster", "load").config["services"])
    # The file sets exactly the variables the compose file reads for the cluster (a typo is not silent).
    settings = composecheck.parse_env_file(CLUSTER_ENV.read_text(), {})
    read = set(re.findall(r"\$\{(FRAUDSTREAM_COMPOSE_[A-Z0-9_]+)", COMPOSE.read_text()))
    assert settings["COMPOSE_PROFILES"] == "cluster"
    assert set(settings) - {"COMPOSE_PROFILES"} == read


@pytest.mark.parametrize("profiles", [(), ("cluster", "load", "gpu")], ids=["file", "cluster+load+gpu"])
def test_cluster_is_whole(profiles: tuple[str, ...]) -> None:
    """Three nodes, one cluster id and voter list, their own ids, listeners, ports and volumes; 3 replicas with 2 in
    sync; every client's bootstrap names the three brokers and starts after topic-init, which waits for them."""
    config = render_cluster(*profiles).config
    assert cluster_problems(config) == []
    assert set(kafka_nodes(config)) == set(KAFKA_NODES)
    env = {name: config["services"][name]["environment"] for name in KAFKA_NODES}
    assert env["kafka"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
    assert sorted(int(e["KAFKA_NODE_ID"]) for e in env.values()) == [1, 2, 3]
    assert {e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] for e in env.values()} == {"3"}
    assert {e["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] for e in env.values()} == {"3"}
    assert {e["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] for e in env.values()} == {"2"}
    assert {e["KAFKA_MIN_INSYNC_REPLICAS"] for e in env.values()} == {"2"}
    assert {e["KAFKA_DEFAULT_REPLICATION_FACTOR"] for e in env.values()} == {"3"}
    clients = kafka_clients(config)
    assert {"topic-init", "worker", "monitor", "retrain"} <= set(clients)
    for s in clients.values():
        assert sorted(s["environment"]["FRAUDSTREAM_BOOTSTRAP"].split(",")) == [
            "kafka-2:19092", "kafka-3:19092", "kafka:19092"]
    # The single broker's volume is not node 1's (it was formatted for another cluster id).
    assert [v["source"] for v in config["services"]["kafka"]["volumes"]] == ["kafka-1-data"]


def test_default_is_one_broker() -> None:
    """Without the env file: the single broker, as before the cluster profile existed."""
    config = render_compose("load", "gpu").config
    assert cluster_problems(config, size=1) == []
    assert set(kafka_nodes(config)) == {"kafka"}
    kafka = config["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093" and env["KAFKA_NODE_ID"] == "1"
    assert env["CLUSTER_ID"] == "5L6g3nShT-eMCtK--X86sw", "the image's default: the volume of an earlier start fits"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "KAFKA_MIN_INSYNC_REPLICAS",
                "KAFKA_DEFAULT_REPLICATION_FACTOR"):
        assert env[key] == "1", key
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:19092,EXTERNAL://localhost:9092"
    assert [(p["published"], p["target"]) for p in kafka["ports"]] == [("9092", 9092)]
    assert [v["source"] for v in kafka["volumes"]] == ["kafka-data"]
    for name, s in kafka_clients(config).items():
        assert s["environment"]["FRAUDSTREAM_BOOTSTRAP"] == "kafka:19092", name
        assert s["environment"].get("FRAUDSTREAM_REPLICATION_FACTOR", "auto") == "auto", name


def test_profile_cluster_alone_is_not_a_cluster() -> None:
    """``--profile cluster`` without the env file starts kafka-2 and kafka-3 beside a one-voter `kafka` of another
    cluster id (the clients keep using it alone): why the header and the README say to use the file."""
    problems = "\n".join(cluster_problems(render_compose("cluster").config))
    assert "CLUSTER_ID differs" in problems and "KAFKA_CONTROLLER_QUORUM_VOTERS differs" in problems
    assert "bootstrap ['kafka:19092']" in problems


def _broken_cluster(config: dict[str, Any], change: str) -> dict[str, Any]:
    """The rendered cluster with one deliberate mistake."""
    config = json.loads(json.dumps(config))
    svc = config["services"]
    if change == "two nodes":
        del svc["kafka-3"]
    elif change == "another cluster id":
        svc["kafka-3"]["environment"]["CLUSTER_ID"] = "5L6g3nShT-eMCtK--X86sw"
    elif change == "not a uuid":
        for name in KAFKA_NODES:
            svc[name]["environment"]["CLUSTER_ID"] = "fraudstream-cluster"
    elif change == "voters differ":
        svc["kafka-2"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] = "1@kafka:9093,2@kafka-2:9093"
    elif change == "a voter missing":
        for name in KAFKA_NODES:
            svc[name]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] = "1@kafka:9093,2@kafka-2:9093"
    elif change == "voter on the client port":
        for name in KAFKA_NODES:
            svc[name]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] = "1@kafka:9093,2@kafka-2:9093,3@kafka-3:19092"
    elif change == "duplicate node id":
        svc["kafka-3"]["environment"]["KAFKA_NODE_ID"] = "2"
    elif change == "controller only":
        svc["kafka-2"]["environment"]["KAFKA_PROCESS_ROLES"] = "controller"
    elif change == "advertises another node":
        svc["kafka-3"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] = "PLAINTEXT://kafka-2:19092,EXTERNAL://localhost:9094"
    elif change == "external port not published":
        svc["kafka-3"]["ports"][0]["published"] = "9095"
    elif change == "same host port":
        svc["kafka-3"]["ports"][0]["published"] = "9093"
        svc["kafka-3"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] = "PLAINTEXT://kafka-3:19092,EXTERNAL://localhost:9093"
    elif change == "shared volume":
        svc["kafka-3"]["volumes"][0]["source"] = "kafka-2-data"
    elif change == "log in the container":
        del svc["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    elif change == "no healthcheck":
        del svc["kafka-2"]["healthcheck"]
    elif change == "offsets once":
        svc["kafka"]["environment"]["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] = "1"
    elif change == "transactions once":
        svc["kafka-2"]["environment"]["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] = "1"
    elif change == "transactions min isr 1":
        svc["kafka-2"]["environment"]["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] = "1"
    elif change == "min isr 3":
        svc["kafka-3"]["environment"]["KAFKA_MIN_INSYNC_REPLICAS"] = "3"
    elif change == "default replication 1":
        svc["kafka"]["environment"]["KAFKA_DEFAULT_REPLICATION_FACTOR"] = "1"
    elif change == "bootstrap misses a broker":
        svc["monitor"]["environment"]["FRAUDSTREAM_BOOTSTRAP"] = "kafka:19092,kafka-2:19092"
    elif change == "bootstrap on the host port":
        svc["retrain"]["environment"]["FRAUDSTREAM_BOOTSTRAP"] = "kafka:9092,kafka-2:9092,kafka-3:9092"
    elif change == "topics replicated once":
        svc["worker"]["environment"]["FRAUDSTREAM_REPLICATION_FACTOR"] = "1"
    elif change == "topics auto":
        svc["loadgen"]["environment"]["FRAUDSTREAM_REPLICATION_FACTOR"] = "auto"
    elif change == "topic-init does not wait":
        svc["topic-init"]["environment"]["FRAUDSTREAM_REPLICATION_FACTOR"] = "2"
    elif change == "topic-init before kafka":
        del svc["topic-init"]["depends_on"]["kafka"]
    elif change == "client before topic-init":
        del svc["monitor"]["depends_on"]["topic-init"]
    else:
        raise AssertionError(change)
    return config


BROKEN_CLUSTER = {
    "two nodes": r"2 Kafka node\(s\), not 3",
    "another cluster id": "CLUSTER_ID differs between the nodes",
    "not a uuid": "CLUSTER_ID 'fraudstream-cluster' is not a base64 UUID",
    "voters differ": "KAFKA_CONTROLLER_QUORUM_VOTERS differs between the nodes",
    "a voter missing": r"the voters \['1', '2'\] are not the nodes \[1, 2, 3\]",
    "voter on the client port": "voter 3 is kafka-3:19092, not kafka-3's controller listener",
    "duplicate node id": "node ids are not distinct",
    "controller only": "kafka-2: KAFKA_PROCESS_ROLES controller, not broker,controller",
    "advertises another node": "kafka-3: advertises PLAINTEXT kafka-2:19092, not its own name",
    "external port not published": r"kafka-3: advertises EXTERNAL \('localhost', 9094\), not the port it publishes",
    "same host port": "the nodes share host ports",
    "shared volume": "the nodes share data volumes",
    "log in the container": "kafka: KAFKA_LOG_DIRS None is not on a named volume",
    "no healthcheck": "kafka-2: no healthcheck",
    "offsets once": "kafka: KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1, not 3",
    "transactions once": "kafka-2: KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1, not 3",
    "transactions min isr 1": "kafka-2: KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1, not 2",
    "min isr 3": "kafka-3: KAFKA_MIN_INSYNC_REPLICAS=3, not 2",
    "default replication 1": "kafka: KAFKA_DEFAULT_REPLICATION_FACTOR=1, not 3",
    "bootstrap misses a broker": r"monitor: bootstrap \['kafka-2:19092', 'kafka:19092'\], not the brokers",
    "bootstrap on the host port": "retrain: bootstrap .*kafka:9092.*, not the brokers",
    "topics replicated once": "worker: creates topics with --replication-factor 1, not 3",
    "topics auto": "loadgen: creates topics with --replication-factor auto, not 3",
    "topic-init does not wait": r"topic-init waits for 2 broker\(s\), not 3",
    "topic-init before kafka": "topic-init does not wait for kafka to be healthy",
    "client before topic-init": "monitor does not wait for topic-init",
}


@pytest.mark.parametrize("change", sorted(BROKEN_CLUSTER))
def test_cluster_checks_can_fail(change: str) -> None:
    """Each check of ``cluster_problems`` catches its mistake in the real rendered cluster."""
    config = render_cluster("cluster", "load", "gpu").config
    problems = cluster_problems(_broken_cluster(config, change))
    assert any(re.search(BROKEN_CLUSTER[change], p) for p in problems), problems


def test_topic_init_waits_for_the_brokers(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """topic-init creates nothing until as many brokers as --min-brokers (or the stated replication factor) are
    alive; it gives up after --wait-s; with the defaults it does not ask."""
    import time

    import workers.topics
    from ops.docker import init_topics
    from schemas.errors import ConfigError

    for name in ("FRAUDSTREAM_INIT_MIN_BROKERS", "FRAUDSTREAM_REPLICATION_FACTOR", "FRAUDSTREAM_INIT_WAIT_S"):
        monkeypatch.delenv(name, raising=False)
    calls: list[str] = []
    answers: list[int | None] = []

    def broker_count(settings: Any) -> int:
        answer = answers.pop(0) if answers else 3
        calls.append(f"count {answer}")
        if answer is None:
            raise ConfigError(f"cannot reach Kafka at {settings.bootstrap} (NoBrokersAvailable)")
        return answer

    def ensure_topics(settings: Any) -> dict[str, int]:
        calls.append("create")
        return {name: n for name, (n, _) in workers.topics.topic_specs(settings).items()}

    monkeypatch.setattr(init_topics, "broker_count", broker_count)
    monkeypatch.setattr(workers.topics, "ensure_topics", ensure_topics)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    base = ["--bootstrap", "kafka:19092,kafka-2:19092,kafka-3:19092"]

    answers[:] = [None, 1, 2, 3]
    assert init_topics.main([*base, "--min-brokers", "3"]) == 0
    assert calls == ["count None", "count 1", "count 2", "count 3", "create"]
    assert "2 of 3 brokers alive" in capsys.readouterr().err

    calls.clear()
    answers[:] = [2, 3]
    assert init_topics.main([*base, "--replication-factor", "3"]) == 0, "a stated factor waits as well"
    assert calls == ["count 2", "count 3", "create"]

    calls.clear()
    answers[:] = [2, 2, 2]
    assert init_topics.main([*base, "--min-brokers", "3", "--wait-s", "0"]) == 1
    assert "create" not in calls
    assert "has 2 broker(s) alive after 0 s; waited for 3" in capsys.readouterr().err

    calls.clear()
    assert init_topics.main(base) == 0
    assert calls == ["create"], "one broker is enough by default: not asked"


@pytest.mark.integration
def test_topic_init_counts_live_brokers(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """On a real (single) broker: one broker alive, so --min-brokers 2 gives up without creating a topic."""
    from ops.docker import init_topics
    from workers.config import parse

    for name in ("FRAUDSTREAM_INIT_MIN_BROKERS", "FRAUDSTREAM_REPLICATION_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    prefix = f"init-{os.getpid()}-"
    argv = ["--bootstrap", kafka_bootstrap, "--topic-transactions", f"{prefix}tx"]
    assert init_topics.broker_count(parse(argv)) == 1
    assert init_topics.main([*argv, "--min-brokers", "2", "--wait-s", "0"]) == 1
    assert "has 1 broker(s) alive after 0 s; waited for 2" in capsys.readouterr().err


# --- Prometheus and Grafana ------------------------------------------------------------------------


def test_prometheus_scrapes_every_worker() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["global"]["scrape_interval"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    sd = jobs["fraudstream-worker"]["dns_sd_configs"]
    names = {n for entry in sd for n in entry["names"]}
    assert all(entry["port"] == METRICS_PORT and entry.get("type", "SRV") == "A" for entry in sd)
    assert jobs["fraudstream-worker"].get("metrics_path", "/metrics") == "/metrics"
    # Each worker service answers to one of those DNS names (a network alias), however many replicas.
    for name in WORKERS:
        aliases = set(services()[name]["networks"]["default"]["aliases"]) | {name}
        assert aliases & names, f"Prometheus does not resolve {name}"
    flags = dict(a.split("=", 1) for a in services()["prometheus"]["command"])
    assert _bind_mounts("prometheus")[flags["--config.file"]] == PROMETHEUS


def _bind_mounts(name: str) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    return {v["target"]: Path(v["source"]).resolve() for v in services()[name]["volumes"] if v["type"] == "bind"}


def test_grafana_provisioning() -> None:
    mounts = _bind_mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    assert "prometheus" in services() and any("9090" in str(p) for p in services()["prometheus"]["ports"])
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fraudstream.yml").read_text())
    (provider,) = providers["providers"]
    path = provider["options"]["path"]
    assert mounts[path] == DASHBOARD.parent
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[str(Path(home).parent)] / Path(home).name == DASHBOARD
    # Every panel and query uses the provisioned datasource.
    for node in _walk(dashboard()):
        if isinstance(node.get("datasource"), dict):
            assert node["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, node.get("title")


def test_dashboard_parses_and_lays_out() -> None:
    d = dashboard()
    assert d["uid"] == "fraudstream" and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        for t in p.get("targets", []):
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_dashboard_queries_only_the_workers_metrics() -> None:
    """The metric contract: ``workers.metrics.NAMES`` is the list; the dashboard uses each, and only those."""
    from workers.metrics import NAMES

    exported = exported_sample_names()
    assert set(exported.values()) == set(NAMES), "workers.metrics.NAMES and its registry disagree"
    used = dashboard_metric_names()
    monitor = set(re.findall(r'"(fraudstream_[a-z_]+)"', (ROOT / "workers" / "monitor" / "metrics.py").read_text()))
    unknown = used - set(exported) - monitor
    assert not unknown, f"the dashboard queries metrics neither the workers nor the monitor export: {sorted(unknown)}"
    unused = set(NAMES) - {exported[m] for m in used if m in exported}
    assert not unused, f"metrics the dashboard does not show: {sorted(unused)}"


def test_dashboard_panels() -> None:
    """The panels the issue asks for, by what they compute."""
    queries = dashboard_queries()

    def some(*parts: str) -> bool:
        return any(all(p in q for p in parts) for q in queries)

    assert some("rate(fraudstream_scored_total") and some("rate(fraudstream_records_consumed_total")
    assert some("by (partition)", "fraudstream_consumer_lag")
    for q in ("0.5", "0.95", "0.99"):
        assert some(f"histogram_quantile({q},", "fraudstream_latency_seconds_bucket"), q
    assert some("fraudstream_batch_size_sum", "fraudstream_batch_size_count")
    assert some("by (reason)", "fraudstream_dead_letters_total")
    assert some("rate(fraudstream_flagged_total")
    assert some("fraudstream_ready") and some("fraudstream_stalled_partitions")
    assert some("model_version", "provider", "graph", "fraudstream_model_info")


def test_healthcheck_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers' compose healthcheck: 0 on 200, 1 on any other status or no answer; port from the env."""
    import http.server
    import threading

    from ops.docker import healthcheck

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = str(server.server_address[1])
        monkeypatch.setenv("FRAUDSTREAM_METRICS_PORT", port)
        assert healthcheck.main([]) == 0
        assert healthcheck.main(["--path", "/readyz"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.main(["--port", port, "--timeout", "2"]) == 1
