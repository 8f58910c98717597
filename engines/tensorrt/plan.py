"""The ``.plan.json`` beside every TensorRT engine: how it was built, and the check that it fits this machine.

An engine runs only on the TensorRT version and the GPU model that built it (engines are built on the device that
runs them). ``model.int8.plan.json`` records the TensorRT version, the GPU name and compute capability, the
optimization profiles and the sha256 of the source ONNX; ``check_compatible`` turns a mismatch into a UserError
that names the engine file, before TensorRT is asked to deserialize it. This module also finds out what this
machine has (``require_tensorrt``, ``current_gpu``), importing tensorrt and torch.cuda lazily.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from common.atomic import write_json
from common.errors import UserError
from common.hashing import onnx_model_sha256, sha256_files
from common.lazy import lazy_import

PLAN_SCHEMA_VERSION = 1
PRECISIONS = ("int8", "fp8", "fp16")
#: FP8 engines: Ada (8.9), Hopper (9.0) and later; TensorRT >= 10 (strongly typed networks, DataType.FP8).
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)
FP8_MIN_TENSORRT_MAJOR = 10
TRT_HINT = "pip install -r requirements-gpu.txt (needs an NVIDIA GPU), or run in the Docker image (see README)"


# --- what this machine has -------------------------------------------------------------------------------------
def require_tensorrt() -> ModuleType:
    """The real ``tensorrt`` module, or a UserError with the install hint.

    ``tensorrt-stubs`` (installed for type checking) leaves a ``tensorrt/`` folder of .pyi files that imports as
    an empty namespace package: that counts as missing.
    """
    trt = lazy_import("tensorrt")
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        raise UserError(f"TensorRT is not installed (only its type stubs are); install it with: {TRT_HINT}")
    return trt


def trt_logger() -> Any:
    """The one process-wide TensorRT logger: Polygraphy's (``polygraphy.backend.trt.util.get_trt_logger``).

    TensorRT keeps a single logger pointer per process: a second ``trt.Logger`` handed to a Runtime while a Builder
    (Polygraphy's, in ``build``) or another Runtime exists is ignored, with a warning that the loggers differ. Every
    Runtime of this project takes this one, so build and run share a process cleanly."""
    require_tensorrt()
    from polygraphy.backend.trt.util import get_trt_logger

    return get_trt_logger()


def tensorrt_installed() -> bool:
    """True when the real tensorrt module imports (its stubs alone do not count)."""
    try:
        mod = importlib.import_module("tensorrt")
    except ImportError:
        return False
    return hasattr(mod, "Builder") and hasattr(mod, "__version__")


def trt_major(version: str) -> int:
    """Major version number of a TensorRT version string (``"10.13.0.35"`` -> 10)."""
    try:
        return int(version.split(".")[0])
    except ValueError as exc:
        raise UserError(f"cannot read TensorRT version '{version}'") from exc


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as engines see it: its name and compute capability (``"8.9"``)."""

    name: str
    compute_capability: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "compute_capability": self.compute_capability}

    @classmethod
    def from_json(cls, obj: Any) -> GpuInfo:
        return cls(name=str(obj["name"]), compute_capability=str(obj["compute_capability"]))


def current_gpu(device: int = 0) -> GpuInfo:
    """The CUDA device ``device`` through torch.cuda; a UserError when there is none."""
    torch = lazy_import("torch")
    if not torch.cuda.is_available():
        raise UserError(f"no CUDA GPU is visible (torch {torch.__version__}); TensorRT needs an NVIDIA GPU: "
                        f"{TRT_HINT}")
    major, minor = torch.cuda.get_device_capability(device)
    return GpuInfo(name=str(torch.cuda.get_device_name(device)), compute_capability=f"{major}.{minor}")


