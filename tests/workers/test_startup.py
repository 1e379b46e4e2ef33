"""``python -m workers`` refuses to start on a bad bundle, provider or setting, with one clear line.

These checks run before the worker touches Kafka, so no broker is needed here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.bundle import Bundle


def _worker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers", "--bootstrap", "127.0.0.1:1", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "FRAUDSTREAM_METRICS_PORT": "0", **(env or {})})  # 0: no port to collide


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(bundle, out)
    return out


def test_missing_bundle(tmp_path: Path) -> None:
    done = _worker("--bundle", str(tmp_path / "nope"))
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_checksum_mismatch(bundle: Bundle, tmp_path: Path) -> None:
    b = _copy(bundle.path, tmp_path)
    with open(b / "model.onnx", "ab") as f:
        f.write(b"\0")
    done = _worker("--bundle", str(b))
    assert done.returncode == 2 and "model.onnx is corrupt" in done.stderr


def test_wrong_feature_version(bundle: Bundle, tmp_path: Path) -> None:
    b = _copy(bundle.path, tmp_path)
    manifest = json.loads((b / "model.json").read_text())
    manifest["feature_set"]["version"] = "fs0-elsewhere"
    (b / "model.json").write_text(json.dumps(manifest))
    done = _worker("--bundle", str(b))
    assert done.returncode == 2 and "feature set 'fs0-elsewhere'" in done.stderr


def test_corrupt_onnx_with_matching_checksum(bundle: Bundle, tmp_path: Path) -> None:
    from schemas.bundle import seal

    b = _copy(bundle.path, tmp_path)
    (b / "model.onnx").write_bytes(b"this is not an onnx graph")
    seal(b, json.loads((b / "model.json").read_text()))
    done = _worker("--bundle", str(b))
    assert done.returncode == 2 and "model.onnx" in done.stderr and "Traceback" not in done.stderr


def test_unsigned_bundle_when_signature_required(bundle: Bundle) -> None:
    done = _worker("--bundle", str(bundle.path), "--require-signature", "true",
                   env={"FRAUDSTREAM_BUNDLE_KEY": "k" * 32})
    assert done.returncode == 2 and "not signed" in done.stderr


def test_forced_provider_that_cannot_load(bundle: Bundle) -> None:
    import onnxruntime as ort

    done = _worker("--bundle", str(bundle.path), "--provider", "cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers() and done.returncode != 2:
        pytest.fail("on a GPU host the cuda provider must load or be refused clearly")  # pragma: no cover
    assert done.returncode == 2 and "cuda" in done.stderr.lower() and "--provider cpu" in done.stderr


def test_bad_setting_names_its_variable(bundle: Bundle) -> None:
    done = _worker("--bundle", str(bundle.path), env={"FRAUDSTREAM_BATCH_SIZE": "0"})
    assert done.returncode == 2 and "FRAUDSTREAM_BATCH_SIZE" in done.stderr
    done = _worker("--bundle", str(bundle.path), "--provider", "quantum")
    assert done.returncode == 2 and "--provider 'quantum'" in done.stderr


def test_help_lists_every_env_variable() -> None:
    done = subprocess.run([sys.executable, "-m", "workers", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for env in ("FRAUDSTREAM_BOOTSTRAP", "FRAUDSTREAM_BUNDLE", "FRAUDSTREAM_BATCH_SIZE", "FRAUDSTREAM_MAX_WAIT_MS",
                "FRAUDSTREAM_PROVIDER", "FRAUDSTREAM_THREADS", "FRAUDSTREAM_STATS_INTERVAL_S",
                "FRAUDSTREAM_TOPIC_TRANSACTIONS", "FRAUDSTREAM_AUTO_OFFSET_RESET", "FRAUDSTREAM_SCORES"):
        assert env in text, env


def test_metrics_port_in_use_names_the_flag(bundle: Bundle) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = _worker("--bundle", str(bundle.path), "--metrics-host", "127.0.0.1", "--metrics-port", str(port))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--metrics-port {port} on 127.0.0.1 is already in use" in done.stderr, done.stderr
    done = _worker("--bundle", str(bundle.path), env={"FRAUDSTREAM_METRICS_PORT": "70000"})
    assert done.returncode == 2 and "FRAUDSTREAM_METRICS_PORT" in done.stderr


def test_graph_option(bundle: Bundle, tmp_path: Path) -> None:
    from schemas.bundle import TENSOR_ONNX_FILE, seal
    from workers.config import CPU_BATCH_SIZE, parse

    s = parse(["--bundle", str(bundle.path)])
    assert s.graph == "auto" and s.batch_size == CPU_BATCH_SIZE and s.batch_size_auto
    s = parse(["--graph", "tensor", "--batch-size", "500"])
    assert s.graph == "tensor" and s.batch_size == 500 and not s.batch_size_auto
    done = _worker("--bundle", str(bundle.path), "--graph", "quantum")
    assert done.returncode == 2 and "--graph 'quantum'" in done.stderr and "FRAUDSTREAM_GRAPH" in done.stderr
    # A bundle written before issue 8 has no tensorized graph: --graph tensor says what to do.
    old = _copy(bundle.path, tmp_path)
    (old / TENSOR_ONNX_FILE).unlink()
    manifest = json.loads((old / "model.json").read_text())
    manifest.pop("tensor_onnx", None)
    seal(old, manifest)
    done = _worker("--bundle", str(old), env={"FRAUDSTREAM_GRAPH": "tensor"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "--graph tensor" in done.stderr and "model_tensor.onnx" in done.stderr and "trainer export" in done.stderr
    helptext = subprocess.run([sys.executable, "-m", "workers", "--help"], capture_output=True, text=True, check=False)
    assert "FRAUDSTREAM_GRAPH" in helptext.stdout
