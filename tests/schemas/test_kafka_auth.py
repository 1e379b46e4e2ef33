"""Kafka client security settings: validated at start, never printing the password."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from schemas.kafka_auth import KafkaAuth


def test_defaults_are_plaintext() -> None:
    auth = KafkaAuth.from_env({})
    assert auth.kafka_python() == {"security_protocol": "PLAINTEXT"} and auth.faust() is None


def test_sasl_ssl_settings_and_secret_hygiene(tmp_path: pytest.TempPathFactory) -> None:
    env = {"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "FRAUDSTREAM_KAFKA_USERNAME": "u",
           "FRAUDSTREAM_KAFKA_PASSWORD": "hunter2-secret"}
    auth = KafkaAuth.from_env(env)
    assert auth.kafka_python()["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth.aiokafka()["ssl_context"] is not None
    assert "hunter2" not in repr(auth) and "hunter2" not in auth.describe()
    assert "hunter2" not in repr(auth.faust())


@pytest.mark.parametrize(("env", "message"), [
    ({"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "use one of"),
    ({"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs FRAUDSTREAM_KAFKA_USERNAME"),
    ({"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FRAUDSTREAM_KAFKA_USERNAME": "u",
      "FRAUDSTREAM_KAFKA_PASSWORD": "p", "FRAUDSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "MECHANISM"),
    ({"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "FRAUDSTREAM_KAFKA_CA_FILE": "/nope.pem"}, "does not exist"),
])
def test_bad_settings_fail_with_the_variable_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaAuth.from_env(env)
