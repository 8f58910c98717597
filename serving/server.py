"""Triton Inference Server (PyTriton) hosting a work folder's pipeline: start, serve until a signal, stop.

Health, readiness and metrics are Triton's own endpoints (``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/<name>/ready``, ``:<metrics-port>/metrics``, ``/v2/models/<name>/stats``). Dynamic batching is
Triton's: concurrent requests are queued and handed to a free model instance as one batch of up to ``max_batch``
images. On SIGINT/SIGTERM Triton stops accepting requests and lets in-flight ones finish (up to
``EXIT_TIMEOUT_S`` = 30 s) before the sessions close.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any

from common.errors import UserError
from common.lazy import lazy_import
from common.workdir import WorkDir
from pipelines.text2image import is_text_to_image
from serving.binding import ModelBinding
from serving.config import ServeConfig
from serving.stub_env import check_stub_env, server_environment
from serving.text2image import TextToImageBinding
from serving.unconditional import UnconditionalBinding

# How long a stopping tritonserver waits for in-flight requests (and open client connections). PyTriton's stop
# kills tritonserver 30 s after asking it to stop, so a longer wait would not be honoured.
EXIT_TIMEOUT_S = 30
PYTRITON_HINT = "pip install --no-deps -r requirements-serve.txt  (see docs/serving.md)"


def build_binding(config: ServeConfig) -> ModelBinding:
    """The model binding for the work folder: a text-to-image pipeline (prompt -> image) or an unconditional UNet
    (seed -> image); a UNet exported alone with text conditioning has no prompt path to serve."""
    info = WorkDir(config.work).load_export_info()
    if is_text_to_image(info):
        return TextToImageBinding(config, info)
    if "encoder_hidden_states" in info["inputs"]:
        raise UserError(f"'{config.work}' holds a text-conditional UNet exported without its text encoder: serve "
                        "a work folder exported from the pipeline folder (export --model PIPELINE_DIR)")
    return UnconditionalBinding(config, info)


class TritonServer:
    """One tritonserver process with one model (``config.model_name``) of ``config.instances`` instances.

    Use as a context manager (``with TritonServer(cfg) as server: ...``): entering starts the server and returns
    once the model is ready; leaving stops it (in-flight requests finish) and closes the sessions.
    """

    def __init__(self, config: ServeConfig, binding: ModelBinding | None = None, log_verbose: int = 0) -> None:
        self.config = config
        self.binding = binding if binding is not None else build_binding(config)
        self.log_verbose = log_verbose
        self._triton: Any = None

    def start(self) -> None:
        check_stub_env()
        lazy_import("pytriton")
        from pytriton.model_config import DynamicBatcher, ModelConfig
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

        cfg = self.config
        triton_config = TritonConfig(
            http_address=cfg.host, http_port=cfg.http_port, grpc_address=cfg.host, grpc_port=cfg.grpc_port,
            metrics_address=cfg.host, metrics_port=cfg.metrics_port, exit_timeout_secs=EXIT_TIMEOUT_S,
            log_verbose=self.log_verbose)
        infer_fns = [self.binding.open_instance() for _ in range(cfg.instances)]
        try:
            with server_environment():
                # PyTriton guards Triton's admin endpoints with a random token; statistics (read-only, what operators
                # and the load benchmark read) stay open like the metrics; repository/shared-memory/trace/logging not.
                security = TritonSecurityConfig(
                    restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
                self._triton = Triton(config=triton_config, security_config=security)
                self._triton.bind(
                    model_name=cfg.model_name, infer_func=infer_fns, inputs=self.binding.inputs(),
                    outputs=self.binding.outputs(), strict=True,
                    config=ModelConfig(max_batch_size=cfg.max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=cfg.queue_delay_us)))
                self._triton.run()
        except Exception:
            self.stop()
            raise

    def is_alive(self) -> bool:
        return self._triton is not None and bool(self._triton.is_alive())

    def wait(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Block until ``stop`` is set or the server died."""
        while not stop.is_set() and self.is_alive():
            stop.wait(poll_s)

    def stop(self) -> None:
        """Stop Triton (it finishes in-flight requests first), then close the sessions. Idempotent."""
        triton, self._triton = self._triton, None
        try:
            if triton is not None:
                triton.stop()
        finally:
            self.binding.close()

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve_until_signal(config: ServeConfig, log_verbose: int = 0) -> int:
    """Serve until SIGINT or SIGTERM; returns 0 after a clean stop, 1 when the server died on its own."""
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = TritonServer(config, log_verbose=log_verbose)
        start = time.perf_counter()
        with server:
            print(f"serving '{config.model_name}' ({server.binding.description}) on {config.http_url} "
                  f"(gRPC :{config.grpc_port}, metrics :{config.metrics_port}) after "
                  f"{time.perf_counter() - start:.1f} s; SIGINT/SIGTERM stops", flush=True)
            server.wait(stop)
            if received:
                print(f"{received[0]} received: finishing in-flight requests, then stopping", flush=True)
        print("stopped", flush=True)
        return 0 if received else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
