"""The shortcut split: a Conv fed by a skip-connection Concat becomes one Conv per Concat branch, summed.

Conv(concat(a, b), W) + bias == Conv(a, W[:, :Ca], bias) + Conv(b, W[:, Ca:]) exactly in real arithmetic (FP32 up to
rounding). Calibration takes its statistics on the split graph (so every branch gets its own range), and the Q/DQ
rewriter (quantization/qdq_insert.py) splits the same convolutions before quantizing each branch on its own scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from common.errors import UserError
from exporter.graph_index import GraphIndex, int_attr
from common.protobuf import PROTOBUF_LIMIT, model_bytes
from exporter.shape_info import infer_value_info


@dataclass(frozen=True)
class SplitConv:
    """A shortcut Conv on a skip Concat, to be rewritten as one Conv per Concat branch, summed."""

    conv: str
    branches: tuple[str, ...]  # the Concat's input tensors, in channel order


def is_skip_concat(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """Concat on axis 1 of activations only, whose output is the data input of at least one Conv."""
    if node.op_type != "Concat" or int_attr(node, "axis", 0) != 1 or len(node.input) < 2:
        return False
    if not all(index.is_activation(i) for i in node.input):
        return False
    return any(c.op_type == "Conv" and c.input[0] == node.output[0] for c in index.consumers[node.output[0]])


def shortcut_convs(model: onnx.ModelProto, index: GraphIndex | None = None) -> dict[str, onnx.NodeProto]:
    """Conv node name -> the skip Concat feeding its data input, for every shortcut Conv of ``model``."""
    index = index or GraphIndex.build(model.graph, infer_value_info(model))
    found: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            src = index.producer.get(node.input[0])
            if src is not None and is_skip_concat(src, index):
                found[node.name] = src
    return found


def branch_output(conv_output: str, i: int) -> str:
    """Name of the output tensor of branch ``i`` of a split convolution whose original output was ``conv_output``."""
    return f"{conv_output}/split{i}"


def split_conv(graph: gs.Graph, conv: gs.Node, branches: list[gs.Tensor]) -> list[gs.Node]:
    """Rewrite ``conv`` (a node of ``graph`` whose data input is the concat of ``branches``) into one Conv per
    branch plus Adds that write the original output tensor. Returns the branch convolutions, in branch order; each
    has its weight slice as a new ``gs.Constant`` (input 1) and the bias (input 2) only on branch 0."""
    if int(conv.attrs.get("group", 1)) != 1:
        raise UserError(f"cannot split grouped convolution '{conv.name}'")
    weight = conv.inputs[1]
    w = np.asarray(weight.values)
    widths = [_channels(b) for b in branches]
    if sum(widths) != w.shape[1]:
        raise RuntimeError(f"{conv.name}: branch channels {widths} do not add up to {w.shape[1]}")
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    out = conv.outputs[0]
    nodes: list[gs.Node] = []
    offset = 0
    for i, (branch, width) in enumerate(zip(branches, widths, strict=True)):
        wi = gs.Constant(f"{weight.name}/split{i}", np.ascontiguousarray(w[:, offset : offset + width]))
        offset += width
        inputs = [branch, wi] + ([bias] if (bias is not None and i == 0) else [])
        y = gs.Variable(branch_output(out.name, i), dtype=np.float32)
        node = gs.Node("Conv", name=f"{conv.name}/split{i}", attrs=dict(conv.attrs), inputs=inputs, outputs=[y])
        graph.nodes.append(node)
        nodes.append(node)
    conv.outputs.clear()
    acc: gs.Variable = nodes[0].outputs[0]
    for i, node in enumerate(nodes[1:], start=1):
        z = out if i == len(nodes) - 1 else gs.Variable(f"{out.name}/sum{i}", dtype=np.float32)
        graph.nodes.append(gs.Node("Add", name=f"{conv.name}/split_sum{i}", inputs=[acc, node.outputs[0]],
                                   outputs=[z]))
        acc = z
    return nodes


def split_shortcuts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Only the shortcut split, in FP32 (no Q/DQ): equal to ``model`` up to float rounding (``model`` untouched)."""
    convs = shortcut_convs(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(infer_value_info(model))
    graph = gs.import_onnx(out)
    nodes = {n.name: n for n in graph.nodes}
    tensors = graph.tensors()
    for name, concat in convs.items():
        split_conv(graph, nodes[name], [tensors[t] for t in concat.input])
    graph.cleanup().toposort()
    result = gs.export_onnx(graph, do_type_check=True)
    result.ir_version = model.ir_version
    del result.opset_import[:]
    result.opset_import.extend(model.opset_import)
    del result.graph.value_info[:]
    if model_bytes(result) < PROTOBUF_LIMIT:
        return onnx.shape_inference.infer_shapes(result, strict_mode=True)
    result.graph.value_info.extend(infer_value_info(result, data_prop=False))  # above 2 GB: shapes without data
    return result


def _channels(tensor: gs.Tensor) -> int:
    shape = tensor.shape
    if shape is None or len(shape) < 2 or not isinstance(shape[1], (int, np.integer)):
        raise RuntimeError(f"unknown channel count of '{tensor.name}' (shape {shape})")
    return int(shape[1])
