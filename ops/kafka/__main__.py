"""Command line for the local broker or cluster: ``python -m ops.kafka start|stop|status [--brokers 3]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ops.kafka.cluster import DEFAULT_HEAP, LocalCluster, cluster_size
from ops.kafka.launcher import DEFAULT_STATE_DIR, KAFKA_VERSION, BrokerError, LocalBroker, broker_answers
from ops.kafka.secure import Secure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ops.kafka",
        description=(
            f"A single-node KRaft Apache Kafka {KAFKA_VERSION} broker on 127.0.0.1, or with --brokers 3 a "
            "three-node cluster (each node broker and controller). "
            "KAFKA_BOOTSTRAP names a running broker (nothing is started); KAFKA_HOME a Kafka install "
            "to run; otherwise the official jars are fetched once from Maven Central."
        ),
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--state-dir", type=Path,
        default=Path(os.environ.get("FRAUDSTREAM_KAFKA_STATE", DEFAULT_STATE_DIR)),
        help="pid, ports, data and log of the broker (env FRAUDSTREAM_KAFKA_STATE; default %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("FRAUDSTREAM_KAFKA_PORT", "9092")),
        help="client port; 0 picks free ports (env FRAUDSTREAM_KAFKA_PORT; default %(default)s)",
    )
    parser.add_argument("--brokers", type=int, choices=[1, 3], default=None,
                        help="1: one broker; 3: a three-node cluster in STATE_DIR/node-1..3, client ports PORT, "
                             "PORT+1, PORT+2, internal topics replicated 3 times (min ISR 2); not with --sasl-ssl. "
                             "Default: what STATE_DIR holds, else 1; stop and status act on what it holds")
    parser.add_argument("--heap", default=None,
                        help=f"JVM heap of the broker (default 512m), or of each node of a cluster ({DEFAULT_HEAP})")
    parser.add_argument("--sasl-ssl", action="store_true",
                        help="clients must use SASL/SCRAM-SHA-256 over TLS (certificates made for this state dir); "
                             "the user is --scram-user, its password env FRAUDSTREAM_KAFKA_PASSWORD; one broker only "
                             "(refused with --brokers 3)")
    parser.add_argument("--scram-user", default=os.environ.get("FRAUDSTREAM_KAFKA_USERNAME", "fraudstream"),
                        help="SCRAM user added at format time (env FRAUDSTREAM_KAFKA_USERNAME; default fraudstream)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the broker (default 90) or every node (default 120) to answer")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        ok = broker_answers(external, timeout_s=10.0)
        print(f"KAFKA_BOOTSTRAP={external}: {'answers' if ok else 'does NOT answer'} (nothing started or stopped)")
        return 0 if ok or args.command == "stop" else 1
    held = cluster_size(args.state_dir)
    if args.command == "start":
        brokers = args.brokers or held or 1
    else:  # What the state dir holds.
        brokers = held or (1 if (args.state_dir / "broker.json").exists() else args.brokers or 1)
    if brokers > 1 or held:
        return cluster_main(args, brokers, held)
    secure = None
    if args.sasl_ssl:
        password = os.environ.get("FRAUDSTREAM_KAFKA_PASSWORD", "")
        if len(password) < 8:
            print("error: --sasl-ssl needs the SCRAM password (8+ characters) in env FRAUDSTREAM_KAFKA_PASSWORD",
                  file=sys.stderr)
            return 1
        secure = Secure({args.scram_user: password})
    broker = LocalBroker(args.state_dir, heap=args.heap or "512m", secure=secure)
    try:
        if args.command == "start":
            t0 = time.monotonic()
            info = broker.start(port=args.port, timeout_s=args.timeout or 90.0)
            print(f"broker ready at {info.bootstrap} (pid {info.pid}, {time.monotonic() - t0:.1f}s); "
                  f"log {broker.log}", file=sys.stderr)
            print(info.bootstrap)
            if info.ca_file:
                print("# clients: FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL "
                      "FRAUDSTREAM_KAFKA_SASL_MECHANISM=SCRAM-SHA-256 "
                      f"FRAUDSTREAM_KAFKA_USERNAME={args.scram_user} FRAUDSTREAM_KAFKA_CA_FILE={info.ca_file} "
                      "(password: the one given)", file=sys.stderr)
            return 0
        if args.command == "stop":
            print("broker stopped" if broker.stop() else "no broker running")
            return 0
        current = broker.running()
        if current and broker_answers(current.bootstrap):
            print(f"running at {current.bootstrap} (pid {current.pid})")
            return 0
        print("not running" if not current else f"process {current.pid} runs but does not answer")
        return 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cluster_main(args: argparse.Namespace, brokers: int, held: int) -> int:
    """start/stop/status of a cluster: ``brokers`` nodes asked for, ``held`` nodes in the state dir (0: none)."""
    if args.command == "start" and args.sasl_ssl:
        print("error: --sasl-ssl runs one broker only; start the cluster without it (plaintext on 127.0.0.1)",
              file=sys.stderr)
        return 1
    if held and brokers != held:
        print(f"error: {args.state_dir} holds a {held}-node cluster: use --brokers {held} or another --state-dir",
              file=sys.stderr)
        return 1
    try:
        cluster = LocalCluster(args.state_dir, size=brokers, heap=args.heap or DEFAULT_HEAP)
        if args.command == "start":
            t0 = time.monotonic()
            info = cluster.start(port=args.port, timeout_s=args.timeout or 120.0)
            pids = ", ".join(str(n.pid) for n in info.nodes.values())
            print(f"cluster of {brokers} ready at {info.bootstrap} (pids {pids}, {time.monotonic() - t0:.1f}s); "
                  f"logs {cluster.state}/node-*/broker.log", file=sys.stderr)
            print(info.bootstrap)
            return 0
        if args.command == "stop":
            print(f"cluster of {brokers} stopped" if cluster.stop() else "no broker running")
            return 0
        nodes = cluster.status()
        if not nodes:
            print("not running")
            return 3
        for n in nodes:
            state = "answers" if n.answers else "paused" if n.paused else "runs, does not answer" if n.alive \
                else "not running"
            print(f"node {n.node_id}: 127.0.0.1:{n.port} pid {n.pid or '-'} {state}")
        return 0 if all(n.answers for n in nodes) else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
