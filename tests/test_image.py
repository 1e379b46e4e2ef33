"""The image's install and commands, without a Docker engine: the Dockerfile's build runs here.

The build stage's steps are replayed in a temporary directory, once per session, for the default
(cpu) variant: the build context is the set of files ``.dockerignore`` lets through, copied where
the ``COPY`` lines put them, and the ``RUN`` lines (``ops/docker/install.sh deps``, then
``project``) run verbatim under ``sh`` with the stage's ``ARG``/``ENV``. Image paths (``/opt/venv``,
``/src``, ``/app``, ``/bundles``, ``/tmp``) map to directories under the temporary one. The one
deliberate difference: pip may use its cache here (the Dockerfile sets ``PIP_NO_CACHE_DIR``).

The resulting venv stands for the image's ``/opt/venv``. In it, with the final stage's ``ENV``
and each compose service's environment: every command a compose service runs (its entrypoint +
command, and its healthcheck, as ``tests/compose/composecheck.py`` renders docker-compose.yml the
way ``docker compose config`` does) answers ``--help``; the trainer job trains a bundle for real;
and, on the test broker (``integration``), topic-init
creates the topics, the load generator sends, and a worker starts, passes its compose healthcheck
and exports every metric the Grafana dashboard queries.

Not covered, for want of an engine: the base image, the non-root user and file ownership, the
layer cache, the ``/bundles`` volume, and the GPU variant (its lock file only, in
``test_lock_covers_pyproject``; CUDA wheels are gigabytes and need a GPU to mean anything).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ops.bench.workers_run import terminate
from tests.test_compose import (
    HISTOGRAM_SUFFIXES,
    ROOT,
    built_services,
    compose_config,
    dashboard_metric_names,
    healthcheck_argv,
    service_argv,
    services,
)

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTALL = ROOT / "ops" / "docker" / "install.sh"
LOCKS = {"cpu": ROOT / "ops" / "docker" / "requirements.lock", "gpu": ROOT / "ops" / "docker" / "requirements-gpu.lock"}
IMAGE_PATHS = ("/opt/venv", "/src", "/app", "/bundles", "/tmp")
# The image: CPython 3.11 on linux/x86_64 (the platform the lock's hashes are for).
IMAGE_MARKERS = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                 "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                 "implementation_name": "cpython", "platform_python_implementation": "CPython"}


# --- the Dockerfile, read -------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for o, args in self.instructions if o == op]


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages: (instruction, arguments) with continuations joined, comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    assert not buf, "the Dockerfile ends inside a continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif op == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else None
            stages.append(Stage(_expand(parts[0], global_args), name))
        else:
            stages[-1].instructions.append((op, rest))
    return global_args, stages


def stage_env(stage: Stage, env: dict[str, str]) -> dict[str, str]:
    """The stage's ARG defaults and ENV values, applied in order onto ``env`` (a copy)."""
    env = dict(env)
    for op, args in stage.instructions:
        if op == "ARG":
            name, _, default = args.partition("=")
            env.setdefault(name, default)
        elif op == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = _expand(value, env)
    return env


# --- .dockerignore, applied -----------------------------------------------------------------------


def _pattern(p: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _pattern(line.lstrip("!").strip("/"))))
    return rules


