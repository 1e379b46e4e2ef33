"""The model registry on the real broker: publish, promote, and two running workers switch mid-stream.

Bundles ``va``, ``vb`` (the session's quick model under two versions, so every score can be checked
against the offline one) are published; ``va`` is promoted, two workers start without ``--bundle``,
transactions flow, ``vb`` is promoted mid-stream, then two bad versions are: ``vc`` with a chunk
tampered on the topic and ``vd`` built for another feature set. Every transaction is scored exactly
once, each worker's scores switch from ``va`` to ``vb`` once and never back, both within seconds of
the control record, and the bad versions are refused while ``vb`` keeps scoring.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from ops.loadgen.replay import events, produce
from schemas.bundle import MANIFEST, Bundle, seal
from schemas.registry import chunk_key
from schemas.registry_io import Registry
from tests.integration.harness import Run, consume_all, expected_scores, stop, wait_for_scores
from tests.schemas.test_registry import renamed
from trainer.simulate import History, Labels

pytestmark = pytest.mark.integration
SLICES = 30


def _trainer(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args, "--bootstrap", run.bootstrap,
                           "--topic-model-bundles", run.topics["model_bundles"],
                           "--topic-model-control", run.topics["model_control"]],
                          capture_output=True, text=True, timeout=120, check=False)


def _published(run: Run, bundle: Bundle, tmp_path: Path) -> None:
    """Registry topics of this test's own, the workers in registry mode, va and vb published."""
    run.topics.update(model_bundles=f"model-bundles-{run.group}", model_control=f"model-control-{run.group}")
    run.registry = True
    run.extra = [*run.extra, "--topic-model-bundles", run.topics["model_bundles"],
                 "--topic-model-control", run.topics["model_control"]]
    for v in ("va", "vb"):
        done = _trainer(run, "publish", str(renamed(bundle, v, tmp_path / "src").path))
        assert done.returncode == 0 and done.stdout.strip() == v, done.stderr


