"""SASL/SCRAM over TLS for the local broker: certificates made for the run, users added at format.

Layout: clients connect to a ``SASL_SSL`` listener (SCRAM-SHA-256, a certificate for 127.0.0.1 and
localhost signed by a CA made for this state directory, ``ca.pem`` for clients); the broker
talks to itself on a loopback-only ``INTERNAL`` plaintext listener, which the launcher also uses
to see that the broker answers. Certificates come from ``openssl``.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MECHANISM = "SCRAM-SHA-256"


class SecureSetupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Secure:
    users: dict[str, str]  # name -> password (SCRAM credentials added at format time)

    def __repr__(self) -> str:  # never show passwords
        return f"Secure(users={sorted(self.users)})"


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SecureSetupError(f"{cmd[0]} {cmd[1]} failed: {done.stderr.strip()[-500:]}")


def make_certificates(directory: Path) -> tuple[Path, Path, str]:
    """CA + broker certificate; returns (ca.pem, broker.p12, keystore password)."""
    if not shutil.which("openssl"):
        raise SecureSetupError("openssl is needed to make the TLS certificates (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, p12 = directory / "ca.pem", directory / "broker.p12"
    store_password = (directory / "keystore.password")
    if ca.exists() and p12.exists() and store_password.exists():
        return ca, p12, store_password.read_text().strip()
    password = secrets.token_urlsafe(18)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
          "/CN=fraudstream-local-ca", "-keyout", "ca.key", "-out", "ca.pem"], directory)
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "broker.key",
          "-out", "broker.csr"], directory)
    _run(["openssl", "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
          "-days", "30", "-extfile", "san.ext", "-out", "broker.pem"], directory)
    _run(["openssl", "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
          "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{password}"], directory)
    store_password.write_text(password)
    store_password.chmod(0o600)
    return ca, p12, password


def properties(port: int, internal_port: int, controller_port: int, keystore: Path,
               keystore_password: str) -> dict[str, str]:
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port},"
                     f"CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port}",
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
        "ssl.client.auth": "none",
    }


def scram_arguments(users: dict[str, str]) -> list[str]:
    out: list[str] = []
    for name, password in users.items():
        out += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return out