def fp8_unsupported(trt_version: str, trt_has_fp8: bool, compute_capability: str) -> str:
    """Why this machine cannot build an FP8 engine ("" when it can): a GPU below compute capability 8.9, a TensorRT
    below 10 or one without ``DataType.FP8``. One line, for ``build --precision fp8`` before it builds."""
    major, _, minor = compute_capability.partition(".")
    try:
        cc = (int(major), int(minor or 0))
    except ValueError:
        return f"cannot read the GPU's compute capability '{compute_capability}'"
    need_cc = ".".join(map(str, FP8_MIN_COMPUTE_CAPABILITY))
    if cc < FP8_MIN_COMPUTE_CAPABILITY:
        return (f"this GPU has compute capability {compute_capability}; FP8 engines need >= {need_cc} (Ada, Hopper, "
                "Blackwell): build --precision int8 here")
    if trt_major(trt_version) < FP8_MIN_TENSORRT_MAJOR or not trt_has_fp8:
        return (f"TensorRT {trt_version} cannot build strongly typed FP8 engines (needs TensorRT >= "
                f"{FP8_MIN_TENSORRT_MAJOR} with DataType.FP8): {TRT_HINT}")
    return ""


# --- the metadata ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shape of one engine input in one optimization profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, obj: Any) -> ShapeRange:
        return cls(tuple(int(v) for v in obj["min"]), tuple(int(v) for v in obj["opt"]),
                   tuple(int(v) for v in obj["max"]))


Profile = dict[str, ShapeRange]


@dataclass(frozen=True)
class GroupEngine:
    """One engine of a time-step-grouped build (``quantize --timestep-groups K``, then ``build``): it runs the steps
    with diffusion time step ``first_t``..``last_t`` (inclusive, 0 = clean). ``plan``: the engine's file name beside
    the global engine, ``plan_sha256``/``plan_bytes`` its bytes; ``source_onnx`` the group graph it was built from and
    ``source_sha256`` its sha256 with the shared external data (``sha256_files([graph, shared_data])``, as the group
    manifest records it); ``layers``: the engine inspector's counts (``precision_summary``)."""

    first_t: int
    last_t: int
    plan: str
    plan_sha256: str
    plan_bytes: int
    source_onnx: str
    shared_data: str
    source_sha256: str
    layers: dict[str, int] = field(default_factory=dict)
    build_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.last_t < self.first_t:
            raise ValueError(f"group engine '{self.plan}' has empty bounds [{self.first_t}, {self.last_t}]")
        for name in (self.plan, self.source_onnx, self.shared_data):
            if not name or "/" in name or "\\" in name:
                raise ValueError(f"group engine file '{name}' must be a file name beside the global engine")

    def to_json(self) -> dict[str, Any]:
        return {"first_t": self.first_t, "last_t": self.last_t,
                "plan": {"file": self.plan, "sha256": self.plan_sha256, "bytes": self.plan_bytes},
                "source_onnx": {"file": self.source_onnx, "shared_data": self.shared_data,
                                "sha256": self.source_sha256},
                "layers": dict(self.layers), "build_seconds": self.build_seconds}

    @classmethod
    def from_json(cls, obj: Any) -> GroupEngine:
        return cls(first_t=int(obj["first_t"]), last_t=int(obj["last_t"]), plan=str(obj["plan"]["file"]),
                   plan_sha256=str(obj["plan"]["sha256"]), plan_bytes=int(obj["plan"]["bytes"]),
                   source_onnx=str(obj["source_onnx"]["file"]), shared_data=str(obj["source_onnx"]["shared_data"]),
                   source_sha256=str(obj["source_onnx"]["sha256"]),
                   layers={str(k): int(v) for k, v in dict(obj.get("layers", {})).items()},
                   build_seconds=float(obj.get("build_seconds", 0.0)))


