"""Pick and open the backend that runs a work folder's UNet: ONNX Runtime (CPU/CUDA) or TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.errors import UserError
from common.workdir import WorkDir
from engines.ort_session import OrtSession
from engines.session import Session

BACKENDS = ("auto", "ort", "ort-gpu", "trt")
# --backend ort-gpu: onnxruntime-gpu (requirements-gpu.txt) with its TensorRT and CUDA execution providers.
ORT_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def tensorrt_available() -> bool:
    """True when the real tensorrt module imports (its type stubs alone do not count) and a CUDA device is visible."""
    from engines.trt_plan import tensorrt_installed

    if importlib.util.find_spec("tensorrt") is None or not tensorrt_installed():
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
    """An inactive Session for ``precision`` on ``backend``, and a one-line description of what was picked.

    ``auto`` takes TensorRT when TensorRT, a GPU and the engine ``WORK/model.<precision>.plan`` are all there,
    otherwise ONNX Runtime, and the description says why.
    """
    chosen = resolve_backend(backend)
    why = ""
    if backend == "auto":
        plan = Path(work.root) / f"model.{precision}.plan"
        if chosen == "trt" and not plan.is_file():
            chosen, why = "ort", f"; --backend auto: TensorRT and a GPU are here but no engine {plan.name}"
        elif chosen == "ort":
            why = "; --backend auto: no TensorRT or no NVIDIA GPU here"
    if chosen in ("ort", "ort-gpu") and precision == "fp16":
        raise UserError("--precision fp16 runs on TensorRT engines only (python -m tools build WORK --precision fp16, "
                        "then --backend trt); ONNX Runtime runs fp32 or int8")
    if chosen == "ort":
        path = work.model_for(precision)
        return OrtSession(path, threads=threads), f"ONNX Runtime ({path.name}{why})"
    if chosen == "ort-gpu":
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in ORT_GPU_PROVIDERS if p in available]
        if not any(p in providers for p in ORT_GPU_PROVIDERS[:2]):
            raise UserError(f"--backend ort-gpu needs onnxruntime-gpu with the TensorRT or CUDA execution provider "
                            f"(available here: {available}): pip install -r requirements-gpu.txt")
        path = work.model_for(precision)
        return OrtSession(path, providers=providers, threads=threads), f"ONNX Runtime {providers} ({path.name})"
    if not tensorrt_available():
        raise UserError("--backend trt needs TensorRT and an NVIDIA GPU: pip install -r requirements-gpu.txt, "
                        "or run in the Docker image (see README)")
    from engines.trt_plan import plan_path, read_plan_info
    from engines.trt_session import TrtSession

    plan = plan_path(Path(work.root), precision)
    info = read_plan_info(plan)  # missing engine or metadata: UserError; version/GPU checked on activate
    graphs = ", CUDA graphs" if info.cuda_graph else ""
    return TrtSession(plan, cuda_graph=info.cuda_graph), f"TensorRT {info.tensorrt_version} ({plan.name}{graphs})"
