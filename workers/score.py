"""One ONNX Runtime session per worker, created once at start.

The provider in use is what the session *actually* loaded (``session.get_providers()``), never
what the package lists: onnxruntime-gpu lists CUDA on any host, and on one without a GPU (or
without CUDA 13 / cuDNN 9 libraries) it logs an error and quietly runs on the CPU. ``auto``
accepts that fallback; a forced ``cuda`` or ``tensorrt`` that did not load is a ``ConfigError``.

Graph (a choice separate from the provider): a bundle carries the tree graph (``model.onnx``,
``TreeEnsembleClassifier``) and, since issue 8, the tensorized graph (``model_tensor.onnx``:
standard ops only, every one with a CUDA kernel). ``tree`` and ``tensor`` pick one; ``auto`` picks
the tensor graph when the provider that actually loaded is CUDA or TensorRT, the tree graph on
the CPU (where ORT's tree op is the faster of the two). Both have the same input and output.

Placement: ORT 1.31 records which provider each node of the optimised graph was assigned to
(session config ``session.record_ep_graph_assignment_info``); ``placement`` is that record. With
an ORT that lacks it, ``placement`` falls back to op domains: the ONNX-ML ops (``ai.onnx.ml``,
e.g. ``TreeEnsembleClassifier``) have no CUDA or TensorRT kernels, so with a GPU provider they run
on the CPU with copies around them, and every other node is assigned to the provider in use.
``cpu_fallback_nodes`` names the nodes that run on the CPU while the provider is a GPU one (the
tree graph's ensemble; none for the tensorized graph).

IO binding (on by default with a GPU provider; it works on the CPU provider too, which is how
it is tested): the rows are copied into a staging host buffer (pinned when the provider exposes
pinned host memory, else ordinary memory), bound as the input; the output is bound on the
provider's device and copied back once per run. A warm-up run at start (``warm_up``) allocates
the staging buffer and the device memory for the largest batch.
"""

from __future__ import annotations

