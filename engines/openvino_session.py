"""OpenVINO backend: ``OpenVinoSession`` runs the same ONNX files (FP32 or a Q/DQ graph of either target) on the CPU.

OpenVINO reads ONNX with QuantizeLinear/DequantizeLinear directly and runs the quantized convolutions and matrix
products with oneDNN's INT8 kernels (VNNI/AMX where the CPU has them). Everything is explicit: threads
(``INFERENCE_NUM_THREADS``), precision (``INFERENCE_PRECISION_HINT`` f32 always: on AMX CPUs OpenVINO would otherwise
run the float parts in bf16) and the model cache (``CACHE_DIR``: a second process loads the compiled blob instead of
compiling again; ``loaded_from_cache`` says which happened).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError, first_line
from common.lazy import lazy_import
from engines.session import ManagedSession, check_feeds

CACHE_FOLDER = ".openvino_cache"  # inside the work folder: WORK/.openvino_cache


def compile_config(threads: int = 0, cache_dir: Path | None = None) -> dict[str, str]:
    """OpenVINO CPU compile properties: f32 inference precision, one stream with latency hint, ``threads`` intra-op
    threads (0 = OpenVINO's default: all physical cores), and the model cache folder when given."""
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
    }
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return config


class OpenVinoSession(ManagedSession):
    """A UNet ONNX model on OpenVINO's CPU plugin. ``with OpenVinoSession(path) as s: s.run(feeds)["out"]``.

    ``cache_dir`` (e.g. ``WORK/.openvino_cache``) keeps compiled models across processes; None disables caching.
    One InferRequest per session (one caller at a time). Dynamic dimensions of the ONNX graph (the batch) stay
    dynamic. ``inference_time`` holds the wall time in seconds of the last ``run``; ``compile_seconds`` the load.
    """

    def __init__(self, model_path: Path | str, threads: int = 0, cache_dir: Path | str | None = None,
                 device: str = "CPU") -> None:
        self.model_path = Path(model_path)
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.device = device
        self.inference_time = 0.0
        self.compile_seconds = 0.0
        self.loaded_from_cache = False
        self._compiled: Any = None
        self._request: Any = None

    # --- lifecycle -------------------------------------------------------------------------------------
    def activate(self) -> OpenVinoSession:
        """Compile (or load from the cache) the model; a missing or invalid file is a UserError naming it."""
        if self._request is not None:
            return self
        ov = lazy_import("openvino")
        if not self.model_path.is_file():
            raise UserError(f"ONNX model '{self.model_path}' does not exist")
        made_cache = self.cache_dir is not None and not self.cache_dir.exists()
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            compiled = ov.Core().compile_model(str(self.model_path), self.device,
                                               compile_config(self.threads, self.cache_dir))
        except RuntimeError as exc:  # OpenVINO raises RuntimeError (or its GeneralFailure) for unreadable models
            if made_cache and self.cache_dir is not None and not any(self.cache_dir.iterdir()):
                self.cache_dir.rmdir()  # a model that cannot load leaves no empty cache folder behind
            raise UserError(f"cannot load ONNX model '{self.model_path}' with OpenVINO: {first_line(exc)}") from exc
        self.compile_seconds = time.perf_counter() - start
        try:
            self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        except RuntimeError:  # property unknown to this plugin
            self.loaded_from_cache = False
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        return self

    def deactivate(self) -> None:
        """Release the infer request and the compiled model."""
        self._request = None
        self._compiled = None

    def __enter__(self) -> OpenVinoSession:
        self.activate()
        return self

    # --- metadata -----------------------------------------------------------------------------------------
    @property
    def compiled_model(self) -> Any:
        if self._compiled is None:
            raise RuntimeError("OpenVinoSession used before activate()")
        return self._compiled

    @property
    def input_names(self) -> list[str]:
        return [p.get_any_name() for p in self.compiled_model.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.get_any_name() for p in self.compiled_model.outputs]

    def property(self, name: str) -> Any:
        """A property of the compiled model, e.g. ``INFERENCE_NUM_THREADS`` or ``INFERENCE_PRECISION_HINT``."""
        return self.compiled_model.get_property(name)

    # --- inference ------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays; returns copies (the request's output buffers are reused by the next run)."""
        names = self.input_names
        check_feeds(names, feeds, "model")
        start = time.perf_counter()
        results = self._request.infer({n: np.ascontiguousarray(feeds[n]) for n in names})
        self.inference_time = time.perf_counter() - start
        return {port.get_any_name(): np.array(results[port], copy=True) for port in self.compiled_model.outputs}
