"""Which CPU backend runs a model when there is no TensorRT: OpenVINO on CPUs with INT8 dot-product instructions
(VNNI, AMX) when it is installed, ONNX Runtime otherwise; and the session for either on one ONNX file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.workdir import WorkDir
from engines.openvino_session import OpenVinoSession
from engines.ort_session import OrtSession
from engines.session import ManagedSession
from engines.timestep_routed import grouped_session

# /proc/cpuinfo flags of the x86 INT8 dot-product instructions (u8×s8 summed into int32 without int16 saturation)
VNNI_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
CPUINFO = Path("/proc/cpuinfo")
CPU_NAMES = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The ``flags`` of the first processor in ``cpuinfo`` (empty when unreadable, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_vnni_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """Which of VNNI_FLAGS this CPU has, in VNNI_FLAGS order (empty: AVX2-only or not x86)."""
    flags = cpu_flags(cpuinfo)
    return [f for f in VNNI_FLAGS if f in flags]


def openvino_installed() -> bool:
    """True when the ``openvino`` package can be imported (not imported here)."""
    return importlib.util.find_spec("openvino") is not None


def choose_cpu_backend(cpuinfo: Path = CPUINFO) -> tuple[str, str]:
    """(``"openvino"`` or ``"ort"``, why in a few words) for ``--backend auto`` without TensorRT."""
    vnni = cpu_vnni_flags(cpuinfo)
    if not openvino_installed():
        return "ort", "OpenVINO is not installed"
    if not vnni:
        return "ort", "the CPU has no VNNI/AMX INT8 instructions"
    return "openvino", f"OpenVINO is installed and the CPU has {', '.join(vnni)}"


def cpu_session(path: Path, backend: str, threads: int = 0, cache_dir: Path | None = None,
                groups: bool = True) -> ManagedSession:
    """An inactive session on ``path``: ``backend`` ``"openvino"`` (compiled models cached in ``cache_dir``) or
    ``"ort"`` (ONNX Runtime's CPU provider). With ``groups`` (default) and time-step group graphs beside ``path``
    (``quantize --timestep-groups K``), one session per group graph behind a TimestepGroupedSession (OpenVINO:
    K compiled models, each with its own constants; docs/timestep-groups.md); ``groups=False``: ``path`` alone."""
    if backend == "openvino":
        def open_one(p: Path) -> ManagedSession:
            return OpenVinoSession(p, threads=threads, cache_dir=cache_dir)
    elif backend == "ort":
        def open_one(p: Path) -> ManagedSession:
            return OrtSession(p, providers="CPUExecutionProvider", threads=threads)
    else:
        raise ValueError(f"not a CPU backend: {backend!r}")
    return grouped_session(path, open_one) if groups else open_one(path)


def openvino_model(work: WorkDir, precision: str) -> Path:
    """The ONNX file OpenVINO runs for ``precision``: for int8 the ``tensorrt``-target Q/DQ graph when the work folder
    has one (one graph for GPU and CPU; docs/cpu-backends.md), else the ``onnxruntime``-target one."""
    if precision == "int8" and "tensorrt" in work.int8_models():
        return work.model_for("int8", "tensorrt")
    return work.model_for(precision)


def saturation_warning(work: WorkDir, path: Path, cpuinfo: Path = CPUINFO) -> str | None:
    """A one-line warning when OpenVINO is about to run the INT8 graph ``path`` with full-range 8-bit weights on a CPU
    without VNNI/AMX, where its u8×s8 kernels saturate int16 pair sums (docs/cpu-backends.md: 21.6 dB instead of
    45.5 dB on the reference model); None when the graph was quantized with ``--reduce-range`` (all or pairs), is not
    INT8, or the CPU has VNNI/AMX."""
    if cpu_vnni_flags(cpuinfo) or path == work.model:
        return None
    from common.jsonfile import read_json

    record = read_json(work.quantize_record(path)) or {}
    if record.get("policy", {}).get("reduce_range"):
        return None
    return (f"warning: OpenVINO on a CPU without VNNI/AMX saturates INT8 sums with full-range weights ({path.name}); "
            f"python -m tools quantize {work.root} --reduce-range pairs writes a graph it computes exactly")
