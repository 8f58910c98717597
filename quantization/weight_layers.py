"""Quantized weights in one matrix form, y = x_rows @ W.T with W Cout×K, whatever the op.

The rewriter stores codes and scales in the op's layout; weight rounding learns them in matrix form. This module
converts between the two and lists, from a Q/DQ plan, every weight the rewrite will quantize (split shortcut
branches included) with the activation it multiplies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.graph_index import GraphIndex, int_attr, ints_attr
from quantization.qdq_policy import QDQPolicy
from exporter.shape_info import infer_value_info


@dataclass(frozen=True)
class ConvGeometry:
    """What ``torch.nn.functional.unfold`` needs to turn a Conv input into rows: kernel, strides, dilations, and
    ONNX pads (top, left, bottom, right)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]


def to_matrix(op: str, w: np.ndarray, trans_b: bool = False) -> np.ndarray:
    """The op-layout weight as Cout×K (rows: output channels; columns in the order the op reduces over)."""
    if op == "Conv":
        return w.reshape(w.shape[0], -1)
    if op == "Gemm" and trans_b:
        return w
    if op in ("MatMul", "Gemm"):
        return w.T
    raise ValueError(f"no matrix form for {op} weights")


def from_matrix(op: str, m: np.ndarray, shape: tuple[int, ...], trans_b: bool = False) -> np.ndarray:
    """Inverse of ``to_matrix``: a Cout×K array back in the op layout ``shape``."""
    if op == "Conv":
        return np.ascontiguousarray(m.reshape(shape))
    if op == "Gemm" and trans_b:
        return np.ascontiguousarray(m)
    return np.ascontiguousarray(m.T)


@dataclass(frozen=True)
class WeightedLayer:
    """One weight the rewrite quantizes, in matrix form.

    node: the node name in the rewritten graph (a split shortcut branch is ``<conv>/split<i>``); op: Conv, Gemm or
    MatMul; trans_b: Gemm's transB; w: float32 Cout×K; shape: the op-layout shape; input: the float activation it
    multiplies (a tensor of the FP32 model); input_amax: that activation's range when the layer reads it quantized,
    else None; conv: unfold geometry (Conv only); block_size: 0 per channel, else INT4 blocks of this many along K;
    qmax: largest code (127, or 7 for 4-bit values).
    """

    node: str
    op: str
    trans_b: bool
    w: np.ndarray
    shape: tuple[int, ...]
    input: str
    input_amax: float | None
    conv: ConvGeometry | None
    block_size: int
    qmax: int


def conv_geometry(node: onnx.NodeProto, w: np.ndarray) -> ConvGeometry | None:
    """Unfold geometry of a 2-D, ungrouped Conv with explicit pads; None when unfold cannot express it."""
    if w.ndim != 4 or int_attr(node, "group", 1) != 1:
        return None
    for a in node.attribute:
        if a.name == "auto_pad" and a.s not in (b"", b"NOTSET"):
            return None
    kernel = (int(w.shape[2]), int(w.shape[3]))
    strides = ints_attr(node, "strides", [1, 1])
    dilations = ints_attr(node, "dilations", [1, 1])
    pads = ints_attr(node, "pads", [0, 0, 0, 0])
    return ConvGeometry(kernel, (strides[0], strides[1]), (dilations[0], dilations[1]),
                        (pads[0], pads[1], pads[2], pads[3]))


def int4_block_problem(op: str, w_shape: tuple[int, ...], trans_b: bool, block_size: int,
                       tensorrt: bool = False) -> str:
    """Why a MatMul/Gemm weight cannot be blocked INT4 ("" when it can): it must be 2-D with K a multiple of the
    block size; for TensorRT also N even (its ONNX parser rejects INT4 tensors with an odd last dimension:
    "Quantization to INT4 is not supported for tensors with an odd last dimension", onnx-tensorrt
    onnxOpImporters.cpp)."""
    if op not in ("MatMul", "Gemm") or len(w_shape) != 2:
        return "not a 2-D MatMul/Gemm weight"
    k, n = (w_shape[1], w_shape[0]) if (op == "Gemm" and trans_b) else (w_shape[0], w_shape[1])
    if k % block_size:
        return f"K is not a multiple of --int4-block-size {block_size} (K={k})"
    if tensorrt and n % 2:  # stored K×N (a Gemm is rewritten to transB=0): N is the last dimension
        return f"N={n} is odd (TensorRT rejects INT4 weights with an odd last dimension)"
    return ""


def weighted_layers(model: onnx.ModelProto, weights: dict[tuple[str, str], int], splits: list[tuple[str, tuple[str, ...]]],
                    reads_quantized: dict[str, set[str]], amax: dict[str, float], blocked: set[str],
                    policy: QDQPolicy) -> list[WeightedLayer]:
    """Every weight of a plan in matrix form. ``weights``: (node, tensor) -> axis; ``splits``: (conv, branches);
    ``reads_quantized``: activation tensor -> consumers reading it quantized (node names, ``*`` = all);
    ``blocked``: nodes whose weight becomes blocked INT4."""
    nodes = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    out: list[WeightedLayer] = []

    def amax_for(tensor: str, consumer: str) -> float | None:
        readers = reads_quantized.get(tensor, set())
        return amax[tensor] if (consumer in readers or "*" in readers) else None

    for (name, tensor), _axis in weights.items():
        node = nodes[name]
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue  # ConvTranspose: no matrix form here; the rewrite rounds it to nearest
        w = numpy_helper.to_array(inits[tensor]).astype(np.float32)
        trans_b = bool(int_attr(node, "transB", 0)) if node.op_type == "Gemm" else False
        geometry = conv_geometry(node, w) if node.op_type == "Conv" else None
        if node.op_type == "Conv" and geometry is None:
            continue
        is_blocked = name in blocked
        qmax = 7 if is_blocked else policy.weight_qmax(node.op_type)
        out.append(WeightedLayer(name, node.op_type, trans_b, to_matrix(node.op_type, w, trans_b), tuple(w.shape),
                                 node.input[0], None if is_blocked else amax_for(node.input[0], name), geometry,
                                 policy.int4_block_size if is_blocked else 0, qmax))
    if splits:
        index = GraphIndex.build(model.graph, infer_value_info(model))
        for conv_name, branches in splits:
            node = nodes[conv_name]
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            geometry = conv_geometry(node, w)
            if geometry is None:
                continue
            offset = 0
            for i, branch in enumerate(branches):
                shape = index.shape(branch)
                width = int(shape[1]) if shape is not None else 0
                wi = np.ascontiguousarray(w[:, offset:offset + width])
                offset += width
                branch_node = f"{conv_name}/split{i}"
                out.append(WeightedLayer(branch_node, "Conv", False, to_matrix("Conv", wi), tuple(wi.shape), branch,
                                         amax_for(branch, f"{conv_name}/split"), geometry, 0, policy.weight_qmax("Conv")))
    return out
