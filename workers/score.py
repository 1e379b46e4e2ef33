"""One ONNX Runtime session per worker, created once at start.

The provider in use is what the session *actually* loaded (``session.get_providers()``), never
what the package lists: onnxruntime-gpu lists CUDA on any host, and on one without a GPU (or
without CUDA 13 / cuDNN 9 libraries) it logs an error and quietly runs on the CPU. ``auto``
accepts that fallback; a forced ``cuda`` or ``tensorrt`` that did not load is a ``ConfigError``.

Placement: ORT has no public per-node placement API. The ONNX-ML ops (``ai.onnx.ml``, e.g.
``TreeEnsembleClassifier``) have no CUDA or TensorRT kernels, so with a GPU provider they run on
the CPU with copies around them; ``cpu_fallback_nodes`` names them so the worker can say so.
``placement`` assigns every other node to the provider in use: right for the kernels that
provider has, approximate for the odd small op ORT may still keep on the CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from schemas.errors import ConfigError, ScoringError
from schemas.features import N_FEATURES

F32 = npt.NDArray[np.float32]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
# What to ask ORT for, best first; the CPU provider always closes the list (nodes the others cannot run).
_REQUEST = {"cpu": [CPU], "cuda": [CUDA, CPU], "tensorrt": [TENSORRT, CUDA, CPU]}
_FORCED = {"cuda": CUDA, "tensorrt": TENSORRT}
# Op domains with CPU kernels only (ORT docs/OperatorKernels.md): the ONNX-ML ops, trees among them.
CPU_ONLY_DOMAINS = frozenset({"ai.onnx.ml"})
_ORT_DEFAULT_LOG_SEVERITY = 2  # warning: ORT's own default for its process-wide logger
_FIX = ("install onnxruntime-gpu with the CUDA 13 and cuDNN 9 libraries "
        "(pip install 'onnxruntime-gpu[cuda,cudnn]'{trt}) on a host with an NVIDIA GPU, or use --provider cpu")


def _fix(provider: str) -> str:
    return _FIX.format(trt=", plus TensorRT 10 on LD_LIBRARY_PATH" if provider == "tensorrt" else "")


def _session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 2  # warning and above
    return opts


def _preload_cuda_libraries() -> None:
    """Make pip-installed CUDA/cuDNN wheels (``onnxruntime-gpu[cuda,cudnn]``) findable.

    ORT does not look in the ``nvidia`` site-packages by itself; without those wheels there is
    nothing to preload (and ``preload_dlls`` would only print noise), so it is skipped.
    """
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        ort.preload_dlls(directory="")


def _dim(d: object) -> str:
    return "N" if d is None or isinstance(d, str) else str(d)


class Scorer:
    """Scores float32 feature rows with the bundle's ONNX graph.

    Attributes set at construction: ``provider`` (the one in use), ``requested`` (the option),
    ``input_name``, ``output_name``, ``opsets`` (domain -> version), ``cpu_fallback_nodes`` and
    ``placement`` (provider -> nodes, see the module docstring).
    """

    def __init__(self, model_path: Path | str, provider: str = "auto", intra_op_threads: int = 1,
                 inter_op_threads: int = 1) -> None:
        if provider not in PROVIDER_CHOICES:
            raise ConfigError(f"unknown provider {provider!r}: use one of {', '.join(PROVIDER_CHOICES)}")
        self.requested = provider
        self.intra_op_threads, self.inter_op_threads = intra_op_threads, inter_op_threads
        self.available = list(ort.get_available_providers())
        model_bytes, model = _load(Path(model_path))
        self.opsets = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
        self.session = self._create(model_path, model_bytes, provider)
        self.provider: str = self.session.get_providers()[0]
        if provider in _FORCED and self.provider != _FORCED[provider]:
            raise ConfigError(
                f"--provider {provider} was requested but ONNX Runtime loaded {self.provider} instead "
                f"(the {_FORCED[provider]} did not load; ORT's log above says why): {_fix(provider)}")
        self.input_name, self.input_shape = self._check_input()
        self.output_name = self._find_output()
        self._outputs = [self.output_name]
        nodes = [(f"{n.op_type}:{n.name or '?'}", n.domain in CPU_ONLY_DOMAINS) for n in model.graph.node]
        if self.provider == CPU:
            self.cpu_fallback_nodes: list[str] = []
            self.placement: dict[str, list[str]] = {CPU: [name for name, _ in nodes]}
        else:
            self.cpu_fallback_nodes = [name for name, cpu_only in nodes if cpu_only]
            self.placement = {self.provider: [name for name, cpu_only in nodes if not cpu_only],
                              CPU: list(self.cpu_fallback_nodes)}

    def _create(self, model_path: Path | str, model_bytes: bytes, provider: str) -> ort.InferenceSession:
        if provider == "auto":
            wanted = [CUDA, CPU] if CUDA in self.available else [CPU]
        else:
            wanted = _REQUEST[provider]
            if provider in _FORCED and _FORCED[provider] not in self.available:
                raise ConfigError(f"--provider {provider}: this onnxruntime build has no {_FORCED[provider]} "
                                  f"(available: {', '.join(self.available)}): {_fix(provider)}")
        if wanted[0] != CPU:
            _preload_cuda_libraries()
        opts = _session_options(self.intra_op_threads, self.inter_op_threads)
        quiet = provider == "auto" and wanted[0] != CPU
        if quiet:  # a GPU-less host is normal for auto: don't let ORT log the failed CUDA load as an error
            ort.set_default_logger_severity(4)
        try:
            return ort.InferenceSession(model_bytes, opts, providers=wanted)
        except Exception as exc:  # ORT raises its own Fail / InvalidGraph / NotImplemented types
            raise ConfigError(f"ONNX Runtime cannot load the model {model_path}: {exc}") from exc
        finally:
            if quiet:
                ort.set_default_logger_severity(_ORT_DEFAULT_LOG_SEVERITY)

    def _check_input(self) -> tuple[str, list[str]]:
        inputs = self.session.get_inputs()
        found = ", ".join(f"{i.name}: {i.type} [{', '.join(_dim(d) for d in i.shape)}]" for i in inputs) or "none"
        ok = (len(inputs) == 1 and inputs[0].type == "tensor(float)" and len(inputs[0].shape) == 2
              and _dim(inputs[0].shape[0]) == "N" and inputs[0].shape[1] == N_FEATURES)
        if not ok:
            raise ConfigError(f"the model's inputs are ({found}); expected one float tensor of shape "
                              f"[N, {N_FEATURES}] (dynamic batch, the worker's feature set): the model does "
                              f"not match this worker's features")
        return inputs[0].name, [_dim(d) for d in inputs[0].shape]

    def _find_output(self) -> str:
        """The [N, 2] class-probability output (``probabilities`` from onnxmltools, zipmap off).

        Only this output is fetched: the ``label`` output, whose declared shape ORT warns about
        when fetched, is never asked for.
        """
        outputs = self.session.get_outputs()
        fit = [o.name for o in outputs if o.type == "tensor(float)" and len(o.shape) == 2 and o.shape[1] == 2]
        if not fit:
            found = ", ".join(f"{o.name}: {o.type} {o.shape}" for o in outputs)
            raise ConfigError(f"the model has no float [N, 2] probability output (outputs: {found})")
        return "probabilities" if "probabilities" in fit else fit[0]

    def score(self, x: F32) -> F32:
        """Fraud probability per row of ``x`` (float32, [n, N_FEATURES]).

        Raises ``ScoringError``: retriable for a runtime failure, not retriable for a malformed batch.
        """
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != N_FEATURES:
            err = ScoringError(f"a batch must be float32 [n, {N_FEATURES}], got {x.dtype} {list(x.shape)}")
            err.retriable = False
            raise err
        try:
            (probs,) = self.session.run(self._outputs, {self.input_name: x})
        except Exception as exc:
            raise ScoringError(f"ONNX Runtime failed on a batch of {len(x)} on {self.provider}: {exc}") from exc
        out: F32 = probs[:, 1]
        return out

    def describe(self) -> dict[str, Any]:
        """What the worker logs at start: how inference will actually run."""
        return {
            "provider": self.provider,
            "requested": self.requested,
            "available_providers": self.available,
            "session_providers": self.session.get_providers(),
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
            "cpu_fallback_nodes": self.cpu_fallback_nodes,
            "placement": self.placement,
            "opsets": self.opsets,
            "input": {"name": self.input_name, "shape": self.input_shape},
            "output": self.output_name,
            "onnxruntime": ort.__version__,
        }


def _load(path: Path) -> tuple[bytes, onnx.ModelProto]:
    """The model's bytes (for ORT) and parsed graph (for the report); unreadable -> ``ConfigError``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the ONNX model {path}: {exc.strerror or exc}") from exc
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ConfigError(f"{path} is not a valid ONNX model (corrupt or truncated?): {exc}") from exc
    if not model.graph.node:
        raise ConfigError(f"{path} is not a valid ONNX model (corrupt or truncated?): its graph has no nodes")
    return data, model