@dataclass(frozen=True)
class PlanInfo:
    """Everything ``.plan.json`` holds. ``source_onnx`` is the ONNX file name in the work folder.

    ``timestep_groups``: the K engines of a time-step-grouped build (``GroupEngine``, ascending in t), built with the
    same profiles and options as this (global) engine and recorded only here (they have no ``.plan.json`` of their
    own); empty for a plain build. ``sample``/``validate --backend trt`` route each step to its group's engine."""

    precision: str
    tensorrt_version: str
    gpu: GpuInfo
    profiles: list[Profile]
    source_onnx: str
    source_sha256: str
    strongly_typed: bool
    cuda_graph: bool = False
    builder: dict[str, Any] = field(default_factory=dict)
    timestep_groups: tuple[GroupEngine, ...] = ()
    schema_version: int = PLAN_SCHEMA_VERSION

    def __post_init__(self) -> None:
        for a, b in zip(self.timestep_groups, self.timestep_groups[1:]):
            if b.first_t <= a.last_t:
                raise ValueError(f"group engines '{a.plan}' and '{b.plan}' overlap or are not ascending in t")

    @property
    def group_bounds(self) -> list[tuple[int, int]]:
        """Inclusive time-step bounds of the group engines ([] for a plain build)."""
        return [(g.first_t, g.last_t) for g in self.timestep_groups]

    def to_json(self) -> dict[str, Any]:
        groups = {"timestep_groups": [g.to_json() for g in self.timestep_groups]} if self.timestep_groups else {}
        return {
            "schema_version": self.schema_version,
            "precision": self.precision,
            "tensorrt_version": self.tensorrt_version,
            "gpu": self.gpu.to_json(),
            "profiles": [{name: r.to_json() for name, r in p.items()} for p in self.profiles],
            "source_onnx": {"file": self.source_onnx, "sha256": self.source_sha256},
            "strongly_typed": self.strongly_typed,
            "cuda_graph": self.cuda_graph,
            "builder": self.builder,
            **groups,
        }

    @classmethod
    def from_json(cls, obj: Any) -> PlanInfo:
        """Parse; KeyError/TypeError/ValueError on a malformed object (``read_plan_info`` names the file)."""
        if obj.get("schema_version") != PLAN_SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {obj.get('schema_version')!r} "
                             f"(expected {PLAN_SCHEMA_VERSION})")
        return cls(
            precision=str(obj["precision"]),
            tensorrt_version=str(obj["tensorrt_version"]),
            gpu=GpuInfo.from_json(obj["gpu"]),
            profiles=[{name: ShapeRange.from_json(r) for name, r in p.items()} for p in obj["profiles"]],
            source_onnx=str(obj["source_onnx"]["file"]),
            source_sha256=str(obj["source_onnx"]["sha256"]),
            strongly_typed=bool(obj["strongly_typed"]),
            cuda_graph=bool(obj.get("cuda_graph", False)),
            builder=dict(obj.get("builder", {})),
            timestep_groups=tuple(GroupEngine.from_json(g) for g in obj.get("timestep_groups", [])),
        )


def plan_path(work_root: Path, precision: str) -> Path:
    """``WORK/model.<precision>.plan``."""
    if precision not in PRECISIONS:
        raise UserError(f"TensorRT engines are built as {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, "
                        f"not '{precision}'")
    return Path(work_root) / f"model.{precision}.plan"


def info_path(plan: Path) -> Path:
    """``model.int8.plan`` -> ``model.int8.plan.json``."""
    return plan.with_name(plan.name + ".json")


def write_plan_info(plan: Path, info: PlanInfo) -> Path:
    """Write ``<plan>.json`` atomically; returns its path."""
    path = info_path(plan)
    write_json(path, info.to_json())
    return path


def read_plan_info(plan: Path) -> PlanInfo:
    """Read ``<plan>.json``; a missing or malformed file is a UserError naming the engine."""
    path = info_path(plan)
    if not plan.is_file():
        raise UserError(f"no TensorRT engine '{plan}': build it with python -m tools build {plan.parent} "
                        f"--precision {plan.stem.split('.')[-1]}")
    if not path.is_file():
        raise UserError(f"engine '{plan}' has no '{path.name}' beside it: load only engines built by "
                        f"python -m tools build (an engine can carry plugin code); rebuild it")
    try:
        return PlanInfo.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"cannot read '{path}' (metadata of engine '{plan}'): {exc}") from exc


