"""ONNX Runtime backend: ``OrtSession`` implements the Session protocol (CPU here; CUDA/TensorRT EPs when present)
and the tensor protocol (``run_tensors``: torch tensors in and out through IO binding, on the tensors' device).

ONNX Runtime drops a requested execution provider that fails to load (missing CUDA or TensorRT libraries, a wheel
built for another CUDA) and runs on the next one without an error: after creation the session's
``get_providers()`` says what really runs, ``dropped_providers`` what was lost, and one warning line is printed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import UserError, first_line
from engines.session import ManagedSession, check_feeds

if TYPE_CHECKING:
    import torch

# Execution providers in order of preference for "auto". The TensorRT EP is only used when asked for by name,
# since it builds engines on first run (use the native TensorRT backend for that: engines/tensorrt/session.py).
AUTO_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


Provider = str | tuple[str, dict[str, Any]]  # a name, or (name, provider options) as ONNX Runtime takes them


def provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def resolve_providers(providers: str | list[Provider] = "auto") -> list[Provider]:
    """``"auto"`` -> available providers of AUTO_PROVIDERS; a list is checked against what this build has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers == "auto":
        return [p for p in AUTO_PROVIDERS if p in available]
    wanted: list[Provider] = [providers] if isinstance(providers, str) else list(providers)
    missing = [provider_name(p) for p in wanted if provider_name(p) not in available]
    if missing:
        raise UserError(f"ONNX Runtime execution provider(s) {missing} not available here; available: {available}")
    return wanted


def holds_fp8(path: Path) -> bool:
    """True when the ONNX file ``path`` holds FLOAT8E4M3FN initializers (an FP8 Q/DQ graph); external data is not
    read. An unreadable file gives False (ONNX Runtime then says what is wrong with it)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # truncated or not ONNX: protobuf's DecodeError, OSError, ...
        return False
    return any(t.data_type == onnx.TensorProto.FLOAT8E4M3FN for t in model.graph.initializer)


def session_options(threads: int = 0, optimized_model_path: Path | None = None, profile: bool = False,
                    exact_u8s8: bool = True, fp8: bool = False) -> Any:
    """SessionOptions with full graph optimisation; ``threads`` 0 = all cores. ``exact_u8s8`` False leaves ONNX
    Runtime its faster U8S8 kernels on x64 CPUs without VNNI, whose int16 pair sums saturate (benchmarks only).
    ``fp8``: the model holds FP8 Q/DQ, which the CPU provider only simulates (dequantize, compute in float); its Q/DQ
    fusions are switched off, because ONNX Runtime 1.31 fuses an FP8 DequantizeLinear -> MatMul into
    MatMulIntegerToFloat and then rejects its own graph ("Type 'tensor(float8e4m3fn)' ... is invalid"; measured)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    # Blocked INT4 MatMul weights fuse into MatMulNBits; accuracy level 0 keeps its activations float (the graph's
    # meaning and TensorRT's INT4 weight-only GEMM) instead of ONNX Runtime's default level 4 (INT8 activations).
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    # On x64 CPUs without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's U8S8 INT8 kernels add products in pairs
    # into saturating int16 (vpmaddubsw): with full-range INT8 weights the pair sums overflow and QLinearConv/
    # QLinearMatMul outputs are wrong (measured on an AMD EPYC with AVX2: UNet-output cosine 0.897 against FP32,
    # 0.998 with this option, equal to the graph run unfused). "session.x64quantprecision" = 1 makes ONNX Runtime use
    # its exact U8U8 path there; it changes nothing on VNNI/AMX CPUs (they accumulate in int32).
    so.add_session_config_entry("session.x64quantprecision", "1" if exact_u8s8 else "0")
    if fp8:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    if profile:
        so.enable_profiling = True
    return so


