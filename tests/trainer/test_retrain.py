"""``python -m trainer retrain``: a candidate from the topics, compared with the champion, published as shadow.

One simulated history (150 customers, 70 days, realistic label delays) is replayed once onto uuid-named
topics with malformed and refused records among it (what the worker would dead-letter, and what the
trainer cannot use); each test has its own registry topics. Checked on the real broker:

- the history and labels read equal ``load_history`` of the same rows written to Parquet, and the
  candidate is ``trainer train``'s model on those files: the same LightGBM model text, so the same scores;
- the decision: a clearly worse champion and an equal one let the candidate through as shadow; a
  worse candidate, or a tolerance that asks for more than it gives, is not published, the report says why;
- ``--auto-promote``: a retrain shadow older than N days is promoted; a newer one is kept;
- every malformed record is skipped and counted by reason, never fatal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from ops.loadgen.replay import events, label_value, produce, transaction_value
from schemas.bundle import Bundle, load_bundle
from schemas.kafka_auth import KafkaAuth
from schemas.registry_io import Registry
from trainer.cli import main
from trainer.data import DataQualityError, load_history, write_history
from trainer.evaluate import Metrics
from trainer.export import offline_scores
from trainer.retrain import DEFAULT_DAYS, PASSED, RETRAIN_BY, decide, duration, fully_labelled_week, run_every
from trainer.simulate import DAY_MS, History, Labels, SimConfig, labels_of, simulate
from trainer.topics_source import read_topics

SIM = SimConfig(customers=150, terminals=300, days=70, seed=1)
FAST = ("--folds", "0")  # the prequential folds only add report rows; the tests need the candidate


@dataclass(frozen=True)
class Stream:
    bootstrap: str
    transactions: str
    labels: str
    tx_skipped: dict[str, int]
    label_skipped: dict[str, int]
    extra_tx: int
    extra_labels: int


@pytest.fixture(scope="module")
def sim() -> tuple[History, Labels]:
    h = simulate(SIM)
    return h, labels_of(h)


def _malformed(h: History, lab: Labels, tx: str, lb: str) -> tuple[list[tuple[str, bytes | None, bytes]],
                                                                    dict[str, int], dict[str, int]]:
    """Records the worker dead-letters or the trainer cannot use, and the reasons they are counted under."""
    last = len(h) - 1  # the newest transaction: its id is still in its partition's state
    c, t, ts = str(h.customer_id[last]), str(h.terminal_id[last]), int(h.ts[last])
    other_t = next(str(x) for x in h.terminal_id if str(x) != t)

    def tx_value(tx_id: str, customer: str = c, when: int = ts, cents: int = 1234) -> bytes:
        return transaction_value(tx_id, when, customer, t, cents)

    txs = [
        (b"c-x", b"not json"),                                            # bad_json
        (c.encode(), b'{"tx_id": "tx-m1", "customer_id": "' + c.encode() + b'"}'),  # missing_field:ts
        (c.encode(), orjson.dumps({"tx_id": "tx-m2", "ts": ts, "customer_id": c, "terminal_id": t,
                                   "amount": 0.001})),                    # bad_amount:sub_cent
        (b"someone-else", tx_value("tx-m3")),                             # key_mismatch
        (c.encode(), tx_value(str(h.tx_id[last]))),                       # duplicate_tx_id
        (c.encode(), tx_value("tx-m4", when=int(h.ts[0]))),               # late: 70 days behind
        (c.encode(), b""),                                                # empty
    ]
    j = int(np.flatnonzero(lab.tx_id == h.tx_id[last])[0])
    label = (str(lab.tx_id[j]), str(lab.customer_id[j]), str(lab.terminal_id[j]), int(lab.ts[j]))
    labels = [
        (t.encode(), b"{"),                                                              # bad_json
        (t.encode(), orjson.dumps({**orjson.loads(label_value(*label, 1, ts + 1)), "is_fraud": 2})),  # bad_is_fraud
        (t.encode(), label_value(*label, 1, ts - 1)),                                    # bad_reported_at
        (b"nope", label_value(*label, 1, ts + 1)),                                       # key_mismatch
        (t.encode(), label_value("tx-unknown", c, t, ts, 1, ts + 1)),                    # unknown_tx
        (other_t.encode(), label_value(label[0], c, other_t, ts, 1, ts + 1)),            # label_disagrees
    ]
    extra = [(tx, k, v) for k, v in txs] + [(lb, k, v) for k, v in labels]
    tx_skipped = {"bad_json": 1, "missing_field:ts": 1, "bad_amount:sub_cent": 1, "key_mismatch": 1,
                  "duplicate_tx_id": 1, "late": 1, "empty": 1}
    label_skipped = {"bad_json": 1, "bad_is_fraud": 1, "bad_reported_at": 1, "key_mismatch": 1, "unknown_tx": 1,
                     "label_disagrees": 1}
    return extra, tx_skipped, label_skipped


@pytest.fixture(scope="module")
def stream(kafka_bootstrap: str, kafka_admin: KafkaAdminClient, sim: tuple[History, Labels]) -> Stream:
    """The history replayed (``ops.loadgen.replay``) onto 4-partition topics, the malformed records after it."""
    h, lab = sim
    tag = uuid.uuid4().hex[:12]
    tx, lb = f"transactions-{tag}", f"fraud-labels-{tag}"
    kafka_admin.create_topics([NewTopic(tx, 4, 1), NewTopic(lb, 4, 1)])
    extra, tx_skipped, label_skipped = _malformed(h, lab, tx, lb)
    assert produce(kafka_bootstrap, tx, lb, events(h, lab), extra=extra) == (len(h), len(lab))
    return Stream(kafka_bootstrap, tx, lb, tx_skipped, label_skipped, sum(1 for e in extra if e[0] == tx),
                  sum(1 for e in extra if e[0] == lb))


@pytest.fixture(scope="module")
def files(sim: tuple[History, Labels], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_history(sim[0], tmp_path_factory.mktemp("files"))


def _train(files: tuple[Path, Path], out: Path, *flags: str) -> Bundle:
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--transactions", str(files[0]), "--labels",
                           str(files[1]), *FAST, "--out", str(out), *flags], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return load_bundle(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """``trainer train`` on the files: with the defaults ("good"), and a stump of one tree ("weak")."""
    out = tmp_path_factory.mktemp("trained")
    good = _train(files, out)
    time.sleep(1.0)  # versions are named by the second
    return {"good": good, "weak": _train(files, out, "--rounds", "1", "--num-leaves", "2")}


@pytest.fixture
def registry(kafka_bootstrap: str) -> Iterator[Registry]:
    tag = uuid.uuid4().hex[:12]
    reg = Registry(kafka_bootstrap, bundles_topic=f"model-bundles-{tag}", control_topic=f"model-control-{tag}")
    yield reg
    reg.close()


def _champion(reg: Registry, bundle: Bundle) -> None:
    reg.publish(bundle)
    reg.write_control(reg.control().promote(bundle.model_version, int(time.time() * 1000), "test", "champion"))


def _retrain(stream: Stream, reg: Registry, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", "retrain", "--bootstrap", stream.bootstrap,
                           "--topic-transactions", stream.transactions, "--topic-labels", stream.labels,
                           "--topic-model-bundles", reg.bundles_topic, "--topic-model-control", reg.control_topic,
                           *FAST, "--out", str(out), *flags], capture_output=True, text=True, timeout=300, check=False)


def _candidates(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def _report(bundle: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads((bundle / "retrain_report.json").read_text())
    assert (bundle / "retrain_report.md").read_text().startswith(f"# Retrain report: {bundle.name}")
    return report


# -- the data read and the candidate ---------------------------------------------------------------------------


@pytest.mark.integration
def test_topics_give_what_load_history_gives_from_files(stream: Stream, files: tuple[Path, Path]) -> None:
    got = read_topics(stream.bootstrap, KafkaAuth.from_env(), stream.transactions, stream.labels, 0, DEFAULT_DAYS)
    want = load_history(*files)
    for f in fields(History):
        a, b = getattr(got.history, f.name), getattr(want.history, f.name)
        if f.name == "scenario":  # the topics carry no scenario: a fraud of unknown scenario is -1
            a, b = a != 0, b != 0
        assert a.dtype == b.dtype and np.array_equal(a, b), f.name
    for f in fields(Labels):
        a, b = getattr(got.labels, f.name), getattr(want.labels, f.name)
        assert a.dtype == b.dtype and np.array_equal(a, b), f.name
    assert (got.report.transactions, got.report.labels, got.report.frauds) == (
        want.report.transactions, want.report.labels, want.report.frauds)


@pytest.mark.integration
def test_malformed_records_are_skipped_and_counted(stream: Stream, sim: tuple[History, Labels]) -> None:
    h, lab = sim
    got = read_topics(stream.bootstrap, KafkaAuth.from_env(), stream.transactions, stream.labels, 0, DEFAULT_DAYS)
    tx, lb = got.transactions, got.label_records
    assert (tx.records, tx.accepted, dict(tx.skipped)) == (len(h) + stream.extra_tx, len(h), stream.tx_skipped)
    assert (lb.records, lb.accepted, dict(lb.skipped)) == (len(lab) + stream.extra_labels, len(lab),
                                                           stream.label_skipped)
    # A shorter window: the older transactions and their labels are left out, counted apart from the skipped.
    short = read_topics(stream.bootstrap, KafkaAuth.from_env(), stream.transactions, stream.labels, 0, 30)
    start = (int(h.ts.max()) // DAY_MS - 29) * DAY_MS
    assert short.window[0] == start and int(short.history.ts.min()) >= start
    assert short.transactions.outside_window == int((h.ts < start).sum()) == len(h) - len(short.history)
    assert short.label_records.outside_window == int((lab.ts < start).sum())
    # Nothing read since a time after the last record: a clear refusal, not a crash.
    with pytest.raises(DataQualityError, match="no usable transaction"):
        read_topics(stream.bootstrap, KafkaAuth.from_env(), stream.transactions, stream.labels,
                    int(time.time() * 1000) + 3_600_000, DEFAULT_DAYS)


@pytest.mark.integration
def test_retrain_is_trainer_train_on_the_same_data(stream: Stream, sim: tuple[History, Labels],
                                                   trained: dict[str, Bundle], registry: Registry,
                                                   tmp_path: Path) -> None:
    """No champion yet: published as shadow, and the candidate is ``trainer train``'s model of the files."""
    t0 = time.monotonic()
    done = _retrain(stream, registry, tmp_path / "out")
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    (cand_dir,) = _candidates(tmp_path / "out")
    assert not (tmp_path / "out" / "latest").exists(), "a candidate is not the deployed model"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [cand_dir.name], "no staging left behind"
    assert done.stdout.strip() == f"published as shadow: {cand_dir.name} ({cand_dir}): " + _report(cand_dir)["why"]
    cand, good = load_bundle(cand_dir), trained["good"]
    # Deterministic LightGBM on the same rows in the same order: the same model, to the byte.
    assert (cand.path / "model.lgb.txt").read_text() == (good.path / "model.lgb.txt").read_text()
    for key in ("threshold", "data_window", "metrics", "params"):
        assert cand.manifest[key] == good.manifest[key], key
    h, lab = sim
    week = fully_labelled_week(int(h.ts.max()))
    rows = week.contains(h.ts)
    a, b = offline_scores(h, lab, cand.onnx_path), offline_scores(h, lab, good.onnx_path)
    assert max(abs(a[i] - b[i]) for i in h.tx_id[rows].tolist()) <= 1e-6
    report = _report(cand_dir)
    assert report["status"] == "shadow" and report["champion"] is None and "no champion" in str(report["why"])
    assert report["week"]["label"] == week.label()  # type: ignore[index]
    assert report["data"]["topics"]["transactions"]["skipped"] == stream.tx_skipped  # type: ignore[index]
    c = registry.control()
    assert (c.champion, c.shadow, c.by) == (None, cand.model_version, RETRAIN_BY) and c.reason.startswith(PASSED)
    assert cand.model_version in registry.indexes()
    print(f"retrain run: {took:.1f}s")


