"""How every fraudstream Kafka client authenticates: one settings object, three client dialects.

Environment (the password only there, never a flag: command lines show in ``ps``):

- ``FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL``: PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
- ``FRAUDSTREAM_KAFKA_SASL_MECHANISM``: SCRAM-SHA-256 (default) | SCRAM-SHA-512 | PLAIN
- ``FRAUDSTREAM_KAFKA_USERNAME`` / ``FRAUDSTREAM_KAFKA_PASSWORD``
- ``FRAUDSTREAM_KAFKA_CA_FILE``: PEM file of the CA that signed the brokers' certificates

The password is kept out of ``repr`` and every log line; ``describe()`` is what may be logged.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


@dataclass(frozen=True)
class KafkaAuth:
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-256"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> KafkaAuth:
        e = os.environ if env is None else env
        auth = KafkaAuth(
            security_protocol=e.get("FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            sasl_mechanism=e.get("FRAUDSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256").upper(),
            username=e.get("FRAUDSTREAM_KAFKA_USERNAME") or None,
            password=e.get("FRAUDSTREAM_KAFKA_PASSWORD") or None,
            ca_file=e.get("FRAUDSTREAM_KAFKA_CA_FILE") or None,
        )
        auth.check()
        return auth

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def check(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise ConfigError(f"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL={self.security_protocol!r}: use one of "
                              f"{', '.join(PROTOCOLS)}")
        if self.sasl and self.sasl_mechanism not in MECHANISMS:
            raise ConfigError(f"FRAUDSTREAM_KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: use one of "
                              f"{', '.join(MECHANISMS)}")
        if self.sasl and not (self.username and self.password):
            raise ConfigError(
                f"{self.security_protocol} needs FRAUDSTREAM_KAFKA_USERNAME and FRAUDSTREAM_KAFKA_PASSWORD")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ConfigError(f"FRAUDSTREAM_KAFKA_CA_FILE={self.ca_file} does not exist")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def describe(self) -> str:
        who = f" as {self.username!r} ({self.sasl_mechanism})" if self.sasl else ""
        return f"{self.security_protocol}{who}"

    def kafka_python(self) -> dict[str, Any]:
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            out["ssl_cafile"] = self.ca_file
            out["ssl_check_hostname"] = True
        if self.sasl:
            out |= {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.username,
                    "sasl_plain_password": self.password}
        return out

    def aiokafka(self) -> dict[str, Any]:
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            out["ssl_context"] = self.ssl_context()
        if self.sasl:
            out |= {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.username,
                    "sasl_plain_password": self.password}
        return out

    def faust(self) -> Any:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(username=self.username, password=self.password,
                                         mechanism=self.sasl_mechanism, ssl_context=self.ssl_context())
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None