import ctypes
import importlib.util
import time
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
GRAPH_CHOICES = ("auto", "tree", "tensor")
GPU_PROVIDERS = frozenset({CUDA, TENSORRT})
_RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
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
    opts.add_session_config_entry(_RECORD_ASSIGNMENT, "1")  # per-node placement (ORT >= 1.23; ignored before)
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
    """Scores float32 feature rows with one of the bundle's ONNX graphs.

    Attributes set at construction: ``provider`` (the one in use), ``requested`` (the option),
    ``graph`` ("tree" or "tensor": the graph loaded), ``graph_requested``, ``model_path``,
    ``input_name``, ``output_name``, ``opsets`` (domain -> version), ``cpu_fallback_nodes``,
    ``placement`` (provider -> nodes) and ``placement_source``, ``io_binding`` (see the module
    docstring).

    ``model_path`` is the tree graph, ``tensor_path`` the tensorized one (None: the bundle has
    none). ``io_binding`` None means: on with a GPU provider, off on the CPU.
    """

    def __init__(self, model_path: Path | str, provider: str = "auto", intra_op_threads: int = 1,
                 inter_op_threads: int = 1, *, tensor_path: Path | str | None = None, graph: str = "auto",
                 io_binding: bool | None = None) -> None:
        if provider not in PROVIDER_CHOICES:
            raise ConfigError(f"unknown provider {provider!r}: use one of {', '.join(PROVIDER_CHOICES)}")
        if graph not in GRAPH_CHOICES:
            raise ConfigError(f"unknown graph {graph!r}: use one of {', '.join(GRAPH_CHOICES)}")
        if graph == "tensor" and tensor_path is None:
            raise ConfigError(
                f"--graph tensor: the bundle {Path(model_path).parent} has no tensorized graph (model_tensor.onnx; "
                f"bundles written before issue 8 lack it): add it with `python -m trainer export "
                f"{Path(model_path).parent}` or train a new bundle, or use --graph auto or --graph tree")
        self.requested, self.graph_requested = provider, graph
        self.intra_op_threads, self.inter_op_threads = intra_op_threads, inter_op_threads
        self.available = list(ort.get_available_providers())
        self.graph = "tensor" if graph == "tensor" else "tree"
        self.graph_note = ""
        self._open(Path(tensor_path) if graph == "tensor" and tensor_path is not None else Path(model_path))
        if provider in _FORCED and self.provider != _FORCED[provider]:
            raise ConfigError(
                f"--provider {provider} was requested but ONNX Runtime loaded {self.provider} instead "
                f"(the {_FORCED[provider]} did not load; ORT's log above says why): {_fix(provider)}")
        if graph == "auto" and self.provider in GPU_PROVIDERS:
            if tensor_path is not None:
                self.graph = "tensor"
                self._open(Path(tensor_path))
            else:
                self.graph_note = (f"the bundle has no tensorized graph: the tree graph's ensemble runs on the CPU "
                                   f"under {self.provider} (re-export the bundle with `python -m trainer export`)")
        self.io_binding = self.provider in GPU_PROVIDERS if io_binding is None else io_binding
        self._binder = _Binder(self.session, self.input_name, self.output_name, self.provider) \
            if self.io_binding else None
        self.warmup: dict[str, float | int] = {}

    def _open(self, path: Path) -> None:
        """Create the session for ``path`` and read what it actually loaded."""
        self.model_path = path
        model_bytes, model = _load(path)
        self.opsets = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
        self.session = self._create(path, model_bytes, self.requested)
        self.provider: str = self.session.get_providers()[0]
        self.input_name, self.input_shape = self._check_input()
        self.output_name = self._find_output()
        self._outputs = [self.output_name]
        self.placement, self.placement_source = self._placement(model)
        self.cpu_fallback_nodes: list[str] = [] if self.provider == CPU else list(self.placement.get(CPU, []))

    def _placement(self, model: onnx.ModelProto) -> tuple[dict[str, list[str]], str]:
        """Provider -> nodes: from the session's own record when ORT keeps one, else from op domains."""
        try:
            assigned = self.session.get_provider_graph_assignment_info()
            out: dict[str, list[str]] = {}
            for sub in assigned:
                out.setdefault(str(sub.ep_name), []).extend(f"{n.op_type}:{n.name or '?'}" for n in sub.get_nodes())
            if out:
                if self.provider != CPU:
                    out.setdefault(CPU, [])
                return out, "session"
        except Exception:  # older ORT: no such method, or recording not supported
            pass
        nodes = [(f"{n.op_type}:{n.name or '?'}", n.domain in CPU_ONLY_DOMAINS) for n in model.graph.node]
        if self.provider == CPU:
            return {CPU: [name for name, _ in nodes]}, "op domains"
        return ({self.provider: [name for name, cpu_only in nodes if not cpu_only],
                 CPU: [name for name, cpu_only in nodes if cpu_only]}, "op domains")

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
            if self._binder is not None:
                probs = self._binder.run(x)
            else:
                (probs,) = self.session.run(self._outputs, {self.input_name: x})
        except Exception as exc:
            raise ScoringError(f"ONNX Runtime failed on a batch of {len(x)} on {self.provider} "
                               f"({self.graph} graph): {exc}") from exc
        out: F32 = probs[:, 1]
        return out

    def warm_up(self, rows: int) -> None:
        """Run a 1-row and a ``rows``-row batch once: the first runs on a device pay for allocation
        (staging buffer, device arena) and kernel setup; do that before the first real batch."""
        t0 = time.perf_counter()
        for n in sorted({1, max(1, rows)}):
            self.score(np.zeros((n, N_FEATURES), np.float32))
        self.warmup = {"rows": max(1, rows), "seconds": round(time.perf_counter() - t0, 4)}

    def describe(self) -> dict[str, Any]:
        """What the worker logs at start: how inference will actually run."""
        return {
            "provider": self.provider,
            "requested": self.requested,
            "graph": self.graph,
            "graph_requested": self.graph_requested,
            "graph_note": self.graph_note,
            "model": str(self.model_path),
            "io_binding": self._binder.describe() if self._binder is not None else False,
            "warmup": self.warmup,
            "available_providers": self.available,
            "session_providers": self.session.get_providers(),
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
            "cpu_fallback_nodes": self.cpu_fallback_nodes,
            "placement": self.placement,
            "placement_source": self.placement_source,
            "opsets": self.opsets,
            "input": {"name": self.input_name, "shape": self.input_shape},
            "output": self.output_name,
            "onnxruntime": ort.__version__,
        }


