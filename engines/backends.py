"""Pick and open the backend that runs a work folder's UNet: ONNX Runtime (CPU/CUDA), OpenVINO (CPU) or TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.errors import UserError
from common.workdir import WorkDir
from engines.cpu_backend import choose_cpu_backend, cpu_session, openvino_model, saturation_warning
from engines.group_manifest import grouped_manifest_for
from engines.openvino_session import CACHE_FOLDER
from engines.ort_session import OrtSession, Provider, dropped_warning
from engines.session import ManagedSession, Session
from engines.timestep_routed import TimestepGroupedSession, grouped_session

BACKENDS = ("auto", "ort", "ort-gpu", "openvino", "trt")
# --backend ort-gpu: onnxruntime-gpu (requirements-gpu.txt) with its TensorRT and CUDA execution providers.
ORT_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def tensorrt_missing() -> str:
    """Why TensorRT cannot run here ("" when it can): the words ``--backend auto`` and ``--backend trt`` use."""
    from engines.tensorrt.plan import tensorrt_installed

    if importlib.util.find_spec("tensorrt") is None or not tensorrt_installed():
        return "TensorRT is not installed"
    try:
        import torch
    except ImportError:
        return "torch is not installed (TensorRT sessions use torch.cuda)"
    if not torch.cuda.is_available():
        return f"no CUDA device is visible (torch {torch.__version__})"
    return ""


def tensorrt_available() -> bool:
    """True when the real tensorrt module imports (its type stubs alone do not count) and a CUDA device is visible."""
    return not tensorrt_missing()


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``trt`` when TensorRT and a GPU are present, else the CPU backend of ``choose_cpu_backend``."""
    if backend not in BACKENDS:
        raise UserError(f"unknown --backend '{backend}'; known: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "trt" if tensorrt_available() else choose_cpu_backend()[0]
    return backend


def onnx_session(path: Path, providers: str | list[Provider] = "auto", threads: int = 0) -> ManagedSession:
    """An inactive ONNX Runtime Session for the Q/DQ or FP32 model ``path``: when ``quantize --timestep-groups K``
    wrote group graphs beside it (``<model>.groups.json``), a TimestepGroupedSession that runs each step on its
    group's graph; else one OrtSession."""
    return grouped_session(Path(path), lambda p: OrtSession(p, providers=providers, threads=threads))


def describe_groups(path: Path) -> str:
    """", K time-step groups (...)" when ``path`` has group graphs, else ""."""
    manifest = grouped_manifest_for(Path(path))
    if manifest is None:
        return ""
    return f", {len(manifest.groups)} time-step groups " + " ".join(f"[{a}, {b}]" for a, b in manifest.bounds)


def _first_ort(session: Session) -> OrtSession:
    """The OrtSession itself, or group 0's of a TimestepGroupedSession (all groups get the same providers)."""
    if isinstance(session, TimestepGroupedSession):
        session = session.sessions[0]
    assert isinstance(session, OrtSession)
    return session


def _describe(session: Session) -> str:
    """``ONNX Runtime on <providers>`` of an active OrtSession or TimestepGroupedSession."""
    return _first_ort(session).describe()


#: The one line every CPU run of an FP8 graph prints: ONNX Runtime has no FP8 kernels.
FP8_SIMULATED = ("FP8 is simulated on ONNX Runtime (E4M3 rounding exact, arithmetic in float32): accuracy "
                 "matches an FP8 engine's rounding, speed does not")


def fp8_backend(backend: str, chosen: str) -> tuple[str, str]:
    """(backend, note) for an FP8 graph, ``chosen`` being what ``backend`` resolved to: OpenVINO has no FP8 Q/DQ, so
    ``auto`` routes to ONNX Runtime (the note says so); ``--backend openvino`` is a UserError. On ONNX Runtime the
    note is ``FP8_SIMULATED``; on TensorRT it is empty."""
    if chosen == "openvino" and backend == "openvino":
        raise UserError("--backend openvino does not run FP8 Q/DQ graphs; use --backend ort (FP8 simulated on the "
                        "CPU) or --backend trt on a GPU with compute capability >= 8.9")
    if chosen == "openvino":
        return "ort", f"note: ONNX Runtime instead of OpenVINO (no FP8 Q/DQ there); {FP8_SIMULATED}"
    return chosen, f"note: {FP8_SIMULATED}" if chosen == "ort" else ""


def open_session(work: WorkDir, precision: str, backend: str, threads: int = 0) -> tuple[ManagedSession, str]:
    """A Session for ``precision`` on ``backend``, and a one-line description of what runs.

    ONNX Runtime sessions are created here, so the description names the providers they really got
    (``get_providers()``), and a requested provider that did not load is warned about in one line; ``ort-gpu``
    that ends up on the CPU alone is a UserError. TensorRT sessions stay inactive until used (``with session:``).
    ``auto`` takes TensorRT when TensorRT, a GPU and the engine ``WORK/model.<precision>.plan`` are all there,
    otherwise OpenVINO or ONNX Runtime (``choose_cpu_backend``), and the description says why in the same words.
    """
    chosen = resolve_backend(backend)
    why = ""
    if backend == "auto":
        plan = Path(work.root) / f"model.{precision}.plan"
        cpu, cpu_why = choose_cpu_backend()
        if chosen == "trt" and not plan.is_file():
            chosen, why = cpu, f"; --backend auto: TensorRT and a GPU are here but no engine {plan.name}; {cpu_why}"
        elif chosen != "trt":
            why = f"; --backend auto: {tensorrt_missing() or 'TensorRT not usable'}; {cpu_why}"
    if chosen in ("ort", "ort-gpu", "openvino") and precision == "fp16":
        raise UserError("--precision fp16 runs on TensorRT engines only (python -m tools build WORK --precision fp16, "
                        "then --backend trt); ONNX Runtime and OpenVINO run fp32 or int8")
    if precision == "fp8":
        chosen, note = fp8_backend(backend, chosen)
        if note:
            print(note)
    if chosen == "ort":
        path = work.model_for(precision)
        session = onnx_session(path, threads=threads).activate()
        return session, f"{_describe(session)} ({path.name}{describe_groups(path)}{why})"
    if chosen == "openvino":
        path = openvino_model(work, precision)
        warning = saturation_warning(work, path)
        if warning:
            print(warning)
        return (cpu_session(path, "openvino", threads, work.root / CACHE_FOLDER),
                f"OpenVINO ({path.name}{describe_groups(path)}{why})")
    if chosen == "ort-gpu":
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers: list[Provider] = [p for p in ORT_GPU_PROVIDERS if p in available]
        if not any(p in providers for p in ORT_GPU_PROVIDERS[:2]):
            raise UserError(f"--backend ort-gpu needs onnxruntime-gpu with the TensorRT or CUDA execution provider "
                            f"(available here: {available}): pip install -r requirements-gpu.txt")
        path = work.model_for(precision)
        session = onnx_session(path, providers=providers, threads=threads).activate()
        first = _first_ort(session)
        if not any(p in first.active_providers for p in ORT_GPU_PROVIDERS[:2]):
            raise UserError(f"--backend ort-gpu: {dropped_warning(first.dropped_providers, first.active_providers)}"
                            "; use --backend ort for the CPU")
        return session, f"{_describe(session)} ({path.name}{describe_groups(path)})"
    if not tensorrt_available():
        raise UserError(f"--backend trt needs TensorRT and an NVIDIA GPU ({tensorrt_missing()}): pip install -r "
                        "requirements-gpu.txt, or run in the Docker image (see README)")
    from engines.tensorrt.groups import describe_engine_groups, trt_unet_session
    from engines.tensorrt.plan import plan_path

    plan = plan_path(Path(work.root), precision)
    # missing engine or metadata: UserError; version/GPU (and each group engine's sha256) checked on activate
    session, info = trt_unet_session(plan)
    graphs = ", CUDA graphs" if info.cuda_graph else ""
    groups = describe_engine_groups(info, precision == "int8" and _has_int8_groups(work))
    return session, f"TensorRT {info.tensorrt_version} ({plan.name}{groups}{graphs})"


def _has_int8_groups(work: WorkDir) -> bool:
    """True when the tensorrt-target Q/DQ graph of ``work`` has time-step group graphs beside it."""
    from engines.tensorrt.groups import source_groups

    try:
        return source_groups(work, "int8") is not None
    except UserError:  # no tensorrt-target graph here (an engine copied alone to a device)
        return False
