"""Build TensorRT engines from a work folder's ONNX with Polygraphy's loaders; a thin layer over them.

TensorRT 10 and 11: a strongly typed network (``NetworkFromOnnxPath(..., strongly_typed=True)``; TensorRT 11 is
always strongly typed and accepts the flag), so every precision comes from the graph: INT8 where the Q/DQ
nodes are, FP16 where ``engines.tensorrt.fp16_convert`` rewrote the float parts, FP32 at the I/O. No precision builder flag
is set (TensorRT 11 has none: ``BuilderFlag.INT8`` no longer exists).

TensorRT 8.5 / 8.6 (JetPack 5 and 6.0) have no strongly typed networks: the same Q/DQ ONNX (not converted) is
built with the INT8 and FP16 builder flags, and TensorRT picks FP16 or FP32 for the float layers.

Pure parts (profiles from ``export.json``, the per-version build mode, reading the engine inspector's JSON) run
without TensorRT and are tested on the CPU; ``build_engine`` needs TensorRT and a GPU.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from common.atomic import atomic_path
from common.errors import UserError, first_line
from common.protobuf import fits_protobuf
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from engines.tensorrt.graph import check_for_tensorrt, float_conv_transpose
from engines.tensorrt.plan import (
    PRECISIONS,
    PlanInfo,
    Profile,
    current_gpu,
    plan_path,
    require_tensorrt,
    trt_major,
    write_plan_info,
)
from engines.tensorrt.profile_ranges import axis_bounds, guided, profile_ranges, shape_range

CONDITIONAL_INPUT = "encoder_hidden_states"
MAX_OPT_LEVEL = 5


# --- pure: profiles, build mode, options ---------------------------------------------------------------------
def profiles_from_export(
    info: dict[str, Any],
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
) -> list[Profile]:
    """One optimization profile from ``export.json``: its ``inputs`` shapes and ``profile`` ranges.

    Symbolic dimensions take ``profile["min_<axis>"]``/``opt_``/``max_`` (``batch`` -> ``min_batch`` ...), the
    flags overriding the batch. Batches count images: a conditional model (``encoder_hidden_states`` input) runs
    classifier-free guidance with the unconditional and conditional rows in one batch, so its opt and max batch
    are doubled (min stays, for unguided sampling).
    """
    inputs = info.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise UserError("export.json has no 'inputs': re-export the model")
    ranges = profile_ranges(info, min_batch, opt_batch, max_batch)
    axes = sorted({d for spec in inputs.values() for d in spec["shape"] if isinstance(d, str)})
    bounds = {axis: axis_bounds(ranges, axis) for axis in axes}
    if "batch" in bounds:
        bounds["batch"] = guided(bounds["batch"], CONDITIONAL_INPUT in inputs)
    profile = {name: shape_range(spec["shape"], bounds) for name, spec in inputs.items()}
    return [profile]


@dataclass(frozen=True)
class BuildMode:
    """How one TensorRT version builds one precision."""

    strongly_typed: bool
    convert_fp16: bool  # rewrite the float parts of the ONNX to FP16 before the build
    fp16_flag: bool  # BuilderFlag.FP16 (weakly typed TensorRT < 10 only)
    int8_flag: bool  # BuilderFlag.INT8 (weakly typed TensorRT < 10 only)
    float_conv_transpose: bool = False  # TensorRT 8.x: quantized ConvTranspose back to float (engines.tensorrt.graph)


def build_mode(trt_version: str, precision: str) -> BuildMode:
    """TensorRT >= 10: strongly typed + FP16 conversion. TensorRT 8.x (JetPack 5 / 6.0): INT8 and FP16 flags."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown --precision '{precision}'; known: {', '.join(PRECISIONS)}")
    if precision == "fp8" and trt_major(trt_version) < 10:
        raise UserError(f"TensorRT {trt_version} has no strongly typed networks; FP8 engines need TensorRT >= 10")
    if trt_major(trt_version) >= 10:
        return BuildMode(strongly_typed=True, convert_fp16=True, fp16_flag=False, int8_flag=False)
    int8 = precision == "int8"
    return BuildMode(strongly_typed=False, convert_fp16=False, fp16_flag=True, int8_flag=int8, float_conv_transpose=int8)


