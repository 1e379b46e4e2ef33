"""SASL/SCRAM over TLS on a real broker (ops.kafka --sasl-ssl mode): the worker and the load
generator work with good credentials configured through settings; bad ones fail at start with a
clear message; no secret appears in any log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ops.kafka import LocalBroker
from ops.kafka.secure import Secure
from ops.loadgen.replay import events, produce
from tests.integration.harness import Run, stop, wait_for_scores
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration
PASSWORD = "s3cret-Scram-pw-7781"


def test_sasl_scram_over_tls(run: Run, history: tuple[History, Labels], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    h, lab = history
    broker = LocalBroker(tmp_path / "secure-broker", secure=Secure({"fraudstream": PASSWORD}))
    info = broker.start(port=0)
    try:
        assert info.ca_file and Path(info.ca_file).is_file()
        run.bootstrap = info.bootstrap
        good = {"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FRAUDSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                "FRAUDSTREAM_KAFKA_USERNAME": "fraudstream", "FRAUDSTREAM_KAFKA_PASSWORD": PASSWORD,
                "FRAUDSTREAM_KAFKA_CA_FILE": info.ca_file}
        for k, v in good.items():
            monkeypatch.setenv(k, v)
        # Bad credentials: a clear error at start, not a hang or a traceback.
        monkeypatch.setenv("FRAUDSTREAM_KAFKA_PASSWORD", "wrong-password-123")
        bad = subprocess.run([sys.executable, "-m", "workers", *run.args(), "--worker-id", "bad"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert bad.returncode == 2, bad.stderr[-2000:]
        last = bad.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and "refused the credentials" in last and "FRAUDSTREAM_KAFKA_PASSWORD" in last
        assert "Traceback" not in bad.stderr
        print("bad credentials:", last)
        monkeypatch.setenv("FRAUDSTREAM_KAFKA_PASSWORD", PASSWORD)
        # Plaintext clients are refused by the SASL_SSL listener.
        from ops.kafka import broker_answers

        monkeypatch.setenv("FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
        assert not broker_answers(info.bootstrap, timeout_s=3.0)
        monkeypatch.setenv("FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        # Good credentials: the load generator and the worker do their job.
        worker = run.start("w1")
        try:
            n_tx, _ = produce(run.bootstrap, run.topics["transactions"], run.topics["labels"],
                              events(h, lab, 0, 2000))
            scores = wait_for_scores(run, n_tx, worker, timeout_s=120)
        finally:
            assert stop(worker) == 0, run.log("w1")[-3000:]
        assert len({s["tx_id"] for s in scores}) == n_tx
    finally:
        broker.stop()
    logs = run.log("w1") + bad.stdout + bad.stderr + (tmp_path / "secure-broker" / "broker.log").read_text()
    assert PASSWORD not in logs and "wrong-password-123" not in logs, "a secret leaked into a log"
    assert "SASL_SSL as 'fraudstream'" in run.log("w1")

