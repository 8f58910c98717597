"""Pick and open the backend that runs a work folder's UNet: ONNX Runtime (CPU/CUDA) or TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.errors import UserError
from common.workdir import WorkDir
from engines.ort_session import OrtSession
from engines.session import Session

BACKENDS = ("auto", "ort", "trt")


def tensorrt_available() -> bool:
    """True when the tensorrt module imports and a CUDA device is visible (checked without importing torch.cuda)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``trt`` when TensorRT and a GPU are present, else ``ort``."""
    if backend not in BACKENDS:
        raise UserError(f"unknown --backend '{backend}'; known: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "trt" if tensorrt_available() else "ort"
    return backend


def open_session(work: WorkDir, precision: str, backend: str, threads: int = 0) -> tuple[Session, str]:
    """An inactive Session for ``precision`` on ``backend``, and a one-line description of what was picked."""
    chosen = resolve_backend(backend)
    if chosen == "ort":
        path = work.model_for(precision)
        return OrtSession(path, threads=threads), f"ONNX Runtime ({path.name})"
    if not tensorrt_available():
        raise UserError("--backend trt needs TensorRT and an NVIDIA GPU: pip install -r requirements-gpu.txt, "
                        "or run in the Docker image (see README)")
    plan = Path(work.root) / f"model.{precision}.plan"
    raise UserError(f"no TensorRT engine '{plan}': build it with python -m tools build {work.root} "
                    f"--precision {precision}")