def source_onnx(work: WorkDir, precision: str) -> Path:
    """The ONNX an engine of ``precision`` is built from: the tensorrt-target Q/DQ graph for int8 (``model.int8.trt.onnx``,
    or a legacy ``model.int8.onnx`` whose record says tensorrt), the FP8 graph for fp8 (``model.fp8.trt.onnx``), the
    FP32 graph for fp16."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown --precision '{precision}'; known: {', '.join(PRECISIONS)}")
    if precision == "fp16":
        return work.model_for("fp32")
    return work.model_for(precision, "tensorrt")


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``build_engine`` takes besides the work folder (``python -m tools build`` flags)."""

    precision: str
    profiles: tuple[Profile, ...]
    timing_cache: Path | None = None
    opt_level: int | None = None
    workspace_gb: float | None = None
    cuda_graph: bool = False
    # TF32 for the layers that stay FP32 (time embedding, the FP32 ends of quantized ops). Polygraphy's CreateConfig
    # clears BuilderFlag.TF32 unless told (tf32=None means off), so it is always set explicitly: off by default, as
    # demo/Diffusion's Engine.build(tf32=False), so "kept in FP32" means FP32 arithmetic (docs/gpu.md).
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown --precision '{self.precision}'; known: {', '.join(PRECISIONS)}")
        if self.opt_level is not None and not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise UserError(f"--opt-level must be in 0..{MAX_OPT_LEVEL}, got {self.opt_level}")
        if self.workspace_gb is not None and not self.workspace_gb > 0:
            raise UserError(f"--workspace-gb must be > 0, got {self.workspace_gb}")
        if not self.profiles:
            raise UserError("at least one optimization profile is needed")


# --- pure: what the engine inspector says ------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerInfo:
    """One layer of a built engine as the engine inspector reports it (``profiling_verbosity=DETAILED``)."""

    name: str
    layer_type: str
    input_types: tuple[str, ...]  # "Format/Datatype" (TensorRT <= 10) or "Format"/"DataType" (TensorRT 11)
    # The ONNX nodes this layer was made from, read from its "Metadata" (the ONNX parser writes
    # "[ONNX Layer: <node name> | ...]" per node, several joined by \x1f when layers are fused). Layer names do not
    # carry them: fused and Myelin layers are named "{ForeignNode[first...last]}".
    onnx_nodes: tuple[str, ...] = ()

    def made_from(self, node: str) -> bool:
        """True when the ONNX node ``node`` went into this layer (its metadata; the layer name when there is none)."""
        return node in self.onnx_nodes if self.onnx_nodes else node in self.name

    @property
    def is_convolution(self) -> bool:
        return "convolution" in self.layer_type.lower() or "conv" in self.layer_type.lower()

    @property
    def int8_input(self) -> bool:
        return bool(self.input_types) and "int8" in self.input_types[0].lower()

    @property
    def fp8_input(self) -> bool:
        return bool(self.input_types) and "fp8" in self.input_types[0].lower()


def parse_engine_layers(engine_json: str) -> list[LayerInfo]:
    """Layers of ``inspector.get_engine_information(LayerInformationFormat.JSON)``.

    A ValueError when the engine holds layer names only (built without ``profiling_verbosity=DETAILED``).
    """
    doc = json.loads(engine_json)
    layers = doc.get("Layers", []) if isinstance(doc, dict) else doc
    out = []
    for layer in layers:
        if not isinstance(layer, dict):
            raise ValueError("the engine carries layer names only: build it with profiling_verbosity=DETAILED")
        types = []
        for inp in layer.get("Inputs", []):
            if isinstance(inp, dict):
                parts = [str(v) for k, v in inp.items() if k.lower().replace("/", "") in
                         ("formatdatatype", "format", "datatype")]
                types.append(" / ".join(parts))
        out.append(LayerInfo(str(layer.get("Name", "")), str(layer.get("LayerType", "")), tuple(types),
                             onnx_layer_names(str(layer.get("Metadata", "")))))
    return out


def onnx_layer_names(metadata: str) -> tuple[str, ...]:
    """ONNX node names in an inspector "Metadata" string: ``"[ONNX Layer: /a/Conv]\x1f[ONNX Layer: /b | f]"`` ->
    ``("/a/Conv", "/b")`` (onnx-tensorrt importerUtils.cpp writes ``[ONNX Layer: <name> | property ...]``)."""
    names = []
    for match in re.finditer(r"\[ONNX Layer: ([^\]]*)\]", metadata):
        name = match.group(1).split(" | ")[0].strip()
        if name:
            names.append(name)
    return tuple(names)


def precision_summary(layers: list[LayerInfo]) -> dict[str, int]:
    """Counts for ``.plan.json``: layers, convolutions, convolutions with INT8 input, layers with FP8 input."""
    convs = [layer for layer in layers if layer.is_convolution]
    return {"layers": len(layers), "convolutions": len(convs),
            "int8_convolutions": sum(1 for layer in convs if layer.int8_input),
            "fp8_convolutions": sum(1 for layer in convs if layer.fp8_input),
            "fp8_layers": sum(1 for layer in layers if layer.fp8_input)}