def in_context(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = rel.split("/")
    included = True
    for keep, rx in rules:
        if any(rx.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            included = keep
    return included


def context_files() -> list[str]:
    """The files of the checkout that ``docker build .`` sends (symlinks not followed)."""
    rules = dockerignore_rules()
    reincluded = [line.strip().lstrip("!").strip("/") for line in DOCKERIGNORE.read_text().splitlines()
                  if line.strip().startswith("!")]
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # Skip a directory the rules exclude, unless a `!` pattern could bring back something inside it.
        dirnames[:] = [d for d in dirnames if in_context(rel_dir + d, rules)
                       or any(r.startswith(rel_dir + d + "/") for r in reincluded)]
        out += [rel_dir + f for f in filenames
                if not os.path.islink(os.path.join(dirpath, f)) and in_context(rel_dir + f, rules)]
    return sorted(out)


# --- the build, replayed --------------------------------------------------------------------------


@dataclass
class Image:
    root: Path        # the stand-in for the image's /
    venv: Path
    env: dict[str, str]  # the final stage's environment, paths mapped
    workdir: Path
    install_s: float

    def map(self, value: str) -> str:
        return map_paths(value, self.root)


def map_paths(value: str, root: Path) -> str:
    for prefix in IMAGE_PATHS:
        if value == prefix or value.startswith(prefix + "/"):
            return str(root / prefix.lstrip("/")) + value[len(prefix):]
    return value


def _host_env() -> dict[str, str]:
    drop = ("FRAUDSTREAM_", "KAFKA_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _copy(context: set[str], srcs: list[str], dest: Path) -> None:
    for src in srcs:
        src = src.rstrip("/")
        files = [f for f in context if f == src or f.startswith(src + "/")]
        assert files, f"COPY {src}: nothing in the build context (.dockerignore?)"
        for f in files:
            target = dest / Path(f).name if f == src else dest / Path(f).relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, target)


def replay_build(root: Path) -> Image:
    global_args, stages = parse_dockerfile()
    build, final = stages[0], stages[-1]
    context = set(context_files())
    host = _host_env()
    env = dict(host)
    env["PYTHON"] = sys.executable  # the image's python3 is CPython 3.11; so is this one

    def mapped(e: dict[str, str]) -> dict[str, str]:
        """Image paths (what the Dockerfile set) moved under ``root``; host values and our python as they
        are (a checkout under /tmp made PYTHON look like an image path)."""
        return {k: v if k == "PYTHON" or host.get(k) == v else map_paths(v, root) for k, v in e.items()}

    workdir = root
    t0 = time.monotonic()
    for op, args in build.instructions:
        if op in ("ARG", "ENV"):
            env = stage_env(Stage(build.base, None, [(op, args)]), env)
        elif op == "WORKDIR":
            workdir = Path(map_paths(args, root))
            workdir.mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *srcs, dest = [a for a in args.split() if not a.startswith("--")]
            _copy(context, srcs, workdir / dest)
        elif op == "RUN":
            run_env = {k: v for k, v in mapped(env).items() if k != "PIP_NO_CACHE_DIR"}
            done = subprocess.run(["sh", "-c", args], cwd=workdir, env=run_env, capture_output=True, text=True,
                                  timeout=900, check=False)
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    install_s = time.monotonic() - t0
    final_env = mapped(stage_env(final, {**host, **global_args}))
    final_workdir = Path(map_paths(final.all("WORKDIR")[-1], root))
    for d in (final_workdir, root / "bundles", root / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    return Image(root, Path(map_paths("/opt/venv", root)), final_env, final_workdir, install_s)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The image's venv, installed once for this module by the Dockerfile's own build steps."""
    return replay_build(tmp_path_factory.mktemp("image"))


def service_env(image: Image, name: str, **overrides: str) -> dict[str, str]:
    env = dict(image.env)
    env.update({k: image.map(str(v)) for k, v in services()[name].get("environment", {}).items()})
    env.update(overrides)
    return env


def in_image(image: Image, argv: list[str], env: dict[str, str], timeout: float = 300,
             ) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(argv[0], path=env["PATH"])
    assert exe and Path(exe).is_relative_to(image.venv), f"{argv[0]} resolves to {exe}, not the image's venv"
    return subprocess.run([exe, *argv[1:]], cwd=image.workdir, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def lock_pins(path: Path) -> dict[str, str]:
    return {canonicalize_name(m.group(1)): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", path.read_text(), re.MULTILINE)}


# --- static: the Dockerfile and its context (no install needed) ------------------------------------


def test_dockerfile_shape() -> None:
    global_args, stages = parse_dockerfile()
    assert global_args["PYTHON_IMAGE"] == "python:3.11-slim"
    build, final = stages[0], stages[-1]
    assert len(stages) == 2 and build.name == "build"
    assert build.base == final.base == "python:3.11-slim"
    assert stage_env(build, {})["VARIANT"] == stage_env(final, {})["VARIANT"] == "cpu"
    runs = build.all("RUN")
    assert runs == ['sh ops/docker/install.sh deps "$VIRTUAL_ENV" "$VARIANT"',
                    'sh ops/docker/install.sh project "$VIRTUAL_ENV"'], runs
    # The final stage: the venv from the build stage, the OpenMP runtime LightGBM links and nothing else (its
    # apt lists removed), no build tools, not root.
    copies = final.all("COPY")
    assert copies == ["--from=build /opt/venv /opt/venv"], copies
    apt, *others = final.all("RUN")
    assert " ".join(apt.split()) == "apt-get update && apt-get install -y --no-install-recommends libgomp1 " \
                                    "&& rm -rf /var/lib/apt/lists/*", apt
    for run in others:
        assert not re.search(r"apt-get|apk |pip |gcc|make\b", run), run
    user = final.all("USER")[-1].split(":")[0]
    assert user.isdigit() and user != "0" and f"--uid {user}" in " ".join(final.all("RUN"))
    env = stage_env(final, {"PATH": "/usr/bin"})
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["FRAUDSTREAM_BUNDLE"] == "/bundles/latest" and env["FRAUDSTREAM_BUNDLES"] == "/bundles"
    assert env["FRAUDSTREAM_METRICS_PORT"] == "9400"
    assert "/bundles" in final.all("VOLUME")[-1]
    assert not final.all("ENTRYPOINT"), "service_argv() assumes the image has no ENTRYPOINT"
    assert os.access(INSTALL, os.X_OK)


def test_build_context_is_what_the_dockerfile_copies() -> None:
    files = context_files()
    rules = dockerignore_rules()
    for path in (".git/HEAD", ".venv/bin/python", "tests/test_image.py", "bundles/latest/model.json", "data/x",
                 ".state/kafka/broker.log", "schemas/__pycache__/x.pyc", "ops/grafana/dashboards/fraudstream.json"):
        assert not in_context(path, rules), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "schemas/bundle.py", "workers/app.py", "ops/docker/install.sh",
                 "ops/docker/requirements.lock", "ops/kafka/pom.xml"):
        assert path in files, f"{path} is not in the build context"
    assert all(not f.startswith("tests/") for f in files)


def test_lock_covers_pyproject() -> None:
    """Every requirement of pyproject (deps, [trainer], build backend) is pinned, at a version it accepts.

    ``install.sh``'s ``pip check`` catches the same in the install; this says it in a second, offline.
    Re-lock with ``python -m ops.docker.lock``.
    """
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*meta["project"]["dependencies"], *meta["project"]["optional-dependencies"]["trainer"],
              *meta["build-system"]["requires"]]
    cpu, gpu = lock_pins(LOCKS["cpu"]), lock_pins(LOCKS["gpu"])
    assert not cpu.keys() & gpu.keys()
    for line in wanted:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(IMAGE_MARKERS):
            continue
        name = canonicalize_name(req.name)
        assert name in cpu, f"{req} is not in {LOCKS['cpu'].name}: run python -m ops.docker.lock"
        assert req.specifier.contains(Version(cpu[name]), prereleases=True), f"{req} vs locked {cpu[name]}"
    # The GPU lock holds what onnxruntime-gpu's cuda and cudnn extras ask for (metadata of the dev venv).
    extras = [Requirement(r) for r in importlib.metadata.requires("onnxruntime-gpu") or []]
    for req in extras:
        if req.marker and any(req.marker.evaluate({**IMAGE_MARKERS, "extra": e}) for e in ("cuda", "cudnn")) \
                and not req.marker.evaluate({**IMAGE_MARKERS, "extra": ""}):
            name = canonicalize_name(req.name)
            assert name in gpu, f"{req} is not in {LOCKS['gpu'].name}"
            assert req.specifier.contains(Version(gpu[name]), prereleases=True), f"{req} vs locked {gpu[name]}"
    assert Marker("sys_platform == 'linux'").evaluate(IMAGE_MARKERS)
    for path in LOCKS.values():
        body = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        pins = [ln for ln in body if "==" in ln]
        hashes = [ln for ln in body if ln.strip().startswith("--hash=sha256:")]
        assert pins and len(pins) == len(hashes), f"{path.name}: one sha256 per pin"


# --- the install ----------------------------------------------------------------------------------


def test_install_is_the_lock(image: Image) -> None:
    """The venv holds exactly the CPU lock (no dev tools, no CUDA wheels), plus the project itself."""
    done = in_image(image, ["python", "-m", "pip", "list", "--format", "json"], image.env)
    assert done.returncode == 0, done.stderr
    installed = {canonicalize_name(d["name"]): d["version"] for d in json.loads(done.stdout)}
    expected = dict(lock_pins(LOCKS["cpu"]))
    expected.pop("wheel")  # the build tool leaves after the project is built
    installed.pop("pip")
    assert installed.pop("fraudstream") == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert installed == expected
    assert not shutil.which("wheel", path=str(image.venv / "bin"))


def test_every_module_imports(image: Image) -> None:
    """The lock holds every import of the code; the project is installed, not run from the checkout."""
    script = (
        "import importlib, importlib.resources, pkgutil\n"
        "n = 0\n"
        "for top in ('schemas', 'trainer', 'workers', 'ops'):\n"
        "    pkg = importlib.import_module(top)\n"
        "    assert 'site-packages' in pkg.__file__, pkg.__file__\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
        "        if not m.name.endswith('.__main__'):\n"
        "            importlib.import_module(m.name)\n"
        "            n += 1\n"
        "assert importlib.resources.files('ops.kafka').joinpath('pom.xml').is_file()\n"
        "print(n, 'modules')\n"
    )
    done = in_image(image, ["python", "-c", script], image.env)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[0]) > 30


@pytest.mark.parametrize("kind", ["command", "healthcheck"])
def test_compose_commands_answer_help(image: Image, kind: str) -> None:
    """Every command a compose service runs on this image, with the service's environment, answers --help."""
    ran = 0
    for name in built_services():
        argv = service_argv(name) if kind == "command" else healthcheck_argv(name)
        if argv is None:
            continue
        done = in_image(image, [*argv, "--help"], service_env(image, name), timeout=120)
        assert done.returncode == 0, f"{name}: {argv}\n{done.stderr[-3000:]}"
        module = argv[argv.index("-m") + 1]
        assert f"usage: python -m {module}" in done.stdout, f"{name}: {done.stdout[:500]}"
        assert "FRAUDSTREAM_" in done.stdout, f"{name}: --help documents no env variable"
        ran += 1
    assert ran >= (5 if kind == "command" else 2)


# --- the jobs, for real ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(image: Image) -> subprocess.CompletedProcess[str]:
    """The compose trainer job (its command and environment, quick by default) in the image's venv."""
    return in_image(image, service_argv("trainer"), service_env(image, "trainer"), timeout=600)


def test_trainer_job_writes_a_bundle(image: Image, trained: subprocess.CompletedProcess[str]) -> None:
    from schemas.bundle import load_bundle

    assert trained.returncode == 0, trained.stderr[-3000:]
    latest = Path(image.map(services()["worker"]["environment"]["FRAUDSTREAM_BUNDLE"]))
    assert latest.is_symlink() and (latest / "model.onnx").is_file()
    assert Path(trained.stdout.strip().splitlines()[-1]).resolve() == latest.resolve()
    load_bundle(latest)
    # Run again (as every `docker compose up` does): the bundle that verifies is kept, not retrained.
    again = in_image(image, service_argv("trainer"), service_env(image, "trainer"), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "kept" in again.stderr and Path(again.stdout.strip().splitlines()[-1]) == latest.resolve()


@dataclass
class Topics:
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def env(self) -> dict[str, str]:
        names = ("TRANSACTIONS", "LABELS", "FLAGS", "SCORES", "STATS", "DLQ", "TERMINAL_DAYS")
        return {f"FRAUDSTREAM_TOPIC_{n}": f"img-{n.lower().replace('_', '-')}-{self.suffix}" for n in names}


@pytest.fixture(scope="module")
def topics(image: Image, kafka_bootstrap: str) -> tuple[Topics, subprocess.CompletedProcess[str]]:
    t = Topics()
    env = service_env(image, "topic-init", FRAUDSTREAM_BOOTSTRAP=kafka_bootstrap, **t.env())
    return t, in_image(image, service_argv("topic-init"), env, timeout=180)


@pytest.mark.integration
def test_topic_init_job(topics: tuple[Topics, subprocess.CompletedProcess[str]], kafka_admin: KafkaAdminClient,
                        ) -> None:
    t, done = topics
    assert done.returncode == 0, done.stderr[-3000:]
    wanted = int(services()["topic-init"]["environment"]["FRAUDSTREAM_PARTITIONS"])
    env = t.env()
    described = {d.get("name", d.get("topic")): len(d["partitions"])
                 for d in kafka_admin.describe_topics(list(env.values()))}
    assert described[env["FRAUDSTREAM_TOPIC_TRANSACTIONS"]] == wanted
    assert described[env["FRAUDSTREAM_TOPIC_LABELS"]] == wanted
    assert described[env["FRAUDSTREAM_TOPIC_TERMINAL_DAYS"]] == 1
    assert f"{env['FRAUDSTREAM_TOPIC_TRANSACTIONS']}: {wanted} partitions" in done.stdout


@pytest.mark.integration
def test_loadgen_job(image: Image, topics: tuple[Topics, subprocess.CompletedProcess[str]], kafka_bootstrap: str,
                     ) -> None:
    t, init = topics
    assert init.returncode == 0, init.stderr[-3000:]
    env = service_env(image, "loadgen", FRAUDSTREAM_BOOTSTRAP=kafka_bootstrap, FRAUDSTREAM_LOADGEN_COUNT="300",
                      FRAUDSTREAM_LOADGEN_JSON="true", **t.env())
    done = in_image(image, service_argv("loadgen"), env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["transactions"] == 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _running(argv: list[str], env: dict[str, str], image: Image) -> Iterator[subprocess.Popen[str]]:
    exe = shutil.which(argv[0], path=env["PATH"])
    assert exe and Path(exe).is_relative_to(image.venv)
    log = image.root / "tmp" / f"worker-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([exe, *argv[1:]], cwd=image.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
        try:
            yield proc
        except BaseException:
            print(log.read_text()[-6000:])
            raise
        finally:
            terminate(proc, timeout_s=30)


@pytest.mark.integration
def test_worker_passes_its_healthcheck_and_exports_the_dashboards_metrics(
        image: Image, trained: subprocess.CompletedProcess[str],
        topics: tuple[Topics, subprocess.CompletedProcess[str]], kafka_bootstrap: str) -> None:
    assert trained.returncode == 0 and topics[1].returncode == 0
    port = _free_port()
    env = service_env(image, "worker", FRAUDSTREAM_BOOTSTRAP=kafka_bootstrap, FRAUDSTREAM_METRICS_PORT=str(port),
                      FRAUDSTREAM_GROUP_ID=f"img-{uuid.uuid4().hex[:8]}", **topics[0].env())
    check = healthcheck_argv("worker")
    assert check
    with _running(service_argv("worker"), env, image) as worker:
        deadline = time.monotonic() + 120
        while True:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            probe = in_image(image, check, env, timeout=30)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, f"no healthy worker after 120 s: {probe.stderr}"
            time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    exposed = set(declared) | {n + s for n, kind in declared.items() if kind == "histogram" for s in HISTOGRAM_SUFFIXES}
    # The model monitor's panels are its own process's metrics (tests/test_compose.py checks their names).
    monitor = ("fraudstream_model_", "fraudstream_monitor_")
    missing = {m for m in dashboard_metric_names() if not m.startswith(monitor)} - exposed
    assert not missing, f"the dashboard queries metrics this worker does not export: {sorted(missing)}"
    assert compose_config()["services"]["worker"]["environment"]["FRAUDSTREAM_METRICS_PORT"] == "9400"
