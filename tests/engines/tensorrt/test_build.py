"""Engine builder: profiles from export.json, per-version build mode, inspector parsing (CPU); real builds (gpu)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest

from common.errors import UserError
from common.workdir import WorkDir
from engines.tensorrt.build import (
    BuildOptions,
    build_engine,
    build_mode,
    parse_engine_layers,
    precision_summary,
    profiles_from_export,
    source_onnx,
)
from engines.tensorrt.plan import ShapeRange, read_plan_info, tensorrt_installed, trt_major
from tests.conftest import run_cli


def _export_info(work: Path) -> dict[str, Any]:
    return WorkDir(work).load_export_info()


# --- profiles --------------------------------------------------------------------------------------------------------
def test_profile_from_export_json(tiny_work: Path) -> None:
    [profile] = profiles_from_export(_export_info(tiny_work))  # export.json profile: min 1, opt 1, max 16
    assert profile == {"sample": ShapeRange((1, 1, 16, 16), (1, 1, 16, 16), (16, 1, 16, 16)),
                       "timestep": ShapeRange((1,), (1,), (16,))}


def test_guidance_doubles_the_batch_of_a_conditional_model(tiny_cond_work: Path) -> None:
    [profile] = profiles_from_export(_export_info(tiny_cond_work), min_batch=1, opt_batch=4, max_batch=8)
    assert profile["sample"] == ShapeRange((1, 4, 8, 8), (8, 4, 8, 8), (16, 4, 8, 8))
    assert profile["encoder_hidden_states"] == ShapeRange((1, 5, 12), (8, 5, 12), (16, 5, 12))
    assert profile["timestep"] == ShapeRange((1,), (8,), (16,))


def test_flags_override_and_bad_ranges(tiny_work: Path) -> None:
    info = _export_info(tiny_work)
    [profile] = profiles_from_export(info, opt_batch=4, max_batch=4)
    assert profile["sample"] == ShapeRange((1, 1, 16, 16), (4, 1, 16, 16), (4, 1, 16, 16))
    with pytest.raises(UserError, match=r"1 <= min <= opt <= max.*min 8, opt 1, max 16.*--min-batch"):
        profiles_from_export(info, min_batch=8)
    # a dynamic resolution axis needs its range in export.json's profile
    dyn = json.loads(json.dumps(info))
    dyn["inputs"]["sample"]["shape"] = ["batch", 1, "height", 16]
    with pytest.raises(UserError, match="dynamic axis 'height'"):
        profiles_from_export(dyn)
    dyn["profile"].update(min_height=8, opt_height=16, max_height=32)
    assert profiles_from_export(dyn)[0]["sample"] == ShapeRange((1, 1, 8, 16), (1, 1, 16, 16), (16, 1, 32, 16))
    with pytest.raises(UserError, match="no 'inputs'"):
        profiles_from_export({"profile": {}})


# --- build mode and options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["10.3.0.30", "10.13.0.35", "11.4.0.106"])
@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_tensorrt_10_and_11_build_strongly_typed_without_precision_flags(version: str, precision: str) -> None:
    mode = build_mode(version, precision)
    assert mode.strongly_typed and mode.convert_fp16 and not mode.int8_flag and not mode.fp16_flag


def test_tensorrt_8_builds_with_int8_and_fp16_flags() -> None:
    # JetPack 5 (TensorRT 8.5) and 6.0 (8.6): no strongly typed networks
    assert build_mode("8.6.2.3", "int8") == build_mode("8.5.2.2", "int8")
    mode = build_mode("8.6.2.3", "int8")
    assert not mode.strongly_typed and not mode.convert_fp16 and mode.int8_flag and mode.fp16_flag
    mode = build_mode("8.5.2.2", "fp16")
    assert mode.fp16_flag and not mode.int8_flag
    with pytest.raises(UserError, match="unknown --precision 'fp32'"):
        build_mode("10.13.0.35", "fp32")


def test_sources_and_options(tiny_work: Path) -> None:
    work = WorkDir(tiny_work)
    assert source_onnx(work, "fp16") == tiny_work / "model.onnx"
    with pytest.raises(UserError, match="missing model.int8.trt.onnx.*python -m tools quantize .* --target tensorrt"):
        source_onnx(work, "int8")
    profiles = tuple(profiles_from_export(_export_info(tiny_work)))
    with pytest.raises(UserError, match="--opt-level must be in 0..5"):
        BuildOptions("int8", profiles, opt_level=6)
    with pytest.raises(UserError, match="--workspace-gb must be > 0"):
        BuildOptions("int8", profiles, workspace_gb=0)
    with pytest.raises(UserError, match="unknown --precision"):
        BuildOptions("int4", profiles)


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")
def test_build_engine_without_tensorrt(tiny_work: Path) -> None:
    options = BuildOptions("fp16", tuple(profiles_from_export(_export_info(tiny_work))))
    with pytest.raises(UserError, match="requirements-gpu.txt"):
        build_engine(WorkDir(tiny_work), options)
    assert not list(tiny_work.glob("*.plan*"))


# --- engine inspector ------------------------------------------------------------------------------------------------
TRT10_JSON = json.dumps({"Layers": [
    {"Name": "sample_q + /conv_in/Conv", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "sample_q", "Location": "Device", "Dimensions": [2, 1, 28, 28],
                 "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}],
     "Outputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}], "TacticName": "sm80_xmma_fprop_i8i8"},
    {"Name": "/norm/InstanceNormalization", "LayerType": "Normalization",
     "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP16 format"}]},
    {"Name": "/up/conv/Conv", "LayerType": "CaskGemmConvolution",
     "Inputs": [{"Name": "y", "Format/Datatype": "Row major linear FP16 format"}]},
], "Bindings": ["sample", "timestep", "out"]})
TRT11_JSON = json.dumps({"Layers": [
    {"Name": "/conv_in/Conv", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "q", "Format": "Channel major format (kCHW32)", "DataType": "Int8"}]},
], "I/O Tensors": [{"Name": "sample", "IOMode": "Input", "DataType": "Float"}]})


def test_inspector_json_of_tensorrt_10_and_11() -> None:
    layers = parse_engine_layers(TRT10_JSON)
    assert [(layer.is_convolution, layer.int8_input) for layer in layers] == [(True, True), (False, False),
                                                                              (True, False)]
    assert precision_summary(layers) == {"layers": 3, "convolutions": 2, "int8_convolutions": 1,
                                         "fp8_convolutions": 0, "fp8_layers": 0}
    [layer] = parse_engine_layers(TRT11_JSON)
    assert layer.is_convolution and layer.int8_input and layer.name == "/conv_in/Conv"
    with pytest.raises(ValueError, match="profiling_verbosity=DETAILED"):
        parse_engine_layers(json.dumps({"Layers": ["/conv_in/Conv", "/norm"]}))


# Myelin fuses layers into "{ForeignNode[...]}" whose names hold neither node; the metadata names every ONNX node.
MYELIN_JSON = json.dumps({"Layers": [
    {"Name": "{ForeignNode[/down/0/Conv.../up/1/Add]}", "LayerType": "Myelin",
     "Inputs": [{"Name": "x", "Format/Datatype": "Channel major INT8 format"}],
     "Metadata": "[ONNX Layer: /down/0/Conv]\x1f[ONNX Layer: /down/0/norm/InstanceNormalization | fused]"},
    {"Name": "sample_q + /conv_in/Conv", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "q", "Format/Datatype": "Row major linear FP16 format"}]},
]})


def test_inspector_layers_are_matched_by_their_onnx_node_metadata() -> None:
    myelin, plain = parse_engine_layers(MYELIN_JSON)
    assert myelin.onnx_nodes == ("/down/0/Conv", "/down/0/norm/InstanceNormalization")
    assert myelin.made_from("/down/0/Conv") and not myelin.made_from("/down/0")  # exact names, not substrings
    assert myelin.int8_input and not myelin.is_convolution  # a Myelin layer: found by metadata, not by type
    assert plain.onnx_nodes == () and plain.made_from("/conv_in/Conv")  # no metadata: the name decides


class _ConfigSeen(Exception):
    """Stops a build with fake TensorRT objects once Polygraphy's CreateConfig was called."""


