"""Write QuantizeLinear/DequantizeLinear into an ONNX UNet: phase 1 plans (rules mark tensors, the policy filters),
phase 2 rewrites the graph with onnx-graphsurgeon. ``insert_qdq`` is pure: it returns a new model.

TensorRT's explicit-quantization conventions: symmetric INT8 with zero point 0; activations per tensor
(Q -> DQ pairs); weights stored as INT8 initializers feeding a per-channel DequantizeLinear; biases float.

The ``onnxruntime`` target differs in two exact ways that ONNX Runtime's CPU fusions need: biases are INT32 codes
through DequantizeLinear with scale s_x·s_w (QLinearConv/QGemm take them so), and activations are UINT8 with zero
point 128 — the same 255-level grid as symmetric INT8 (q_u8 = q_s8 + 128, bit-identical results), but the form its
U8S8 kernels fuse everywhere (measured: with INT8 activations a Conv whose output also feeds a residual Add or a skip
Concat stays unfused).

``format`` fp8 (``tensorrt`` target) writes the same placement in E4M3: FLOAT8E4M3FN weights and zero points, scales
amax/448 (quantization/fp8.py), opset >= 19; attention MatMuls only where head_dim % 16 == 0.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections import defaultdict
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from calibrators.ranges import TensorRanges
from common.errors import UserError
from exporter.graph_index import GraphIndex, int_attr
from quantization.qdq_policy import QDQPolicy
from exporter.shortcut_split import SplitConv, branch_output, shortcut_convs, split_conv
from quantization.qdq_rules import RULES, ActivationMark, Mark, OutputMark, WeightMark
from common.protobuf import PROTOBUF_LIMIT, model_bytes
from exporter.shape_info import infer_value_info, upgrade_opset
from quantization.weight_layers import WeightedLayer, from_matrix, int4_block_problem, to_matrix, weighted_layers
from quantization.weight_quant import block_scales, channel_scales, nearest_codes, pair_safe_scales, quantize_codes
from quantization.fp8 import (FP8_HEAD_DIM_MULTIPLE, FP8_IR_VERSION, FP8_OPSET, attention_head_dim, fp8_weight,
                              retype_fp8, symbolic_shapes)

INT4_OPSET = 21  # blocked DequantizeLinear and the INT4 type
INT4_IR_VERSION = 10
RoundedWeights = dict[str, tuple[np.ndarray, np.ndarray]]  # node -> (codes Cout×K int8, scales Cout×G), matrix form

ALL_CONSUMERS = "*"
QUANTIZED_UNIT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")


@dataclass
class QDQPlan:
    """Phase-1 result: what to quantize. activations: tensor -> consumers (node names, or ALL_CONSUMERS);
    weights: (node, weight tensor) -> per-channel axis; splits: shortcut convs to split; float_nodes: left float;
    blocked: MatMul/Gemm nodes whose weight becomes blocked INT4 (weight-only: their inputs stay float)."""

    activations: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    weights: dict[tuple[str, str], int] = field(default_factory=dict)
    splits: list[SplitConv] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    amax: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "quantized_activations": len(self.activations),
            "quantized_weights": len(self.weights) + 2 * len(self.splits),
            "split_shortcut_convs": len(self.splits),
            "float_nodes": len(self.float_nodes),
            "int4_blocked_weights": len(self.blocked),
        }

    def layers(self, model: onnx.ModelProto, policy: QDQPolicy) -> list[WeightedLayer]:
        """Every weight this plan quantizes, in matrix form with the activation it multiplies (for rounding)."""
        return weighted_layers(model, self.weights, [(s.conv, s.branches) for s in self.splits], self.activations,
                               self.amax, self.blocked, policy)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_patterns(model: onnx.ModelProto, policy: QDQPolicy) -> list[str]:
    """Warnings for exclusion patterns that match no node, with the node names they could have meant."""
    names = [n.name for n in model.graph.node]
    warnings = []
    for pattern in policy.exclude:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            near = difflib.get_close_matches(pattern.strip("*"), names, n=5, cutoff=0.4)
            warnings.append(f"--exclude '{pattern}' matches no node; did you mean: {', '.join(near) or '(none close)'}")
    for name in policy.keep_float:
        if name not in names:
            warnings.append(f"--keep-float node '{name}' does not exist")
    return warnings


def plan_qdq(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy) -> QDQPlan:
    """Phase 1: let the rules mark tensors, filter the marks by the policy, and check every range exists."""
    index = GraphIndex.build(model.graph, infer_value_info(model))
    plan = QDQPlan(warnings=_check_patterns(model, policy))
    shortcut_of = shortcut_convs(model, index)
    shapes = _attention_shapes(model, index) if policy.fp8 and policy.attention_matmul else {}
    for node in model.graph.node:
        rule = RULES.get(node.op_type)
        if rule is None:
            continue
        if _matches(node.name, policy.exclude) or node.name in policy.keep_float:
            plan.float_nodes.append(node.name)
            continue
        marks: list[Mark] = rule.mark(node, index)
        if not marks:
            continue
        if policy.blocked_int4 and node.op_type in ("MatMul", "Gemm"):
            weight = next((m for m in marks if isinstance(m, WeightMark)), None)
            trans_b = bool(int_attr(node, "transB", 0))
            problem = "" if weight is None else int4_block_problem(
                node.op_type, tuple(index.initializers[weight.tensor].dims), trans_b, policy.int4_block_size,
                tensorrt=policy.target == "tensorrt")
            if weight is not None and not problem:
                plan.blocked.add(node.name)  # weight-only INT4: no activation or output Q/DQ
                plan.weights[(weight.node, weight.tensor)] = weight.axis
                continue
            if weight is not None:
                plan.warnings.append(f"'{node.name}': {problem}; its weight stays per-channel in INT8 storage")
        if node.op_type == "Concat":
            continue  # branch marks only feed the shortcut split below (the Concat itself stays float)
        if node.name in shortcut_of:
            concat = shortcut_of[node.name]
            if policy.shortcut == "float":
                plan.float_nodes.append(node.name)
                continue
            if policy.shortcut == "split":
                plan.splits.append(SplitConv(node.name, tuple(concat.input)))
                for i, t in enumerate(concat.input):
                    plan.activations[t].add(f"{node.name}/split")
                    if policy.target == "onnxruntime":  # branch outputs: names made by split_conv
                        plan.activations[branch_output(node.output[0], i)].add(ALL_CONSUMERS)
                if policy.target == "onnxruntime":
                    plan.activations[node.output[0]].add(ALL_CONSUMERS)
                continue
        for m in marks:
            if isinstance(m, WeightMark):
                plan.weights[(m.node, m.tensor)] = m.axis
            elif isinstance(m, OutputMark):
                if policy.target == "onnxruntime":
                    plan.activations[m.tensor].add(ALL_CONSUMERS)
            elif isinstance(m, ActivationMark):
                if m.reason.startswith("attention") and not policy.attention_matmul:
                    continue
                if m.reason.startswith("attention") and policy.fp8:
                    problem = _fp8_attention_problem(node, index, shapes)
                    if problem:
                        if m.index == 0:
                            plan.warnings.append(f"'{node.name}': {problem}; this attention MatMul stays float")
                        continue
                if m.reason.startswith("residual") and (not policy.residual_add or policy.target == "onnxruntime"):
                    continue  # ONNX Runtime has no Conv+Add fusion for it: a Q/DQ there would only cost time
                plan.activations[m.tensor].add(m.node)
    graph_outputs = {o.name for o in model.graph.output}
    for tensor in list(plan.activations):
        if tensor in graph_outputs and plan.activations[tensor] == {ALL_CONSUMERS}:
            del plan.activations[tensor]  # the model output stays float
            continue
        if tensor not in ranges.amax:
            hint = " --attention-matmul" if policy.attention_matmul else ""
            raise UserError(f"ranges have no amax for tensor '{tensor}': calibrate this model again "
                            f"(python -m tools calibrate WORK{hint})")
        amax = float(ranges.amax[tensor])
        if not math.isfinite(amax) or amax <= 0:
            raise UserError(f"tensor '{tensor}' has an unusable range (amax {amax!r}); exclude its node or recalibrate")
        plan.amax[tensor] = amax
    plan.activations = dict(plan.activations)
    return plan


def _attention_shapes(model: onnx.ModelProto, index: GraphIndex) -> dict[str, tuple[object, ...]]:
    """Shapes of the attention MatMul inputs: ONNX's inference, and where it left the last dim unknown, ONNX
    Runtime's symbolic shape inference (run once, only then)."""
    inputs = {t for m in _attention_inputs(model, index) for t in m}
    known = {t: index.shape(t) for t in inputs}
    if all(s and isinstance(s[-1], int) for s in known.values()):
        return {t: s for t, s in known.items() if s}
    return {**{t: s for t, s in known.items() if s}, **symbolic_shapes(model, inputs)}


