"""Secrets never show in the settings' repr (it reaches logs and tracebacks)."""

from __future__ import annotations

import pytest

from workers.config import parse


def test_the_bundle_key_and_the_kafka_password_stay_out_of_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_BUNDLE_KEY", "s3cret-signing-key-0123456789")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_USERNAME", "worker")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_PASSWORD", "kafka-pa55word")
    s = parse(["--bundle", "bundles/latest", "--require-signature", "true"])
    assert s.bundle_key == b"s3cret-signing-key-0123456789"  # kept, only not shown
    text = repr(s)
    assert "s3cret" not in text and "kafka-pa55word" not in text
    assert "bundle=" in text and "worker" in text