@pytest.mark.parametrize("tf32", [None, False, True])
def test_tf32_is_always_set_explicitly(tiny_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       tf32: bool | None) -> None:
    """Polygraphy's CreateConfig clears BuilderFlag.TF32 unless told; the build passes options.tf32 (default off),
    seen on the config a build with fake TensorRT objects creates."""
    import sys
    import types

    import polygraphy.backend.trt as polygraphy_trt

    import engines.tensorrt.build as module
    from engines.tensorrt.plan import GpuInfo

    fake_trt = types.SimpleNamespace(__version__="10.13.0.35", Builder=object,
                                     ProfilingVerbosity=types.SimpleNamespace(DETAILED="DETAILED"))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    monkeypatch.setattr(module, "current_gpu", lambda device=0: GpuInfo("NVIDIA L40S", "8.9"))
    monkeypatch.setattr(polygraphy_trt, "NetworkFromOnnxPath", lambda *a, **k: "network")
    seen: dict[str, Any] = {}

    def create_config(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise _ConfigSeen

    monkeypatch.setattr(polygraphy_trt, "CreateConfig", create_config)
    options = (BuildOptions(precision="fp16", profiles=({},)) if tf32 is None
               else BuildOptions(precision="fp16", profiles=({},), tf32=tf32))
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(_ConfigSeen):
        build_engine(WorkDir(work), options, source=tiny_work / "model.onnx")
    assert seen["tf32"] is bool(tf32) and seen["fp16"] is False and seen["int8"] is False  # strongly typed (10.x)


# --- GPU -------------------------------------------------------------------------------------------------------------
def quantized_reference(work: Path) -> Path:
    """The reference work folder calibrated, quantized for TensorRT and built as an INT8 engine (once per session)."""
    if not (work / "model.int8.trt.onnx").is_file():
        assert run_cli("calibrate", work, "--samples", "64") == 0
        assert run_cli("quantize", work, "--target", "tensorrt") == 0
    if not (work / "model.int8.plan").is_file():
        assert run_cli("build", work, "--precision", "int8") == 0
    return work


def quantized_conv_names(onnx_path: Path) -> list[str]:
    """Names of the Conv nodes whose data input comes from a DequantizeLinear."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in dq_outputs]


@pytest.mark.gpu("tensorrt")
def test_int8_engine_runs_the_quantized_convolutions_in_int8(reference_work: Path) -> None:
    import tensorrt as trt

    from engines.tensorrt.session import TrtSession

    work = quantized_reference(reference_work)
    plan = work / "model.int8.plan"
    info = read_plan_info(plan)
    assert info.precision == "int8" and info.tensorrt_version == trt.__version__
    assert info.strongly_typed == (trt_major(trt.__version__) >= 10)
    with TrtSession(plan) as session:
        inspector = session.engine.create_engine_inspector()
        layers = parse_engine_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    quantized = quantized_conv_names(work / "model.int8.trt.onnx")
    assert quantized, "quantize wrote no quantized Conv"
    found = {name: [layer for layer in layers if layer.made_from(name)] for name in quantized}
    located = {name: hits for name, hits in found.items() if hits}
    missing = sorted(set(found) - set(located))
    assert len(located) >= 0.8 * len(quantized), f"quantized convs not found in the engine's layers: {missing}"
    not_int8 = [name for name, hits in located.items() if not any(h.int8_input for h in hits)]
    assert not not_int8, f"quantized Conv layers not running in INT8: {not_int8}"
    assert info.builder["layers"]["int8_convolutions"] >= len(located)


@pytest.mark.gpu("tensorrt")
def test_fp16_engine_build_records_its_metadata(reference_work: Path) -> None:
    import tensorrt as trt

    work = reference_work
    assert run_cli("build", work, "--precision", "fp16", "--cuda-graph", "--opt-level", "3",
                   "--timing-cache", work / "timing.cache") == 0
    info = read_plan_info(work / "model.fp16.plan")
    assert info.tensorrt_version == trt.__version__ and info.cuda_graph and info.source_onnx == "model.onnx"
    assert info.builder["layers"]["int8_convolutions"] == 0
    if trt_major(trt.__version__) >= 10:
        assert info.builder["fp16_conversion"]["fp16_nodes"] > 0
    assert (work / "timing.cache").stat().st_size > 0
