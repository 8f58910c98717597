"""Pick and open the backend that runs a work folder's UNet: ONNX Runtime (CPU/CUDA), OpenVINO (CPU) or TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.errors import UserError
from common.workdir import WorkDir
from engines.cpu_backend import choose_cpu_backend, cpu_session, openvino_model
from engines.openvino_session import CACHE_FOLDER
from engines.ort_session import OrtSession
from engines.session import Session

BACKENDS = ("auto", "ort", "ort-gpu", "openvino", "trt")
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
    """``auto`` -> ``trt`` when TensorRT and a GPU are present, else the CPU backend of ``choose_cpu_backend``."""
    if backend not in BACKENDS:
        raise UserError(f"unknown --backend '{backend}'; known: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "trt" if tensorrt_available() else choose_cpu_backend()[0]
    return backend


def open_session(work: WorkDir, precision: str, backend: str, threads: int = 0) -> tuple[Session, str]:
    """An inactive Session for ``precision`` on ``backend``, and a one-line description of what was picked.

    ``auto`` takes TensorRT when TensorRT, a GPU and the engine ``WORK/model.<precision>.plan`` are all there,
    otherwise OpenVINO or ONNX Runtime (``choose_cpu_backend``), and the description says why.
    """
    chosen = resolve_backend(backend)
    why = ""
    if backend == "auto":
        plan = Path(work.root) / f"model.{precision}.plan"
        cpu, cpu_why = choose_cpu_backend()
        if chosen == "trt" and not plan.is_file():
            chosen, why = cpu, f"; --backend auto: TensorRT and a GPU are here but no engine {plan.name}; {cpu_why}"
        elif chosen != "trt":
            why = f"; --backend auto: no TensorRT or no NVIDIA GPU here; {cpu_why}"
    if chosen in ("ort", "ort-gpu", "openvino") and precision == "fp16":
        raise UserError("--precision fp16 runs on TensorRT engines only (python -m tools build WORK --precision fp16, "
                        "then --backend trt); ONNX Runtime and OpenVINO run fp32 or int8")
    if chosen == "ort":
        path = work.model_for(precision)
        return OrtSession(path, threads=threads), f"ONNX Runtime ({path.name}{why})"
    if chosen == "openvino":
        path = openvino_model(work, precision)
        return cpu_session(path, "openvino", threads, work.root / CACHE_FOLDER), f"OpenVINO ({path.name}{why})"
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