class OrtSession(ManagedSession):
    """A UNet ONNX model on ONNX Runtime. ``with OrtSession(path) as s: out = s.run({"sample": x, ...})["out"]``.

    Loading is lazy (on ``activate``/``__enter__``), as Polygraphy's runners do. ``inference_time`` holds the
    wall time in seconds of the last ``run``.
    """

    def __init__(
        self, model_path: Path | str, providers: str | list[Provider] = "auto", threads: int = 0, options: Any = None
    ) -> None:
        self.model_path = Path(model_path)
        self.providers = providers
        self.threads = threads
        self.options = options
        self.inference_time = 0.0
        self.dropped_providers: list[str] = []  # requested, but not loaded by ONNX Runtime (after activate)
        self._sess: Any = None

    # --- lifecycle -------------------------------------------------------------------------------------
    def activate(self) -> OrtSession:
        """Load the model; a missing, truncated or invalid file is a UserError naming it."""
        import onnxruntime as ort

        if self._sess is not None:
            return self
        if not self.model_path.is_file():
            raise UserError(f"ONNX model '{self.model_path}' does not exist")
        opts = self.options if self.options is not None else session_options(self.threads,
                                                                             fp8=holds_fp8(self.model_path))
        requested = resolve_providers(self.providers)
        try:
            self._sess = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=requested)
        except ort_load_errors() as exc:
            raise UserError(f"cannot load ONNX model '{self.model_path}': {first_line(exc)}") from exc
        active = self.active_providers
        self.dropped_providers = [provider_name(p) for p in requested if provider_name(p) not in active]
        if self.dropped_providers:
            print(f"warning: {dropped_warning(self.dropped_providers, active)}", file=sys.stderr)
        return self

    def deactivate(self) -> None:
        """Release the session."""
        self._sess = None

    def __enter__(self) -> OrtSession:
        self.activate()
        return self

    # --- metadata -----------------------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        if self._sess is None:
            raise RuntimeError("OrtSession used before activate()")
        return self._sess

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def active_providers(self) -> list[str]:
        """The execution providers the session really runs on (``get_providers()`` after creation)."""
        return list(self.session.get_providers())

    @property
    def tensor_device(self) -> str | None:
        """"cuda:0" when the first active provider is CUDA or TensorRT (IO binding on CUDA tensors), else None."""
        providers = self.active_providers
        return "cuda:0" if providers and providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else None

    def describe(self) -> str:
        """What runs, in the words every backend message uses: ``ONNX Runtime on CUDAExecutionProvider, ...``."""
        return f"ONNX Runtime on {', '.join(self.active_providers)}"

    # --- inference ------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays; unknown or missing feed names are a ValueError naming them."""
        names = self.input_names
        check_feeds(names, feeds, "model")
        start = time.perf_counter()
        outs = self.session.run(None, {n: np.ascontiguousarray(feeds[n]) for n in names})
        self.inference_time = time.perf_counter() - start
        return dict(zip(self.output_names, outs, strict=True))

    def run_tensors(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run once on torch tensors through IO binding, without host copies: inputs are bound where they lie (CPU, or
        CUDA for the CUDA provider), outputs are torch tensors allocated on the first input's device (shapes from
        the model's output dims, symbolic ones resolved from the inputs' dims of the same name). On CUDA the
        current torch stream is synchronized first (ONNX Runtime runs on its own stream)."""
        import torch

        names = self.input_names
        check_feeds(names, feeds, "model")
        tensors = {n: feeds[n].contiguous() for n in names}
        device = tensors[names[0]].device
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        start = time.perf_counter()
        binding = self.session.io_binding()
        symbols: dict[str, int] = {}
        for meta in self.session.get_inputs():
            t = tensors[meta.name]
            for dim, size in zip(meta.shape, t.shape, strict=False):
                if isinstance(dim, str):
                    symbols[dim] = int(size)
            binding.bind_input(meta.name, device.type, device.index or 0, _numpy_dtype(t.dtype), list(t.shape),
                               t.data_ptr())
        outs: dict[str, torch.Tensor] = {}
        for meta in self.session.get_outputs():
            dims = [d if isinstance(d, int) else symbols.get(str(d)) for d in meta.shape]
            if any(d is None for d in dims):
                raise ValueError(f"output '{meta.name}' of '{self.model_path.name}' has dims {meta.shape} that the "
                                 "inputs do not determine; run() it instead")
            shape = [int(d) for d in dims if d is not None]
            out = torch.empty(shape, dtype=_torch_dtype(meta.type), device=device)
            binding.bind_output(meta.name, device.type, device.index or 0, _numpy_dtype(out.dtype), shape,
                                out.data_ptr())
            outs[meta.name] = out
        self.session.run_with_iobinding(binding)
        self.inference_time = time.perf_counter() - start
        return outs


def dropped_warning(dropped: list[str], active: list[str]) -> str:
    """One line: which requested providers ONNX Runtime dropped and what runs instead."""
    return (f"ONNX Runtime dropped {', '.join(dropped)} (requested, but it did not load here: missing libraries or a "
            f"build for another CUDA/TensorRT; see docs/gpu.md); running on {', '.join(active)}")


_TORCH_TO_NUMPY = {"torch.float32": np.float32, "torch.float16": np.float16, "torch.int64": np.int64,
                   "torch.int32": np.int32, "torch.int8": np.int8, "torch.uint8": np.uint8, "torch.bool": np.bool_}
_ORT_TO_TORCH = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
                 "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _numpy_dtype(dtype: Any) -> Any:
    if str(dtype) not in _TORCH_TO_NUMPY:
        raise ValueError(f"tensor type {dtype} is not supported by run_tensors")
    return _TORCH_TO_NUMPY[str(dtype)]


def _torch_dtype(ort_type: str) -> Any:
    import torch

    if ort_type not in _ORT_TO_TORCH:
        raise ValueError(f"ONNX Runtime output type {ort_type} is not supported by run_tensors")
    return getattr(torch, _ORT_TO_TORCH[ort_type])


def ort_load_errors() -> tuple[type[BaseException], ...]:
    """What ``onnxruntime.InferenceSession`` raises for a model it cannot load (a bad file, an unsupported graph, a
    provider that fails): ONNX Runtime's own exception types, none of which derives from a Python built-in error."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(getattr(state, name) for name in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf",
                                                   "InvalidGraph", "NotImplemented", "RuntimeException", "EPFail"))