def _attention_inputs(model: onnx.ModelProto, index: GraphIndex) -> list[tuple[str, str]]:
    """(A, B) of every MatMul with two activation inputs (QK^T and softmax·V)."""
    return [(n.input[0], n.input[1]) for n in model.graph.node
            if n.op_type == "MatMul" and index.is_activation(n.input[0]) and index.is_activation(n.input[1])]


def _fp8_attention_problem(node: onnx.NodeProto, index: GraphIndex, shapes: dict[str, tuple[object, ...]]) -> str:
    """Why TensorRT would not run this attention MatMul as fused FP8 attention ("" when it would): head_dim must be
    a known multiple of 16."""
    a, b = node.input[0], node.input[1]
    head_dim = attention_head_dim(shapes.get(a), shapes.get(b), index.producer_op(a) == "Softmax")
    if head_dim is None:
        return "head_dim unknown (symbolic shape)"
    if head_dim % FP8_HEAD_DIM_MULTIPLE:
        return f"head_dim {head_dim} is not a multiple of {FP8_HEAD_DIM_MULTIPLE} (TensorRT's FP8 attention)"
    return ""


class _Rewriter:
    """Phase 2 on an onnx-graphsurgeon graph; every edit of the Q/DQ rewrite happens here."""

    def __init__(self, graph: gs.Graph, plan: QDQPlan, policy: QDQPolicy, quantize: bool = True,
                 rounded: RoundedWeights | None = None) -> None:
        self.quantize = quantize
        self.rounded = rounded or {}
        self.int4_names: set[str] = set()
        self.fp8_names: set[str] = set()  # float32/int8 placeholders stored as FLOAT8E4M3FN after export

        self.graph = graph
        self.plan = plan
        self.policy = policy
        self.nodes = {n.name: n for n in graph.nodes}
        self.tensors = graph.tensors()
        self.weight_scale: dict[str, np.ndarray] = {}  # node name -> per-channel weight scale
        self.requests: dict[str, set[str]] = {t: set(c) for t, c in plan.activations.items()}
        self._uid = 0

    def _name(self, base: str) -> str:
        self._uid += 1
        return f"{base}_{self._uid}"

    def run(self) -> None:
        for split in self.plan.splits:
            self.split_conv(split)
        self.tensors = self.graph.tensors()
        for (node_name, tensor), axis in self.plan.weights.items():
            self.quantize_weight(self.nodes[node_name], tensor, axis)
        for tensor, consumers in self.requests.items():
            self.quantize_activation(tensor, consumers)
        if self.policy.target == "onnxruntime":
            self.quantize_biases()

    def split_conv(self, split: SplitConv) -> None:
        """The shortcut split (exporter/shortcut_split.py), then each branch's weight on its own scale and each
        branch input quantized for its own convolution."""
        conv = self.nodes[split.conv]
        for node in split_conv(self.graph, conv, [self.tensors[t] for t in split.branches]):
            self.nodes[node.name] = node
            if self.quantize:
                self.quantize_weight(node, node.inputs[1].name, 0)
                branch = node.inputs[0].name
                if branch in self.requests:
                    self.requests[branch].discard(f"{conv.name}/split")
                    self.requests[branch].add(node.name)

    def quantize_weight(self, node: gs.Node, tensor: str, axis: int) -> None:
        """Replace a float weight input by integer codes -> DequantizeLinear: per channel in INT8 storage, or blocked
        INT4 for the plan's blocked MatMul/Gemm. Codes come from ``rounded`` (learned) or round-to-nearest."""
        idx = next(i for i, t in enumerate(node.inputs) if t.name == tensor)
        w = np.asarray(node.inputs[idx].values, dtype=np.float32)
        if node.name in self.plan.blocked:
            self.quantize_weight_blocked(node, idx, w)
            return
        if self.policy.fp8:
            values, scale = fp8_weight(w, axis)
            self._weight_dq(node, idx, tensor, values, scale, {"axis": axis}, "fp8", fp8=True)
            self.weight_scale[node.name] = scale
            return
        qmax = self.policy.weight_qmax(node.op)
        if node.name in self.rounded:
            trans_b = bool(node.attrs.get("transB", 0))
            codes_m, scale_m = self.rounded[node.name]
            codes = from_matrix(node.op, codes_m, w.shape, trans_b)
            scale = scale_m.reshape(-1).astype(np.float32)
        else:
            scale = channel_scales(w, axis, qmax, method=self.policy.scale_method)
            if self.policy.pair_safe(node.op) and axis == 0:
                scale = pair_safe_scales(w, scale)
            codes = quantize_codes(w, scale, axis, qmax)
        bits = 4 if qmax == 7 else 8
        self._weight_dq(node, idx, tensor, codes, scale, {"axis": axis}, f"int{bits}")
        self.weight_scale[node.name] = scale

    def quantize_weight_blocked(self, node: gs.Node, idx: int, w: np.ndarray) -> None:
        """MatMul/Gemm weight as INT4 blocks along K: stored K×N (a Gemm becomes transB=0, exactly the same
        product), DequantizeLinear(axis 0, block_size), scales (K/block)×N — the form ONNX Runtime fuses into
        MatMulNBits and TensorRT runs as INT4 weight-only GEMM."""
        trans_b = bool(node.attrs.get("transB", 0))
        tensor = node.inputs[idx].name
        if node.name in self.rounded:
            codes_m, scale_m = self.rounded[node.name]
        else:
            m = to_matrix(node.op, w, trans_b)
            scale_m = block_scales(m, self.policy.int4_block_size, 7)
            codes_m = nearest_codes(m, scale_m, 7)
        if node.op == "Gemm":
            node.attrs["transB"] = 0
        codes = np.ascontiguousarray(codes_m.T)
        scale = np.ascontiguousarray(scale_m.T.astype(np.float32))
        self._weight_dq(node, idx, tensor, codes, scale, {"axis": 0, "block_size": self.policy.int4_block_size},
                        "int4", int4=True)

    def _weight_dq(self, node: gs.Node, idx: int, tensor: str, codes: np.ndarray, scale: np.ndarray,
                   attrs: dict[str, int], tag: str, int4: bool = False, fp8: bool = False) -> None:
        q = gs.Constant(self._name(f"{tensor}_{tag}"), codes.astype(np.float32 if fp8 else np.int8))
        s = gs.Constant(self._name(f"{tensor}_scale"), scale)
        zp = gs.Constant(self._name(f"{tensor}_zero_point"), np.zeros(scale.shape, dtype=np.int8))
        if int4:  # onnx-graphsurgeon cannot export INT4: stored as int8 here, packed after export
            self.int4_names.update((q.name, zp.name))
        if fp8:  # nor FLOAT8: float32 values / int8 zeros here, re-stored as FLOAT8E4M3FN after export
            self.fp8_names.update((q.name, zp.name))
        out = gs.Variable(self._name(f"{tensor}_dequant"), dtype=np.float32, shape=list(codes.shape))
        self.graph.nodes.append(gs.Node("DequantizeLinear", name=self._name(f"{node.name}/weight_DQ"),
                                        attrs=attrs, inputs=[q, s, zp], outputs=[out]))
        node.inputs[idx] = out

    def quantize_activation(self, tensor: str, consumers: set[str]) -> None:
        """One Q on ``tensor``; a dedicated DQ for each quantized op reading it (its own node unit, as ONNX
        Runtime's fusions and TensorRT's explicit quantization expect) and one shared DQ for all float readers
        (GroupNorm, Shape, Concat, ...), so no dequantization is computed twice."""
        src = self.tensors[tensor]
        scale = np.array(self.plan.amax[tensor] / self.policy.activation_qmax, dtype=np.float32)
        s = gs.Constant(self._name(f"{tensor}_scale"), scale)
        zp_dtype = np.int8 if self.policy.fp8 else self.policy.activation_dtype
        zp = gs.Constant(self._name(f"{tensor}_zero_point"),
                         np.array(self.policy.activation_zero_point, dtype=zp_dtype))
        if self.policy.fp8:
            self.fp8_names.add(zp.name)
        every = ALL_CONSUMERS in consumers
        readers = [n for n in list(src.outputs) if every or n.name in consumers]
        if not readers:
            return
        q_out = gs.Variable(self._name(f"{tensor}_quantized"), dtype=self.policy.activation_dtype, shape=src.shape)
        self.graph.nodes.append(gs.Node("QuantizeLinear", name=self._name(f"{tensor}_Q"), inputs=[src, s, zp],
                                        outputs=[q_out]))
        shared: gs.Variable | None = None
        for reader in readers:
            if reader.op in QUANTIZED_UNIT_OPS or shared is None:
                dq_out = gs.Variable(self._name(f"{tensor}_dequantized"), dtype=np.float32, shape=src.shape)
                self.graph.nodes.append(gs.Node("DequantizeLinear", name=self._name(f"{tensor}_DQ"),
                                                inputs=[q_out, s, zp], outputs=[dq_out]))
                if reader.op not in QUANTIZED_UNIT_OPS:
                    shared = dq_out
            else:
                dq_out = shared
            for i, inp in enumerate(reader.inputs):
                if inp is src:
                    reader.inputs[i] = dq_out

    def quantize_biases(self) -> None:
        """ONNX Runtime target: Conv/Gemm biases as INT32 codes with scale s_x·s_w (what QLinearConv expects)."""
        for node in list(self.graph.nodes):
            if node.op not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.name not in self.weight_scale:
                continue
            x = node.inputs[0]
            if not x.inputs or x.inputs[0].op != "DequantizeLinear":
                continue
            bias = node.inputs[2]
            if not isinstance(bias, gs.Constant):
                continue
            s_x = float(np.asarray(x.inputs[0].inputs[1].values))
            scale = (s_x * self.weight_scale[node.name]).astype(np.float32)
            b = np.asarray(bias.values, dtype=np.float64)
            codes = np.clip(np.rint(b / scale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
            out = gs.Variable(self._name(f"{bias.name}_dequant"), dtype=np.float32, shape=list(b.shape))
            self.graph.nodes.append(gs.Node(
                "DequantizeLinear", name=self._name(f"{node.name}/bias_DQ"), attrs={"axis": 0},
                inputs=[gs.Constant(self._name(f"{bias.name}_int32"), codes),
                        gs.Constant(self._name(f"{bias.name}_scale"), scale),
                        gs.Constant(self._name(f"{bias.name}_zero_point"), np.zeros(scale.shape, np.int32))],
                outputs=[out]))
            node.inputs[2] = out


def insert_qdq(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy,
               rounded: RoundedWeights | None = None) -> onnx.ModelProto:
    """The Q/DQ model for ``model`` under ``policy`` with activation ranges from ``ranges`` (``model`` untouched);
    ``rounded``: learned weight codes by node (``quantization.weight_rounding``), else round-to-nearest."""
    return rewrite(model, plan_qdq(model, ranges, policy), policy, rounded=rounded)


def rewrite(model: onnx.ModelProto, plan: QDQPlan, policy: QDQPolicy, quantize: bool = True,
            rounded: RoundedWeights | None = None) -> onnx.ModelProto:
    """Phase 2: apply ``plan``; the result passes ``onnx.checker`` and shape inference. With blocked INT4 weights
    the model is first converted to opset 21 (the first with blocked DequantizeLinear and INT4)."""
    int4 = quantize and bool(plan.blocked)
    fp8 = quantize and policy.fp8
    if int4:
        model = upgrade_opset(model, INT4_OPSET)
    if fp8:
        model = upgrade_opset(model, FP8_OPSET)
    graph = gs.import_onnx(_with_value_info(model))
    rewriter = _Rewriter(graph, plan, policy, quantize=quantize, rounded=rounded)
    rewriter.run()
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    if rewriter.int4_names:
        _pack_int4(out.graph, rewriter.int4_names)
    if rewriter.fp8_names:
        retype_fp8(out.graph, rewriter.fp8_names)
    out.ir_version = max(model.ir_version, INT4_IR_VERSION if int4 else FP8_IR_VERSION if fp8 else 0)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.producer_name = "qdiff-trt insert_qdq"
    del out.graph.value_info[:]
    if model_bytes(out) < PROTOBUF_LIMIT:
        onnx.checker.check_model(out)
        out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    else:  # above 2 GB onnx.checker needs a file: the saved model is checked where it is written
        out.graph.value_info.extend(infer_value_info(out, data_prop=False))
    return out


def _pack_int4(graph: onnx.GraphProto, names: set[str]) -> None:
    """Re-store the initializers ``names`` (int8 holding values in [-8, 7]) as ONNX INT4, two values per byte."""
    for i, init in enumerate(graph.initializer):
        if init.name in names:
            values = numpy_helper.to_array(init).astype(ml_dtypes.int4)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(values, init.name))


def _with_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with inferred shapes of every tensor (a copy; works above 2 GB)."""
    value_info = infer_value_info(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(value_info)
    return out