class _Binder:
    """IO binding for one session: rows staged in a host buffer, output bound on the device.

    The staging buffer is pinned (page-locked) host memory when the provider's EP device offers it
    (ORT >= 1.23: ``OrtEpDevice.memory_info(HOST_ACCESSIBLE)``), else ordinary numpy memory; it
    grows to the largest batch seen and is reused (``Scorer.score`` is called from one thread, and
    ``run_with_iobinding`` returns only when the run, copies included, is done). The output is
    bound on the provider's device without a buffer (batches vary in size): ORT allocates it there
    (from its arena) each run, and it is copied to the host once.
    """

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str, provider: str) -> None:
        self.session, self.input_name, self.output_name, self.provider = session, input_name, output_name, provider
        self.device = "cuda" if provider in GPU_PROVIDERS else "cpu"
        self.binding = session.io_binding()
        self.buffer: F32 = np.empty((0, N_FEATURES), np.float32)
        self._owner: object = None  # keeps pinned memory alive while ``buffer`` views it
        self.pinned = False
        self.pinned_error = ""

    def _grow(self, rows: int) -> None:
        rows = max(rows, 2 * len(self.buffer), 64)
        if self.device != "cpu":
            try:
                owner, view = _pinned_rows(self.provider, rows)
                self.buffer, self._owner, self.pinned = view, owner, True
                return
            except Exception as exc:  # no EP device / memory info: ordinary memory still works
                self.pinned_error = f"{type(exc).__name__}: {exc}"
        self.buffer, self._owner, self.pinned = np.empty((rows, N_FEATURES), np.float32), None, False

    def run(self, x: F32) -> F32:
        n = len(x)
        if n > len(self.buffer):
            self._grow(n)
        staged = self.buffer[:n]
        staged[...] = x
        self.binding.bind_input(self.input_name, "cpu", 0, np.float32, [n, N_FEATURES], staged.ctypes.data)
        # Re-bound every run: a bound output keeps the previous run's (allocated, shaped) value, and
        # a batch of another size would then fail; re-binding hands ORT an unallocated one again.
        self.binding.bind_output(self.output_name, self.device, 0)
        self.session.run_with_iobinding(self.binding)
        (probs,) = self.binding.copy_outputs_to_cpu()
        out: F32 = np.asarray(probs, dtype=np.float32)
        return out

    def describe(self) -> dict[str, Any]:
        return {"output_device": self.device, "staging_rows": len(self.buffer),
                "host_buffer": "pinned" if self.pinned else "pageable",
                **({"pinned_error": self.pinned_error} if self.pinned_error else {})}


def _pinned_rows(provider: str, rows: int) -> tuple[object, F32]:
    """A [rows, N_FEATURES] float32 array in the provider's pinned host memory, and its owner."""
    for dev in ort.get_ep_devices():
        if dev.ep_name != provider and not (provider == TENSORRT and dev.ep_name == CUDA):
            continue
        info = dev.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)
        if info is None:
            continue
        value = ort.OrtValue.ortvalue_from_shape_and_type([rows, N_FEATURES], np.float32, memory_info=info)
        ptr = ctypes.cast(int(value.data_ptr()), ctypes.POINTER(ctypes.c_float))
        view: F32 = np.ctypeslib.as_array(ptr, shape=(rows, N_FEATURES))
        return value, view
    raise LookupError(f"ONNX Runtime exposes no pinned host memory for {provider}")


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
