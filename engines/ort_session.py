"""ONNX Runtime backend: ``OrtSession`` implements the Session protocol (CPU here; CUDA/TensorRT EPs when present)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from engines.session import ManagedSession, check_feeds

# Execution providers in order of preference for "auto". The TensorRT EP is only used when asked for by name,
# since it builds engines on first run (use the native TensorRT backend for that: engines/trt_session.py).
AUTO_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def resolve_providers(providers: str | list[str] = "auto") -> list[str]:
    """``"auto"`` -> available providers of AUTO_PROVIDERS; a list is checked against what this build has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers == "auto":
        return [p for p in AUTO_PROVIDERS if p in available]
    wanted = [providers] if isinstance(providers, str) else list(providers)
    missing = [p for p in wanted if p not in available]
    if missing:
        raise UserError(f"ONNX Runtime execution provider(s) {missing} not available here; available: {available}")
    return wanted


def session_options(threads: int = 0, optimized_model_path: Path | None = None, profile: bool = False) -> Any:
    """SessionOptions with full graph optimisation; ``threads`` 0 = all cores."""
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
    so.add_session_config_entry("session.x64quantprecision", "1")
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
        self, model_path: Path | str, providers: str | list[str] = "auto", threads: int = 0, options: Any = None
    ) -> None:
        self.model_path = Path(model_path)
        self.providers = providers
        self.threads = threads
        self.options = options
        self.inference_time = 0.0
        self._sess: Any = None

    # --- lifecycle -------------------------------------------------------------------------------------
    def activate(self) -> OrtSession:
        """Load the model; a missing, truncated or invalid file is a UserError naming it."""
        import onnxruntime as ort

        if self._sess is not None:
            return self
        if not self.model_path.is_file():
            raise UserError(f"ONNX model '{self.model_path}' does not exist")
        opts = self.options if self.options is not None else session_options(self.threads)
        try:
            self._sess = ort.InferenceSession(
                str(self.model_path), sess_options=opts, providers=resolve_providers(self.providers)
            )
        except UserError:
            raise
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load ONNX model '{self.model_path}': {first}") from exc
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
        return list(self.session.get_providers())

    # --- inference ------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays; unknown or missing feed names are a ValueError naming them."""
        names = self.input_names
        check_feeds(names, feeds, "model")
        start = time.perf_counter()
        outs = self.session.run(None, {n: np.ascontiguousarray(feeds[n]) for n in names})
        self.inference_time = time.perf_counter() - start
        return dict(zip(self.output_names, outs, strict=True))