# -- the decision ----------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_clearly_worse_champion_gets_the_candidate_as_shadow(stream: Stream, trained: dict[str, Bundle],
                                                               registry: Registry, tmp_path: Path) -> None:
    weak = trained["weak"]
    _champion(registry, weak)
    done = _retrain(stream, registry, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    (cand_dir,) = _candidates(tmp_path / "out")
    report = _report(cand_dir)
    cand_m, champ_m = report["candidate"]["metrics"], report["champion"]["metrics"]  # type: ignore[index]
    assert report["champion"]["version"] == weak.model_version  # type: ignore[index]
    assert cand_m["ap"] > champ_m["ap"] + 0.1, (cand_m, champ_m)
    assert report["status"] == "shadow" and "not worse than the champion" in str(report["why"])
    c = registry.control()
    assert (c.champion, c.shadow, c.by) == (weak.model_version, cand_dir.name, RETRAIN_BY)
    assert c.reason.startswith(PASSED) and f"AP {cand_m['ap']:.4f} vs champion {champ_m['ap']:.4f}" in c.reason


@pytest.mark.integration
def test_an_equal_champion_passes_and_a_demanding_tolerance_refuses(stream: Stream, trained: dict[str, Bundle],
                                                                    registry: Registry, tmp_path: Path) -> None:
    good = trained["good"]
    _champion(registry, good)
    done = _retrain(stream, registry, tmp_path / "a")
    assert done.returncode == 0, done.stderr
    (first,) = _candidates(tmp_path / "a")
    report = _report(first)
    assert report["candidate"]["metrics"] == report["champion"]["metrics"]  # type: ignore[index]
    assert report["status"] == "shadow"
    assert registry.control().shadow == first.name
    # The same model again, asked to beat the champion's CP@100 by 0.5: refused, nothing changes in the registry.
    done = _retrain(stream, registry, tmp_path / "b", "--tolerance-cp", "-0.5")
    assert done.returncode == 0, done.stderr
    (second,) = _candidates(tmp_path / "b")
    report = _report(second)
    assert report["status"] == "refused" and not report["passed"]
    assert "worse than the champion beyond the tolerance (CP@100 +0.0000)" in str(report["why"])
    assert done.stdout.startswith(f"not published: {second.name}")
    c = registry.control()
    assert (c.champion, c.shadow) == (good.model_version, first.name)
    assert second.name not in registry.indexes()


@pytest.mark.integration
def test_a_worse_candidate_is_not_published(stream: Stream, trained: dict[str, Bundle], registry: Registry,
                                            tmp_path: Path) -> None:
    good = trained["good"]
    _champion(registry, good)
    done = _retrain(stream, registry, tmp_path / "out", "--rounds", "1", "--num-leaves", "2")
    assert done.returncode == 0, done.stderr
    (cand_dir,) = _candidates(tmp_path / "out")
    report = _report(cand_dir)
    assert report["status"] == "refused" and "worse than the champion beyond the tolerance (AP -" in str(report["why"])
    md = (cand_dir / "retrain_report.md").read_text()
    assert "**Decision: not published.**" in md and good.model_version in md
    c = registry.control()
    assert (c.champion, c.shadow) == (good.model_version, None)
    assert set(registry.indexes()) == {good.model_version}


@pytest.mark.integration
def test_auto_promote_promotes_an_old_retrain_shadow_and_keeps_a_new_one(
        stream: Stream, trained: dict[str, Bundle], registry: Registry, tmp_path: Path) -> None:
    good, weak = trained["good"], trained["weak"]
    _champion(registry, weak)
    registry.publish(good)
    two_days_ago = int(time.time() * 1000) - 2 * DAY_MS
    registry.write_control(registry.control().with_shadow(good.model_version, two_days_ago, RETRAIN_BY,
                                                          f"{PASSED} on some week: not worse"))
    done = _retrain(stream, registry, tmp_path / "a", "--auto-promote", "1")
    assert done.returncode == 0, done.stderr
    (first,) = _candidates(tmp_path / "a")
    promoted = _report(first)["auto_promote"]
    assert promoted["promoted"] == good.model_version  # type: ignore[index]
    c = registry.control()
    # Promoted, then the new candidate compared with it (equal: passes) and made shadow.
    assert (c.champion, c.shadow, c.previous) == (good.model_version, first.name, (weak.model_version,))
    # A day later? No: the shadow is minutes old, so the next passing candidate is published only.
    done = _retrain(stream, registry, tmp_path / "b", "--auto-promote", "1")
    assert done.returncode == 0, done.stderr
    (second,) = _candidates(tmp_path / "b")
    report = _report(second)
    assert report["status"] == "published" and "1-day shadow period" in str(report["why"])
    assert report["auto_promote"]["promoted"] is None  # type: ignore[index]
    c = registry.control()
    assert (c.champion, c.shadow) == (good.model_version, first.name)
    assert second.name in registry.indexes()


@pytest.mark.integration
def test_every_logs_a_failed_run_and_stops_on_sigterm(stream: Stream, registry: Registry, tmp_path: Path) -> None:
    """A run that fails (here: the transactions topic does not exist) is logged; the loop waits; SIGTERM ends it."""
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "retrain", "--every", "1h", "--bootstrap",
                             stream.bootstrap, "--topic-transactions", f"missing-{uuid.uuid4().hex[:8]}",
                             "--topic-labels", stream.labels, "--topic-model-bundles", registry.bundles_topic,
                             "--topic-model-control", registry.control_topic, "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    while not any("next run in" in line for line in lines):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        lines.append(proc.stderr.readline())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    text = "".join(lines) + err
    assert proc.returncode == 0, text
    assert "run 1 failed: topic 'missing-" in text and "does not exist" in text and "stopped" in err


# -- without a broker ------------------------------------------------------------------------------------------


def _m(ap: float, cp: float) -> Metrics:
    return Metrics(auc=0.9, ap=ap, cp100=cp, n=100, n_fraud=10)


def test_decide() -> None:
    assert decide(_m(0.5, 0.3), None, 0.01, 0.02)[0]
    assert decide(_m(0.5, 0.3), _m(0.5, 0.3), 0.0, 0.0)[0], "equal is not worse"
    assert decide(_m(0.495, 0.29), _m(0.5, 0.3), 0.01, 0.02)[0], "within the tolerances"
    ok, why = decide(_m(0.48, 0.3), _m(0.5, 0.3), 0.01, 0.02)
    assert not ok and "AP -0.0200" in why and "CP@100" not in why.split(":")[0]
    ok, why = decide(_m(0.5, 0.3), _m(0.5, 0.3), -0.05, 0.02)
    assert not ok and "AP +0.0000" in why
    ok, why = decide(_m(float("nan"), 0.0), _m(float("nan"), 0.0), 0.01, 0.02)
    assert not ok and "no fraud" in why


def test_fully_labelled_week_ends_a_feedback_delay_before_the_newest_day() -> None:
    newest = 100 * DAY_MS + 5 * 3_600_000  # 05:00 on day 100
    week = fully_labelled_week(newest)
    assert (week.start_ms, week.end_ms) == (86 * DAY_MS, 93 * DAY_MS)


def test_duration() -> None:
    assert [duration(s) for s in ("90s", "30m", "6h", "1d", "1.5h")] == [90, 1800, 21600, 86400, 5400]
    for bad in ("6", "6x", "0h", "-1d", ""):
        with pytest.raises(ValueError, match="not a duration"):
            duration(bad)


def test_bad_settings_are_one_line_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for flags, said in ((["--every", "6x"], "argument --every: '6x' is not a duration"),
                        (["--tolerance-ap", "nan"], "argument --tolerance-ap: must be a finite number"),
                        (["--auto-promote", "0"], "argument --auto-promote: must be a positive number"),
                        (["--days", "0"], "argument --days/--retrain-days")):
        with pytest.raises(SystemExit) as exc:
            main(["retrain", *flags])
        assert exc.value.code == 2
        assert said in capsys.readouterr().err.strip().splitlines()[-1]
    monkeypatch.setenv("FRAUDSTREAM_RETRAIN_EVERY", "soon")
    assert main(["retrain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: environment variable FRAUDSTREAM_RETRAIN_EVERY='soon' is not a valid --every: 'soon' is "
                   "not a duration: a positive number and a unit s, m, h or d (6h, 1d)"]


def test_run_every_survives_a_failed_run_and_ends_on_sigterm() -> None:
    logged: list[str] = []
    calls = []

    def once() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("the broker went away")
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # during a run: it is abandoned
            time.sleep(5)
            raise AssertionError("not reached: the signal ends the run")

    before = signal.getsignal(signal.SIGTERM)
    assert run_every(0.05, once, logged.append) == 0
    assert len(calls) == 3 and signal.getsignal(signal.SIGTERM) == before
    text = "\n".join(logged)
    assert "run 1 failed:" in text and "RuntimeError: the broker went away" in text
    assert "stopped during run 3" in text and logged[-1] == "stopped"


def test_run_every_ends_on_sigterm_while_waiting() -> None:
    logged: list[str] = []
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    t0 = time.monotonic()
    timer.start()
    assert run_every(3600, lambda: None, logged.append) == 0
    assert time.monotonic() - t0 < 10 and logged[-1] == "stopped" and "next run in 60m" in logged