# --- TensorRT --------------------------------------------------------------------------------------------------
def build_engine(work: WorkDir, options: BuildOptions, command: str = "", source: Path | None = None,
                 plan: Path | None = None, write_info: bool = True) -> tuple[Path, PlanInfo]:
    """Build ``WORK/model.<precision>.plan`` (+ ``.plan.json``) on this machine's GPU; both written atomically.
    ``source``/``plan``: another component's ONNX and engine path (engines/tensorrt/components.py), or a time-step
    group's graph and engine (engines/tensorrt/groups.py). ``write_info=False``: the engine only, its PlanInfo returned
    for the caller to record (a group engine is recorded in the global engine's ``.plan.json``)."""
    require_tensorrt()
    gpu = current_gpu()
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, SaveEngine
    from polygraphy.backend.trt import Profile as PolygraphyProfile
    from polygraphy.exception import PolygraphyException

    from engines.tensorrt.fp16_convert import convert_file

    source = source or source_onnx(work, options.precision)
    mode = build_mode(trt.__version__, options.precision)
    plan = plan or plan_path(work.root, options.precision)
    print(f"TensorRT {trt.__version__} on {gpu.name} (sm {gpu.compute_capability}): building {plan.name} from "
          f"{source.name}, " + ("strongly typed" if mode.strongly_typed else
                               f"weakly typed (TensorRT < 10: INT8={mode.int8_flag}, FP16={mode.fp16_flag} flags)"))
    sha = onnx_model_sha256(source)
    builder: dict[str, Any] = {
        "optimization_level": options.opt_level,
        "workspace_gb": options.workspace_gb,
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "builder_flags": [f for f, on in (("FP16", mode.fp16_flag), ("INT8", mode.int8_flag),
                                          ("TF32", options.tf32)) if on],
        "tf32": options.tf32,
    }
    check_for_tensorrt(onnx.load(str(source), load_external_data=False), trt_major(trt.__version__), source.name)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=work.root) as tmp:
        onnx_path = source
        if mode.float_conv_transpose:
            adapted, floated = float_conv_transpose(onnx.load(str(source), load_external_data=True))
            if floated:
                onnx_path = Path(tmp) / f"{source.stem}.trt8.onnx"
                onnx.save_model(adapted, str(onnx_path), save_as_external_data=not fits_protobuf(adapted),
                                location=f"{onnx_path.name}.data")
                builder["float_conv_transpose"] = floated
                print(f"  TensorRT {trt.__version__}: {len(floated)} quantized ConvTranspose kept float (8.x INT8 "
                      "deconvolution takes per-input-channel weight scales only)")
        if mode.convert_fp16:
            onnx_path = Path(tmp) / f"{source.stem}.fp16.onnx"
            report = convert_file(source, onnx_path)
            builder["fp16_conversion"] = report.to_json()
            print(f"  FP16 graph: {report.fp16_nodes} nodes FP16, {report.fp32_nodes} kept FP32 "
                  f"(Q/DQ, quantized ops, time embedding), {report.casts} casts")
        flags = [trt.OnnxParserFlag.NATIVE_INSTANCENORM] if hasattr(trt, "OnnxParserFlag") else None
        network = NetworkFromOnnxPath(str(onnx_path), flags=flags, strongly_typed=mode.strongly_typed)
        profiles = []
        for p in options.profiles:
            pg = PolygraphyProfile()
            for name, r in p.items():
                pg.add(name, min=r.min, opt=r.opt, max=r.max)
            profiles.append(pg)
        pools = ({trt.MemoryPoolType.WORKSPACE: int(options.workspace_gb * (1 << 30))}
                 if options.workspace_gb else None)
        config = CreateConfig(
            fp16=mode.fp16_flag,
            int8=mode.int8_flag,
            tf32=options.tf32,
            profiles=profiles,
            load_timing_cache=str(options.timing_cache) if options.timing_cache else None,
            builder_optimization_level=options.opt_level,
            memory_pool_limits=pools,
            profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        )
        try:
            engine: trt.ICudaEngine = EngineFromNetwork(
                network, config=config,
                save_timing_cache=str(options.timing_cache) if options.timing_cache else None,
            )()
        except PolygraphyException as exc:
            raise UserError(f"TensorRT could not build an engine from '{source}': {first_line(exc)}") from exc
        inspector = engine.create_engine_inspector()
        layers = parse_engine_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        builder["layers"] = precision_summary(layers)
        with atomic_path(plan) as tmp_plan:
            SaveEngine(engine, str(tmp_plan))()
    builder["build_seconds"] = round(time.perf_counter() - start, 1)
    if command:
        builder["command"] = command
    info = PlanInfo(
        precision=options.precision,
        tensorrt_version=trt.__version__,
        gpu=gpu,
        profiles=list(options.profiles),
        source_onnx=source.name,
        source_sha256=sha,
        strongly_typed=mode.strongly_typed,
        cuda_graph=options.cuda_graph,
        builder=builder,
    )
    if write_info:
        write_plan_info(plan, info)
    return plan, info