def check_compatible(info: PlanInfo, plan: Path, trt_version: str, gpu: GpuInfo) -> None:
    """UserError naming ``plan`` when it was built by another TensorRT version or for another GPU model."""
    rebuild = f"rebuild it here with python -m tools build {plan.parent} --precision {info.precision}"
    if info.tensorrt_version != trt_version:
        raise UserError(f"engine '{plan}' was built by TensorRT {info.tensorrt_version}, this is TensorRT "
                        f"{trt_version}: engines run only on the TensorRT version that built them; {rebuild}")
    if info.gpu != gpu:
        raise UserError(f"engine '{plan}' was built for {info.gpu.name} (compute capability "
                        f"{info.gpu.compute_capability}), this GPU is {gpu.name} ({gpu.compute_capability}): "
                        f"engines are built on the device that runs them; {rebuild}")


def check_source(info: PlanInfo, plan: Path) -> None:
    """UserError when the source ONNX beside the engine changed since the build (a stale engine).

    An engine copied alone to a device (no ONNX beside it) passes: there is nothing to compare.
    """
    source = plan.parent / info.source_onnx
    if source.is_file() and onnx_model_sha256(source) != info.source_sha256:
        raise UserError(f"engine '{plan}' is stale: '{source.name}' changed since the engine was built from it; "
                        f"rebuild it with python -m tools build {plan.parent} --precision {info.precision}")


def load_checked(plan: Path, trt_version: str, gpu: GpuInfo) -> PlanInfo:
    """Read ``<plan>.json`` and run every check; the PlanInfo of an engine that may be loaded here."""
    info = read_plan_info(plan)
    check_compatible(info, plan, trt_version, gpu)
    check_source(info, plan)
    return info


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of the bytes of ``path`` (what ``sha256sum`` prints), streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def group_plan_path(plan: Path, index: int) -> Path:
    """Group ``index``'s engine beside the global one: ``model.int8.plan`` -> ``model.int8.g0.plan``."""
    return plan.with_name(plan.name.removesuffix(".plan") + f".g{index}.plan")


def load_checked_group(plan: Path, index: int, trt_version: str, gpu: GpuInfo) -> PlanInfo:
    """The checks of ``load_checked`` on the global engine ``plan`` whose ``.plan.json`` records the group engines,
    then on group ``index``'s engine: it exists, its bytes are the ones the build recorded (sha256: an engine can carry
    plugin code, and this record is its only metadata), and its source group graph did not change since."""
    info = load_checked(plan, trt_version, gpu)
    rebuild = f"rebuild with python -m tools build {plan.parent} --precision {info.precision}"
    if not 0 <= index < len(info.timestep_groups):
        raise UserError(f"engine '{plan}' records {len(info.timestep_groups)} time-step group engines, not group "
                        f"{index}; {rebuild}")
    group = info.timestep_groups[index]
    engine = plan.parent / group.plan
    if not engine.is_file():
        raise UserError(f"'{info_path(plan).name}' names group engine '{group.plan}', which does not exist; {rebuild}")
    if file_sha256(engine) != group.plan_sha256:
        raise UserError(f"group engine '{engine}' is not the one built with '{plan.name}' (its sha256 differs from "
                        f"'{info_path(plan).name}'): load only engines built by python -m tools build; {rebuild}")
    source, data = plan.parent / group.source_onnx, plan.parent / group.shared_data
    if source.is_file() and data.is_file() and sha256_files([source, data]) != group.source_sha256:
        raise UserError(f"group engine '{engine}' is stale: '{group.source_onnx}' changed since the engine was "
                        f"built from it; {rebuild}")
    return info