def _wait_ready(run: Run, ids: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(" ready in " in run.log(w) for w in ids):
        assert time.monotonic() < deadline, "\n".join(run.log(w)[-2000:] for w in ids)
        time.sleep(0.2)


def _bad_versions(bundle: Bundle, reg: Registry, tmp: Path, bootstrap: str) -> None:
    """vc: published whole, then one chunk overwritten on the (compacted) topic; vd: another feature set."""
    vc = renamed(bundle, "vc", tmp)
    reg.publish(vc)
    k = chunk_key("vc", "model.onnx", 0)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(reg.bundles_topic, key=k, value=b"tampered" + (vc.path / "model.onnx").read_bytes()[8:100])
    producer.flush()
    producer.close()
    vd = tmp / "vd"
    manifest = json.loads((renamed(bundle, "vd-src", tmp).path / MANIFEST).read_text())
    (tmp / "vd-src").rename(vd)
    sealed = seal(vd, {**manifest, "model_version": "vd"})  # seal() writes this fraudstream's feature set
    sealed["feature_set"] = {**sealed["feature_set"], "version": "fs-other"}
    (vd / MANIFEST).write_text(json.dumps(sealed))
    reg.publish(Bundle(vd, sealed))


def test_promote_switches_every_running_worker_and_bad_versions_are_refused(
        run: Run, history: tuple[History, Labels], bundle: Bundle, tmp_path: Path) -> None:
    h, lab = history
    _published(run, bundle, tmp_path)
    assert _trainer(run, "promote", "vx").returncode == 2, "an unpublished version cannot be promoted"
    assert _trainer(run, "promote", "va", "--reason", "first").returncode == 0
    assert _trainer(run, "promote", "vb", "--shadow").returncode == 0
    reg = Registry(run.bootstrap, bundles_topic=run.topics["model_bundles"], control_topic=run.topics["model_control"])
    workers = {w: run.start(w) for w in ("w1", "w2")}
    try:
        _wait_ready(run, list(workers))
        stream = list(events(h, lab))
        slices = [stream[i * len(stream) // SLICES:(i + 1) * len(stream) // SLICES] for i in range(SLICES)]
        promoted: dict[str, float] = {}

        def send() -> None:
            for i, part in enumerate(slices):
                produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(part))
                if i == SLICES // 3:
                    assert _trainer(run, "promote", "vb").returncode == 0
                    promoted["vb"] = time.time()
                if i == 2 * SLICES // 3:
                    _bad_versions(bundle, reg, tmp_path / "bad", run.bootstrap)
                    refused = [_trainer(run, "promote", v) for v in ("vc", "vd")]
                    assert [r.returncode for r in refused] == [2, 2], [r.stderr for r in refused]
                    assert "corrupt" in refused[0].stderr and "fs-other" in refused[1].stderr
                    # Past the command's check (another tool, a topic altered after the promote): the workers'.
                    for v in ("vc", "vd"):
                        reg.write_control(reg.control().promote(v, int(time.time() * 1000), "test"))
                time.sleep(0.3)

        sender = threading.Thread(target=send)
        sender.start()
        sender.join(timeout=300)
        scores = wait_for_scores(run, len(h), None, timeout_s=240)
    finally:
        codes = {w: stop(p) for w, p in workers.items()}
        reg.close()
    assert codes == {"w1": 0, "w2": 0}, {w: run.log(w)[-3000:] for w in workers}
    ids = [str(s["tx_id"]) for s in scores]
    assert len(ids) == len(set(ids)) == len(h), "every transaction scored exactly once through the swaps"
    expected = expected_scores(h, lab, bundle)
    assert max(abs(float(s["score"]) - expected[str(s["tx_id"])]) for s in scores) <= 1e-5  # type: ignore[arg-type]
    by_worker: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for s in scores:
        by_worker[str(s["worker_id"])].append((int(s["timing"]["scored_at"]), str(s["model_version"])))  # type: ignore[index]
    first_vb = {}
    for w, seq in by_worker.items():
        versions = [v for _, v in sorted(seq)]
        assert set(versions) == {"va", "vb"}, (w, set(versions))
        switch = versions.index("vb")
        assert versions[switch:] == ["vb"] * (len(versions) - switch), f"{w} went back to va"
        first_vb[w] = min(t for t, v in seq if v == "vb") / 1000
    lags = {w: t - promoted["vb"] for w, t in first_vb.items()}
    assert all(-1 < lag < 15 for lag in lags.values()), lags
    print(f"switch after the promote: {lags}; between workers {max(lags.values()) - min(lags.values()):.2f}s")
    for w in workers:
        log = run.log(w)
        assert "model va -> vb: swapped" in log
        assert "model vc refused" in log and "corrupt" in log, log[-3000:]
        assert "model vd refused" in log and "fs-other" in log, log[-3000:]
    listing = _trainer(run, "models")
    assert listing.returncode == 0
    states = {line.split()[0]: line.split()[-1] for line in listing.stdout.splitlines()[1:]}
    assert states == {"va": "previous", "vb": "previous", "vc": "previous", "vd": "champion"}, listing.stdout
    _check_shadow(run, scores, expected)


def _check_shadow(run: Run, scores: list[dict[str, object]], expected: dict[str, float]) -> None:
    """vb shadowed va: every transaction va scored has a vb score on the shadow topic (the same model: the same
    score), and no flag of vb's came while it was the shadow."""
    by_va = {str(s["tx_id"]) for s in scores if s["model_version"] == "va"}
    shadow = [orjson.loads(r.value) for r in consume_all(run.bootstrap, run.topics["shadow_scores"], len(by_va), 60)]  # type: ignore[attr-defined]
    assert {m["model_version"] for m in shadow} == {"vb"}
    assert by_va <= {m["tx_id"] for m in shadow}, "a transaction the champion scored has no shadow score"
    assert max(abs(m["score"] - expected[m["tx_id"]]) for m in shadow) <= 1e-5
    flags = [orjson.loads(r.value) for r in consume_all(run.bootstrap, run.topics["flags"], 10**9, 10)]  # type: ignore[attr-defined]
    assert not {f["tx_id"] for f in flags if f["model_version"] == "vb"} & by_va, "the shadow flagged"
    assert {f["model_version"] for f in flags} <= {"va", "vb"}


def test_a_kill_during_a_swap_loses_nothing(run: Run, history: tuple[History, Labels], bundle: Bundle,
                                            tmp_path: Path) -> None:
    """kill -9 right after a promote, while the worker fetches and builds the new champion: the restarted
    worker starts on it, and every transaction is scored (a redelivery keeps its score)."""
    import signal

    h, lab = history
    _published(run, bundle, tmp_path)
    assert _trainer(run, "promote", "va").returncode == 0
    stream = list(events(h, lab))
    half = len(stream) // 2
    w = run.start("w1")
    try:
        _wait_ready(run, ["w1"])
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[:half]))
        time.sleep(1.0)
        assert _trainer(run, "promote", "vb").returncode == 0
        time.sleep(0.3)  # the follower polls every second: mid-fetch or mid-build, or just before
        w.send_signal(signal.SIGKILL)
        w.wait(timeout=30)
        w = run.start("w1b")
        _wait_ready(run, ["w1b"])
        produce(run.bootstrap, run.topics["transactions"], run.topics["labels"], iter(stream[half:]))
        scores = wait_for_scores(run, len(h), w, timeout_s=240, distinct=True)
    finally:
        assert stop(w) == 0, run.log("w1b")[-3000:]
    assert "registry: champion vb" in run.log("w1b"), "the restarted worker starts on the new champion"
    expected = expected_scores(h, lab, bundle)
    seen: dict[str, set[float]] = defaultdict(set)
    for s in scores:
        seen[str(s["tx_id"])].add(float(s["score"]))  # type: ignore[arg-type]
        assert s["model_version"] in ("va", "vb")
        assert s["model_version"] == "vb" or s["worker_id"] == "w1", "after the restart only vb scores"
    assert set(seen) == {str(t) for t in h.tx_id}, "a transaction was lost"
    assert all(len(v) == 1 for v in seen.values()), "a redelivered transaction got another score"
    assert max(abs(next(iter(v)) - expected[t]) for t, v in seen.items()) <= 1e-5
