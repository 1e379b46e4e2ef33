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
from dataclasses import asdict, dataclass, replace
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


def check_ports_free(ports: list[int]) -> None:
    for p in ports:
        if port_in_use(p):
            raise BrokerError(f"port {p} on 127.0.0.1 is taken: stop what uses it, or pass --port 0 for free ports")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    return process_state(pid) != "Z"


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat (R, S, T when stopped, Z when a zombie); "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def broker_answers(bootstrap: str, timeout_s: float = 5.0, *, this_node: bool = False) -> bool:
    """True when the broker answers a metadata request.

    ``this_node``: the answer of the broker at ``bootstrap`` (one ``host:port``) to the client's bootstrap
    metadata request is enough; the DescribeCluster that follows otherwise may go to any broker of a cluster.
    """
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
        if not this_node:
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


def server_properties(state: Path, port: int, controller_port: int, extra: dict[str, str], *,
                      node_id: int = 1, voters: str = "", replication: int = 1) -> str:
    """``server.properties`` of one combined broker+controller node whose data lives in ``state/data``.

    ``voters`` is the static controller quorum (``1@host:port,2@host:port,...``; default: this node
    alone). With ``replication`` > 1 the internal topics are replicated that many times and need a
    majority of their replicas in sync, as do topics created without explicit settings.
    """
    min_isr = replication // 2 + 1 if replication > 1 else 1
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(state / "data"),
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        # Retention long enough for the 37-day state horizon of a replay.
        "log.retention.hours": "-1",
        "message.max.bytes": "1048588",
    }
    if replication > 1:
        props["default.replication.factor"] = str(replication)
        props["min.insync.replicas"] = str(min_isr)
    props.update(extra)
    return "".join(f"{k}={v}\n" for k, v in props.items())


def terminate(pids: list[int], grace_s: float) -> None:
    """SIGTERM each (after a SIGCONT, should one be paused), SIGKILL what is left after ``grace_s``; reap children."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed_by = time.monotonic() + 5.0
            while pid_alive(pid) and time.monotonic() < killed_by:
                time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):  # Reap it when it is our child.
            os.waitpid(pid, os.WNOHANG)


class LocalBroker:
    """A broker process whose files live under ``state_dir``.

    A ``node_id`` and the ``voters``/``replication`` of :meth:`launch` make it a node of
    :class:`ops.kafka.cluster.LocalCluster`; without, it is node 1 of a one-voter quorum.
    """

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, heap: str = "512m",
                 secure: Secure | None = None, node_id: int | None = None) -> None:
        self.state = Path(state_dir).resolve()
        self.heap = heap
        self.secure = secure
        self.node_id = node_id or 1
        self.cluster_node = node_id is not None   # then only this node's own answer counts
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
        self.state.mkdir(parents=True, exist_ok=True)
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
        plan = BrokerInfo(port=port, controller_port=controller_port, cluster_id=cluster_id, pid=0,
                          internal_port=internal_port, ca_file=ca_file)
        info = self.launch(plan, extra, scram)
        self.wait_ready(info, timeout_s)
        return info

    def launch(self, plan: BrokerInfo, extra: dict[str, str], scram: list[str] | None = None, *,
               voters: str = "", replication: int = 1) -> BrokerInfo:
        """Write ``server.properties``, format the storage (once) and start the JVM; do not wait for it.

        ``plan`` gives the ports and cluster id (its pid is ignored); the started broker's info is
        written to ``broker.json`` and returned.
        """
        self.state.mkdir(parents=True, exist_ok=True)
        check_ports_free([plan.port, plan.controller_port, *([plan.internal_port] if plan.internal_port else [])])
        java = java_binary()
        cp = classpath()
        props = self.state / "server.properties"
        props.write_text(self.properties(plan, extra, voters=voters, replication=replication))
        props.chmod(0o600)  # holds the keystore password in SASL/TLS mode
        fmt = subprocess.run(
            [java, "-cp", cp, "kafka.tools.StorageTool", "format", f"--cluster-id={plan.cluster_id}",
             "-c", str(props), "--ignore-formatted", *(scram or [])],
            capture_output=True, text=True, check=False,
        )
        if fmt.returncode != 0:
            detail = f"{fmt.stdout}{fmt.stderr}"
            for password in (self.secure.users.values() if self.secure else ()):
                detail = detail.replace(password, "***")
            raise BrokerError(f"formatting the broker's storage failed:\n{detail}")
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                 "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                 "-Dorg.slf4j.simpleLogger.showDateTime=true",
                 "-cp", cp, "kafka.Kafka", str(props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        info = replace(plan, pid=self._proc.pid)
        self.record(info)
        return info

    def properties(self, plan: BrokerInfo, extra: dict[str, str], *, voters: str = "", replication: int = 1) -> str:
        """The ``server.properties`` text :meth:`launch` writes for ``plan``."""
        return server_properties(self.state, plan.port, plan.controller_port, extra,
                                 node_id=self.node_id, voters=voters, replication=replication)

    def record(self, info: BrokerInfo) -> None:
        """Write ``broker.json``: the ports and cluster id a later start reuses, and the pid (0: none runs)."""
        self.state.mkdir(parents=True, exist_ok=True)
        self.info_file.write_text(json.dumps(asdict(info)))

    def wait_ready(self, info: BrokerInfo, timeout_s: float, deadline: float | None = None) -> None:
        """Wait until the launched broker answers; stop it and raise when it exits or the time is up.

        ``deadline`` (a ``time.monotonic()`` value) replaces ``timeout_s`` from now, for nodes started together.
        """
        deadline = time.monotonic() + timeout_s if deadline is None else deadline
        while time.monotonic() < deadline:
            code = self._proc.poll() if self._proc is not None and self._proc.pid == info.pid else None
            if code is not None or not pid_alive(info.pid):
                raise BrokerError(
                    f"the broker exited with code {code} during start; its log says:\n{log_tail(self.log)}"
                )
            if broker_answers(info.probe, timeout_s=2.0, this_node=self.cluster_node):
                return
            time.sleep(0.5)
        terminate([info.pid], grace_s=10)
        self._reap()
        raise BrokerError(
            f"the broker did not answer within {timeout_s:.0f}s; its log says:\n{log_tail(self.log)}"
        )

    def send_signal(self, sig: int) -> int:
        """Send ``sig`` to the running broker; its pid (0 when none runs)."""
        info = self.running()
        if not info:
            return 0
        os.kill(info.pid, sig)
        return info.pid

    def stop(self, grace_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``grace_s``). True if it was running."""
        info = self.running()
        if not info:
            return False
        terminate([info.pid], grace_s)
        self.forget_process()
        return True

    def forget_process(self) -> None:
        """After the process has ended: reap it and record that none runs (``pid`` 0, ports and data kept)."""
        self._reap()
        info = self.info()
        if info is not None and info.pid and not pid_alive(info.pid):
            self.record(replace(info, pid=0))

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
