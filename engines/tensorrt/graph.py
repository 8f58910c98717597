"""What one TensorRT version can build from a Q/DQ ONNX graph, checked and adapted before the build (pure onnx).

* INT4 (blocked DequantizeLinear with INT4 weights, opset 21): TensorRT 10 added INT4 weight-only quantization;
  TensorRT 8.x (JetPack 5 and 6.0) has no INT4 type at all. ``check_for_tensorrt`` refuses such a graph below 10
  with one line saying how to requantize.
* ConvTranspose: TensorRT 8.x INT8 deconvolution kernels take per-input-channel weight scales only (NVIDIA/TensorRT
  issue 2380: "We don't support per-output-channel quant for ConvTranspose"), while our Q/DQ graph quantizes its
  weights per output channel (axis 1). On the 8.x path ``float_conv_transpose`` turns each quantized ConvTranspose
  back to float (weights dequantized into an FP32 initializer, the Q/DQ pair on its input bypassed); TensorRT then
  runs it in FP16/FP32 like any unquantized layer. Nothing else in the graph changes.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import numpy_helper

from common.errors import UserError

INT4_TYPES = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def int4_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the INT4/UINT4 initializers and Constant values of ``model`` (its INT4 weights and zero points)."""
    names = [init.name for init in model.graph.initializer if init.data_type in INT4_TYPES]
    for node in model.graph.node:
        if node.op_type == "Constant":
            names.extend(node.output[0] for a in node.attribute if a.t.data_type in INT4_TYPES)
    return names


def check_for_tensorrt(model: onnx.ModelProto, trt_major: int, source: str = "the Q/DQ model") -> None:
    """UserError (one line) when TensorRT ``trt_major`` cannot build ``model``: INT4 weights below TensorRT 10."""
    int4 = int4_tensors(model)
    if int4 and trt_major < 10:
        raise UserError(f"{source} has {len(int4)} INT4 tensors (blocked INT4 weights, opset {_opset(model)}); "
                        f"TensorRT {trt_major}.x has no INT4 (TensorRT >= 10 does): requantize with "
                        "python -m tools quantize WORK --weight-bits 8 --target tensorrt")


def float_conv_transpose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose quantized ConvTranspose nodes run in float, and their names.

    A ConvTranspose is quantized when its weight comes from a DequantizeLinear of a constant: that weight becomes
    an FP32 initializer holding the dequantized values (``(q - zero_point) * scale``, per channel on the DQ's axis).
    When its data input comes from ``DequantizeLinear(QuantizeLinear(x))`` read by nothing else, it reads ``x``.
    Q/DQ nodes left without readers are removed."""
    model = copy.deepcopy(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)

    def const(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in constants:
            return numpy_helper.to_array(constants[name].attribute[0].t)
        return None

    changed = []
    for node in list(graph.node):
        if node.op_type != "ConvTranspose":
            continue
        touched = False
        dq = producer.get(node.input[1])
        if dq is not None and dq.op_type == "DequantizeLinear" and const(dq.input[0]) is not None:
            q, scale = const(dq.input[0]), const(dq.input[1])
            zp = const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
            if q is not None and scale is not None:
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                shape = [1] * q.ndim
                if scale.size > 1:
                    shape[axis % q.ndim] = -1
                values = q.astype(np.float32) - (0.0 if zp is None else zp.astype(np.float32).reshape(shape))
                weight = (values * scale.astype(np.float32).reshape(shape)).astype(np.float32)
                name = f"{node.input[1]}__float"
                graph.initializer.append(numpy_helper.from_array(weight, name))
                node.input[1] = name
                touched = True
        data_dq = producer.get(node.input[0])
        if data_dq is not None and data_dq.op_type == "DequantizeLinear":
            q_node = producer.get(data_dq.input[0])
            if (q_node is not None and q_node.op_type == "QuantizeLinear"
                    and readers.get(data_dq.output[0]) == [node] and readers.get(q_node.output[0]) == [data_dq]):
                node.input[0] = q_node.input[0]
                touched = True
        if touched:
            changed.append(node.name or node.output[0])
    if changed:
        _drop_unread_qdq(graph)
    return model, changed


def _drop_unread_qdq(graph: onnx.GraphProto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads (repeated: a DQ removed may leave its Q unread)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for n in graph.node for name in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {name for n in graph.node for name in n.input}
    keep = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)
