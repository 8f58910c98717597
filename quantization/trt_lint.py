"""Lint a Q/DQ ONNX model against TensorRT's documented explicit-quantization constraints.

Rules (TensorRT developer guide, "Working with Quantized Types" / "Q/DQ Layer-Placement"):
- ``opset``: Q/DQ per-channel needs opset >= 13; blocked (INT4) DequantizeLinear needs opset >= 21.
- ``dtype``: INT8 Q/DQ must be signed int8 (a Q without zero point produces uint8); INT4 only as weights with a block;
  a blocked DequantizeLinear only on a 2-D K×N weight, blocked along K (axis 0), read as B by MatMul/Gemm (transB=0).
- ``int4-block`` (``tensorrt`` target): block size 64 or 128 (TensorRT's INT4 weight-only quantization), and N even
  (the ONNX parser rejects INT4 tensors with an odd last dimension: onnx-tensorrt onnxOpImporters.cpp, "Quantization
  to INT4 is not supported for tensors with an odd last dimension").
- ``zero-point``: every zero point is 0 (TensorRT quantization is symmetric).
- ``scale``: scales are build-time constants, finite and > 0.
- ``per-tensor-activation``: activation (non-constant) Q/DQ use one scale.
- ``axis``: per-channel weight DQ uses the output-channel axis of its consumer (Conv 0, ConvTranspose 1, MatMul the
  last axis, Gemm 0 with transB=1 else 1).
- ``pair``: every QuantizeLinear feeds only DequantizeLinear nodes, with the same scale; every DequantizeLinear reads a
  QuantizeLinear or a constant.
- ``placement``: no Q/DQ on integer or shape tensors; no DequantizeLinear output that is a graph output.
- ``fp8`` (a graph with FLOAT8E4M3FN zero points): opset >= 19, every zero point 0 of type FLOAT8E4M3FN (no INT8
  zero point mixed in: one format per graph, as ``quantize --format`` writes), activations per tensor.
``fp8_notes`` lists which ops read FP8 DequantizeLinear outputs and the TensorRT release each fusion needs
(docs/tensorrt.md, "FP8").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from exporter.graph_index import GraphIndex
from exporter.shape_info import infer_value_info

SHAPE_INPUTS = {"Reshape": 1, "Expand": 1, "Tile": 1, "Slice": 1, "ConstantOfShape": 0, "Resize": 3}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class Violation:
    """One broken rule at one node."""

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _dtype_of(index: GraphIndex, name: str, inferred: dict[str, int]) -> int | None:
    if name in index.initializers:
        return index.initializers[name].data_type
    if name in index.constants:
        return index.constants[name].data_type
    return inferred.get(name)


def lint_model(model: onnx.ModelProto, allow_int32_bias: bool = False) -> list[Violation]:
    """All violations of the rules above, in node order (an empty list for a clean model).

    ``allow_int32_bias`` (the ``onnxruntime`` target) accepts INT32 bias DequantizeLinear (constant codes feeding a
    Conv/Gemm bias) and UINT8 activations with zero point 128 (symmetric INT8 shifted), which ONNX Runtime's CPU
    fusions need and TensorRT rejects: lint an ``onnxruntime``-target model with it, a ``tensorrt`` one without."""
    out: list[Violation] = []
    opset = _opset(model)
    value_info = infer_value_info(model, data_prop=False)
    elem: dict[str, int] = {}
    for vi in value_info + list(model.graph.input) + list(model.graph.output):
        if vi.type.HasField("tensor_type"):
            elem[vi.name] = vi.type.tensor_type.elem_type
    index = GraphIndex.build(model.graph, value_info)
    graph_outputs = {o.name for o in model.graph.output}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if qdq and opset < 13:
        out.append(Violation("opset", qdq[0].name, f"opset {opset} < 13: TensorRT needs opset >= 13 for Q/DQ"))
    fp8 = [n for n in qdq if _zero_point_type(n, index) == onnx.TensorProto.FLOAT8E4M3FN]
    if fp8 and opset < FP8_MIN_OPSET:
        out.append(Violation("fp8", fp8[0].name, f"opset {opset} < {FP8_MIN_OPSET}: FLOAT8E4M3FN Q/DQ needs opset "
                             f">= {FP8_MIN_OPSET} (quantize --format fp8 raises it)"))
    for node in qdq:
        out.extend(_check_node(node, index, elem, opset, graph_outputs, allow_int32_bias))
        if fp8 and node not in fp8:
            type_name = _zero_point_type_name(node, index)
            out.append(Violation("fp8", node.name or node.output[0], f"zero point of type {type_name} in an FP8 "
                                 "graph: every Q/DQ of an FP8 graph needs a FLOAT8E4M3FN zero point"))
    return out


FP8_MIN_OPSET = 19
#: Ops that read FP8 DequantizeLinear outputs -> what TensorRT runs in FP8 there and the release that added it
#: (sources in docs/tensorrt.md, "FP8"). Anything else reading FP8 runs dequantized (float) in TensorRT.
FP8_FUSIONS = {
    "MatMul": "FP8 GEMM (Ada/Hopper, compute capability >= 8.9); per-channel FP8 weight scales on Hopper need "
              "TensorRT >= 10.6",
    "Gemm": "FP8 GEMM (as MatMul)",
    "Conv": "FP8 convolution: check the TensorRT release notes of your version (ModelOpt's ONNX FP8 path still "
            "skips Conv nodes it deems unsupported); an unfused one runs in FP16/FP32 on dequantized inputs",
    "attention": "fused FP8 multi-head attention: Hopper; Ada since TensorRT 10.6 (head size <= 64, sequence "
                 "<= 3072); head_dim a multiple of 16",
    "Add": "residual Add fused into the preceding FP8 convolution/GEMM epilogue",
}


def _zero_point_type(node: onnx.NodeProto, index: GraphIndex) -> int | None:
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zp is None or not index.is_constant(zp):
        return None
    return (index.initializers.get(zp) or index.constants[zp]).data_type


def _zero_point_type_name(node: onnx.NodeProto, index: GraphIndex) -> str:
    t = _zero_point_type(node, index)
    return "none (uint8)" if t is None else onnx.TensorProto.DataType.Name(t)


def _is_activation(name: str, index: GraphIndex) -> bool:
    """``name`` is computed at run time: not a constant, nor the dequantization of one (a weight)."""
    src = index.producer.get(name)
    if src is not None and src.op_type == "DequantizeLinear":
        return not index.is_constant(src.input[0])
    return not index.is_constant(name)


def fp8_notes(model: onnx.ModelProto) -> list[str]:
    """One line per kind of op that reads an FP8 DequantizeLinear: how many, and what TensorRT needs to run it in
    FP8 (``FP8_FUSIONS``); empty for a graph without FP8 Q/DQ."""
    index = GraphIndex.build(model.graph)
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or _zero_point_type(node, index) != onnx.TensorProto.FLOAT8E4M3FN:
            continue
        for reader in index.consumers.get(node.output[0], []):
            kind = reader.op_type
            if kind == "MatMul" and all(_is_activation(i, index) for i in reader.input[:2]):
                kind = "attention"  # two activations: QK^T or softmax·V
            readers.setdefault(kind, set()).add(reader.name or reader.output[0])
    return [f"FP8 {kind} nodes: {len(names)}; TensorRT: {FP8_FUSIONS.get(kind, 'no FP8 kernel: runs dequantized')}"
            for kind, names in sorted(readers.items())]


def _is_bias_dq(node: onnx.NodeProto, index: GraphIndex) -> bool:
    readers = index.consumers.get(node.output[0], [])
    return node.op_type == "DequantizeLinear" and index.is_constant(node.input[0]) and bool(readers) and all(
        r.op_type in ("Conv", "ConvTranspose", "Gemm") and len(r.input) > 2 and r.input[2] == node.output[0]
        for r in readers)


def _check_node(node: onnx.NodeProto, index: GraphIndex, elem: dict[str, int], opset: int,
                graph_outputs: set[str], allow_int32_bias: bool) -> list[Violation]:
    v: list[Violation] = []
    name = node.name or node.output[0]
    is_q = node.op_type == "QuantizeLinear"
    x, scale_name = node.input[0], node.input[1]
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    block = _attr(node, "block_size", 0) or 0
    # scale: constant, finite, > 0
    if not index.is_constant(scale_name):
        v.append(Violation("scale", name, f"scale '{scale_name}' is not a constant"))
        scale = None
    else:
        scale = index.array(scale_name).astype(np.float64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            v.append(Violation("scale", name, "scale must be finite and > 0"))
    # zero point and dtype
    if zp_name is None:
        if is_q:
            v.append(Violation("dtype", name, "QuantizeLinear without zero point outputs uint8; TensorRT needs int8"))
    elif not index.is_constant(zp_name):
        v.append(Violation("zero-point", name, f"zero point '{zp_name}' is not a constant"))
    else:
        zp = index.array(zp_name)
        zp_type = (index.initializers.get(zp_name) or index.constants[zp_name]).data_type
        u8_symmetric = allow_int32_bias and zp_type == onnx.TensorProto.UINT8 and np.all(zp == 128)
        if np.any(zp.astype(np.float32) != 0) and not u8_symmetric:
            v.append(Violation("zero-point", name, "non-zero zero point: TensorRT quantization is symmetric"))
        if zp_type == onnx.TensorProto.INT4:
            if is_q or not index.is_constant(x):
                v.append(Violation("dtype", name, "INT4 is supported only for constant weights (DequantizeLinear)"))
            if opset < 21 or not block:
                v.append(Violation("opset", name, "INT4 DequantizeLinear needs opset >= 21 and a block_size"))
        elif zp_type == onnx.TensorProto.INT32 and allow_int32_bias and _is_bias_dq(node, index):
            pass
        elif u8_symmetric or zp_type == onnx.TensorProto.FLOAT8E4M3FN:
            pass  # FP8: the opset and the one-format rule are checked in lint_model
        elif zp_type != onnx.TensorProto.INT8:
            type_name = onnx.TensorProto.DataType.Name(zp_type)
            v.append(Violation("dtype", name, f"zero point type {type_name}: TensorRT INT8 Q/DQ needs int8"))
    if block and opset < 21:
        v.append(Violation("opset", name, f"block_size needs opset >= 21 (model has {opset})"))
    if block:
        v.extend(_check_block(node, name, index))
        if not allow_int32_bias:
            v.extend(_check_tensorrt_block(node, name, index, block))
    # per-tensor activations, per-channel axis for weights
    per_channel = scale is not None and scale.size > 1
    constant_input = index.is_constant(x)
    if per_channel and not constant_input:
        v.append(Violation("per-tensor-activation", name, f"activation '{x}' has {scale.size} scales; "  # type: ignore[union-attr]
                           "TensorRT quantizes activations per tensor"))
    if per_channel and constant_input and not is_q and not block and not _is_bias_dq(node, index):
        v.extend(_check_axis(node, name, index))
    # pairs
    if is_q:
        readers = index.consumers.get(node.output[0], [])
        if not readers:
            v.append(Violation("pair", name, "QuantizeLinear output is unused or a graph output (Q without DQ)"))
        for r in readers:
            if r.op_type != "DequantizeLinear":
                v.append(Violation("pair", name, f"QuantizeLinear feeds {r.op_type} '{r.name}', not a DequantizeLinear"))
            elif scale is not None and index.is_constant(r.input[1]):
                if not np.allclose(index.array(r.input[1]), scale, rtol=1e-6, atol=0):
                    v.append(Violation("pair", name, f"Q and DQ '{r.name}' use different scales"))
        x_type = _dtype_of(index, x, elem)
        if x_type is not None and x_type not in FLOAT_TYPES:
            v.append(Violation("placement", name, f"quantizes non-float tensor '{x}'"))
    else:
        src = index.producer.get(x)
        if not constant_input and (src is None or src.op_type != "QuantizeLinear"):
            v.append(Violation("pair", name, f"DequantizeLinear reads '{x}', which is neither a Q output nor a constant"))
        if node.output[0] in graph_outputs:
            v.append(Violation("placement", name, "DequantizeLinear output is a graph output"))
        for r in index.consumers.get(node.output[0], []):
            shape_input = SHAPE_INPUTS.get(r.op_type)
            if shape_input is not None and len(r.input) > shape_input and r.input[shape_input] == node.output[0]:
                v.append(Violation("placement", name, f"feeds the shape input of {r.op_type} '{r.name}'"))
    return v


def _check_block(node: onnx.NodeProto, name: str, index: GraphIndex) -> list[Violation]:
    """Blocked DequantizeLinear: TensorRT takes it only as INT4 weight-only quantization of a 2-D MatMul/Gemm
    weight (input B, transB=0), blocked along K (axis 0)."""
    out = []
    if index.is_constant(node.input[0]) and index.array(node.input[0]).ndim != 2:
        out.append(Violation("placement", name, "blocked quantization needs a 2-D weight"))
    if (_attr(node, "axis", 1) or 0) != 0:
        out.append(Violation("axis", name, "blocked weight must be blocked along K (axis 0 of the K×N weight)"))
    for r in index.consumers.get(node.output[0], []):
        if r.op_type not in ("MatMul", "Gemm") or r.input[1] != node.output[0] or _attr(r, "transB", 0):
            out.append(Violation("placement", name, f"blocked DequantizeLinear feeds {r.op_type} '{r.name}'; "
                                 "TensorRT takes blocked INT4 only as input B of MatMul/Gemm (transB=0)"))
    return out


TENSORRT_INT4_BLOCK_SIZES = (64, 128)


def _check_tensorrt_block(node: onnx.NodeProto, name: str, index: GraphIndex, block: int) -> list[Violation]:
    """What TensorRT builds of blocked INT4: block size 64 or 128, an even last (N) dimension."""
    out = []
    if block not in TENSORRT_INT4_BLOCK_SIZES:
        out.append(Violation("int4-block", name, f"block size {block}: TensorRT builds INT4 blocks of "
                             f"{' or '.join(map(str, TENSORRT_INT4_BLOCK_SIZES))} only (quantize --int4-block-size)"))
    if index.is_constant(node.input[0]):
        shape = index.array(node.input[0]).shape
        if shape and shape[-1] % 2:
            out.append(Violation("int4-block", name, f"INT4 weight {tuple(shape)} has an odd last dimension: "
                                 "TensorRT's ONNX parser rejects it (keep this layer INT8)"))
    return out


def _check_axis(node: onnx.NodeProto, name: str, index: GraphIndex) -> list[Violation]:
    axis = _attr(node, "axis", 1)
    w = index.array(node.input[0])
    out = []
    for r in index.consumers.get(node.output[0], []):
        if r.input[1] != node.output[0] and r.op_type != "Gemm":
            continue
        if r.op_type == "Conv":
            want = 0
        elif r.op_type == "ConvTranspose":
            want = 1
        elif r.op_type == "MatMul":
            want = w.ndim - 1
        elif r.op_type == "Gemm":
            if r.input[1] != node.output[0]:
                continue
            want = 0 if _attr(r, "transB", 0) else 1
        else:
            continue
        if axis is not None and axis < 0:
            axis += w.ndim
        if axis != want:
            out.append(Violation("axis", name, f"per-channel axis {axis} for {r.op_type} '{r.name}' weights; "
                                 f"TensorRT needs the output-channel axis {want}"))
    return out
