"""Q/DQ placement rules: op type -> a small rule that *marks* tensors to quantize (ONNX Runtime's registry idea).

A rule never edits the graph; ``quantization/qdq_insert.py`` does every edit in a second phase. Adding an op means adding
a rule here. Marks follow TensorRT's explicit-quantization guidance: quantize the activation inputs of
Conv/ConvTranspose/Gemm/MatMul (per tensor), their weights per channel (Conv axis 0, ConvTranspose axis 1, MatMul the
output axis 1, Gemm axis 0 with transB=1), the residual input of Add where TensorRT fuses the Add into the preceding
convolution, and leave GroupNorm/SiLU/Softmax in float.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import onnx

from exporter.graph_index import GraphIndex, int_attr
from exporter.shortcut_split import is_skip_concat

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class ActivationMark:
    """Quantize activation ``tensor`` where ``node`` reads it as input ``index`` (per tensor, symmetric)."""

    tensor: str
    node: str
    index: int
    reason: str


@dataclass(frozen=True)
class WeightMark:
    """Quantize constant weight ``tensor`` of ``node`` per channel along ``axis`` (symmetric)."""

    tensor: str
    node: str
    axis: int


@dataclass(frozen=True)
class OutputMark:
    """Quantize the output ``tensor`` of ``node`` (ONNX Runtime target: makes DQ->op->Q fuse into an integer op)."""

    tensor: str
    node: str


Mark = ActivationMark | WeightMark | OutputMark


class QDQRule(Protocol):
    """Marks the tensors of one node that may be quantized."""

    op_types: ClassVar[tuple[str, ...]]

    def mark(self, node: onnx.NodeProto, index: GraphIndex) -> list[Mark]: ...


class ConvRule:
    """Conv / ConvTranspose: input 0 per tensor, weight per output channel, bias float, output for ORT."""

    op_types: ClassVar[tuple[str, ...]] = ("Conv", "ConvTranspose")

    def mark(self, node: onnx.NodeProto, index: GraphIndex) -> list[Mark]:
        x, w = node.input[0], node.input[1]
        if not index.is_activation(x) or w not in index.initializers:
            return []
        axis = 1 if node.op_type == "ConvTranspose" else 0
        return [
            ActivationMark(x, node.name, 0, f"{node.op_type} input"),
            WeightMark(w, node.name, axis),
            OutputMark(node.output[0], node.name),
        ]


class GemmRule:
    """Gemm with a constant B: A per tensor, B per output channel (axis 0 when transB=1, else 1)."""

    op_types: ClassVar[tuple[str, ...]] = ("Gemm",)

    def mark(self, node: onnx.NodeProto, index: GraphIndex) -> list[Mark]:
        a, b = node.input[0], node.input[1]
        if int_attr(node, "transA", 0) or not index.is_activation(a) or b not in index.initializers:
            return []
        axis = 0 if int_attr(node, "transB", 0) else 1
        return [ActivationMark(a, node.name, 0, "Gemm input"), WeightMark(b, node.name, axis),
                OutputMark(node.output[0], node.name)]


class MatMulRule:
    """MatMul: with a constant 2-D B (linear layer) A per tensor and B per output column (axis 1); with two
    activations (attention QK^T and softmax·V) both per tensor, marked ``attention`` so a policy can skip them."""

    op_types: ClassVar[tuple[str, ...]] = ("MatMul",)

    def mark(self, node: onnx.NodeProto, index: GraphIndex) -> list[Mark]:
        a, b = node.input[0], node.input[1]
        if not index.is_activation(a):
            return []
        if b in index.initializers and len(index.initializers[b].dims) == 2:
            return [ActivationMark(a, node.name, 0, "MatMul input"), WeightMark(b, node.name, 1),
                    OutputMark(node.output[0], node.name)]
        if index.is_activation(b):
            return [ActivationMark(a, node.name, 0, "attention MatMul input"),
                    ActivationMark(b, node.name, 1, "attention MatMul input")]
        return []


class ResidualAddRule:
    """Add of two activations where one comes straight from a Conv: mark the *other* (residual) input, which lets
    TensorRT fuse the Add into that Conv. With two Conv producers the first input (the shortcut) is marked."""

    op_types: ClassVar[tuple[str, ...]] = ("Add",)

    def mark(self, node: onnx.NodeProto, index: GraphIndex) -> list[Mark]:
        if len(node.input) != 2 or not all(index.is_activation(i) for i in node.input):
            return []
        shapes = [index.shape(i) for i in node.input]
        if shapes[0] is None or shapes[1] is None or len(shapes[0]) != 4 or shapes[0][1:] != shapes[1][1:]:
            return []  # not a residual: a broadcast (e.g. the time embedding added per channel) or unknown shapes
        ops = [index.producer_op(i) for i in node.input]
        if ops[1] in ("Conv", "ConvTranspose"):
            return [ActivationMark(node.input[0], node.name, 0, "residual Add input")]
        if ops[0] in ("Conv", "ConvTranspose"):
            return [ActivationMark(node.input[1], node.name, 1, "residual Add input")]
        return []


class SkipConcatRule:
    """A skip-connection Concat (channel axis, two or more activations) feeding a Conv: each branch is marked,
    so the shortcut split can give every branch its own scale."""

    op_types: ClassVar[tuple[str, ...]] = ("Concat",)

    def mark(self, node: onnx.NodeProto, index: GraphIndex) -> list[Mark]:
        if not is_skip_concat(node, index):
            return []
        return [ActivationMark(t, node.name, i, "skip Concat branch") for i, t in enumerate(node.input)]


RULES: dict[str, QDQRule] = {}
for _rule in (ConvRule(), GemmRule(), MatMulRule(), ResidualAddRule(), SkipConcatRule()):
    for _op in _rule.op_types:
        RULES[_op] = _rule


def mark_graph(model: onnx.ModelProto) -> list[Mark]:
    """Every mark every rule makes on ``model``'s main graph, in node order."""
    from exporter.shape_info import infer_value_info

    index = GraphIndex.build(model.graph, infer_value_info(model))
    marks: list[Mark] = []
    for node in model.graph.node:
        rule = RULES.get(node.op_type)
        if rule is not None:
            marks.extend(rule.mark(node, index))
    return marks


def calibration_tensors(model: onnx.ModelProto, attention: bool = False) -> list[str]:
    """Activation tensors that a rule may quantize (inputs, residuals, skip branches, and op outputs), sorted.

    The inputs of the attention-score MatMuls (QK^T and softmax·V) are left out unless ``attention``: they are only
    quantized on request, and the softmax output is B·heads×L×L (1 GB per layer for Stable Diffusion at 64×64
    latents), which would not fit in memory when every layer is tapped at once."""
    names: set[str] = set()
    for m in mark_graph(model):
        if isinstance(m, WeightMark):
            continue
        if isinstance(m, ActivationMark) and m.reason.startswith("attention") and not attention:
            continue
        names.add(m.tensor)
    return sorted(names)
