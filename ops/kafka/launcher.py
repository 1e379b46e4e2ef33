"""A single-node KRaft Apache Kafka broker on 127.0.0.1, started from real jars.

Where the broker comes from, in order:

1. ``KAFKA_BOOTSTRAP`` names a running broker: nothing is started, it is only checked.
2. ``KAFKA_HOME`` names a user's Kafka install: its ``libs/`` are used.
3. Otherwise the official jars are fetched once from Maven Central with the ``pom.xml`` beside
   this module and cached under ``$FRAUDSTREAM_CACHE`` (default ``~/.cache/fraudstream``).

The state directory keeps ``server.properties``, the log directory, ``broker.pid``,
``broker.json`` (ports, cluster id) and ``broker.log``.  A restart on the same state directory
reuses the ports and the data.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ops.kafka.secure import Secure, SecureSetupError, make_certificates, scram_arguments
from ops.kafka.secure import properties as secure_properties

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).with_name("pom.xml")
DEFAULT_STATE_DIR = Path(".state/kafka")


class BrokerError(RuntimeError):
    """The broker could not be provided; the message says what to fix."""


@dataclass(frozen=True)
class BrokerInfo:
    port: int
    controller_port: int
    cluster_id: str
    pid: int
    internal_port: int = 0   # SASL/TLS mode: the broker's loopback plaintext listener
    ca_file: str = ""        # SASL/TLS mode: the CA clients must trust

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def probe(self) -> str:
        """Where the launcher checks that the broker answers (plaintext)."""
        return f"127.0.0.1:{self.internal_port or self.port}"


def cache_dir() -> Path:
    root = os.environ.get("FRAUDSTREAM_CACHE") or os.path.join(Path.home(), ".cache", "fraudstream")
    return Path(root)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="fraudstream-launcher",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no broker log yet)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError("no Java found: install Java 17+ (or set JAVA_HOME), or set KAFKA_BOOTSTRAP")
    return found


def fetch_jars(libs: Path) -> Path:
    """Copy the broker's runtime jars from Maven Central into ``libs`` (once)."""
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "Maven (mvn) not found: install Maven, or set KAFKA_HOME to a Kafka install, "
            "or KAFKA_BOOTSTRAP to a running broker"
        )
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BrokerError(
            f"Maven could not fetch the Kafka {KAFKA_VERSION} jars from Maven Central "
            f"(check the network or ~/.m2/settings.xml):\n{tail}"
        )
    marker.write_text(KAFKA_VERSION)
    return libs


def classpath() -> str:
    kafka_home = os.environ.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home) / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise BrokerError(f"KAFKA_HOME={kafka_home} has no libs/kafka_*.jar: point it at a Kafka install")
        return f"{libs}/*"
    return f"{fetch_jars(cache_dir() / f'kafka-{KAFKA_VERSION}' / 'libs')}/*"


def new_cluster_id() -> str:
    """A Kafka cluster id: url-safe base64 of a random UUID, never starting with '-' (as Kafka's own)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(state: Path, port: int, controller_port: int, extra: dict[str, str]) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(state / "data"),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        # Retention long enough for the 37-day state horizon of a replay.
        "log.retention.hours": "-1",
        "message.max.bytes": "1048588",
    }
    props.update(extra)
    return "".join(f"{k}={v}\n" for k, v in props.items())


class LocalBroker:
    """A broker process whose files live under ``state_dir``."""

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, heap: str = "512m",
                 secure: Secure | None = None) -> None:
        self.state = Path(state_dir).resolve()
        self.heap = heap
        self.secure = secure
        self.log = self.state / "broker.log"
        self.info_file = self.state / "broker.json"
        self._proc: subprocess.Popen[bytes] | None = None

    def info(self) -> BrokerInfo | None:
        if not self.info_file.exists():
            return None
        return BrokerInfo(**json.loads(self.info_file.read_text()))

    def running(self) -> BrokerInfo | None:
        info = self.info()
        if info and info.pid > 0 and pid_alive(info.pid):
            return info
        return None

    def start(self, port: int = 9092, controller_port: int = 0, timeout_s: float = 90.0) -> BrokerInfo:
        """Start the broker (idempotent) and wait until it answers a metadata request."""
        current = self.running()
        if current:
            if broker_answers(current.probe):
                return current
            raise BrokerError(
                f"a broker process (pid {current.pid}) runs for {self.state} but does not answer on "
                f"{current.bootstrap}; run `python -m ops.kafka stop` first.\n{log_tail(self.log)}"
            )
        previous = self.info()
        self.state.mkdir(parents=True, exist_ok=True)
        internal_port = 0
        if previous:  # Same data, same ports, same cluster id.
            port, controller_port, cluster_id = previous.port, previous.controller_port, previous.cluster_id
            internal_port = previous.internal_port
        else:
            port = port or free_port()
            controller_port = controller_port or free_port()
            while controller_port == port:
                controller_port = free_port()
            cluster_id = new_cluster_id()
        extra: dict[str, str] = {}
        scram: list[str] = []
        ca_file = ""
        if self.secure is not None:
            while internal_port in (0, port, controller_port):
                internal_port = free_port()
            try:
                ca, keystore, store_password = make_certificates(self.state / "tls")
            except SecureSetupError as exc:
                raise BrokerError(str(exc)) from exc
            extra = secure_properties(port, internal_port, controller_port, keystore, store_password)
            scram = scram_arguments(self.secure.users)
            ca_file = str(ca)
        for p in (port, controller_port, *([internal_port] if internal_port else [])):
            if port_in_use(p):
                raise BrokerError(
                    f"port {p} on 127.0.0.1 is taken: stop what uses it, or pass --port 0 for free ports"
                )
        java = java_binary()
        cp = classpath()
        props = self.state / "server.properties"
        props.write_text(server_properties(self.state, port, controller_port, extra))
        props.chmod(0o600)  # holds the keystore password in SASL/TLS mode
        fmt = subprocess.run(
            [java, "-cp", cp, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
             "-c", str(props), "--ignore-formatted", *scram],
            capture_output=True, text=True, check=False,
        )
        if fmt.returncode != 0:
            detail = f"{fmt.stdout}{fmt.stderr}"
            for password in (self.secure.users.values() if self.secure else ()):
                detail = detail.replace(password, "***")
            raise BrokerError(f"formatting the broker's storage failed:\n{detail}")
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                 "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                 "-Dorg.slf4j.simpleLogger.showDateTime=true",
                 "-cp", cp, "kafka.Kafka", str(props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc = proc
        info = BrokerInfo(port=port, controller_port=controller_port, cluster_id=cluster_id, pid=proc.pid,
                          internal_port=internal_port, ca_file=ca_file)
        self.info_file.write_text(json.dumps(asdict(info)))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {proc.returncode} during start; its log says:\n"
                    f"{log_tail(self.log)}"
                )
            if broker_answers(info.probe, timeout_s=2.0):
                return info
            time.sleep(0.5)
        self._terminate(proc.pid, grace_s=10)
        proc.wait()
        raise BrokerError(f"the broker did not answer within {timeout_s:.0f}s; its log says:\n{log_tail(self.log)}")

    def stop(self, grace_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``grace_s``). True if it was running."""
        info = self.running()
        if not info:
            return False
        self._terminate(info.pid, grace_s)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.info_file.write_text(json.dumps({**asdict(info), "pid": 0}))
        return True

    @staticmethod
    def _terminate(pid: int, grace_s: float) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # Reap it when it is our child.
            os.waitpid(pid, os.WNOHANG)
