"""SmoothQuant as an ONNX graph rewrite: move activation outliers of MatMul/Gemm inputs into their weights.

For a linear layer Y = X·W (X: ...×K activation, W: K×N weight), per input channel j (SmoothQuant, Xiao et al.
2023, eq. 4; NVIDIA ModelOpt ``modelopt/torch/quantization/model_calib.py`` ``smoothquant``)::

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha),   Y = (X / s) · (s ⊙ W)   (row j of W multiplied by s_j)

which is the same product in exact arithmetic but flattens X's channels before its per-tensor INT8 quantizer.
ModelOpt computes ``pre_quant_scale = 1/s`` (clamped to [1e-4, 1e4], 1 for all-zero channels), multiplies the weight
by s and sets the smoothed input's amax to ``max_j(max|X_j| / s_j)`` (``apply_pre_quant_scale_and_smooth``); its
TensorRT export writes the 1/s as a ``Mul`` before the input quantizer. Here the 1/s is folded into the op before X
where the graph allows it (the per-channel affine ``Mul``/``Add`` of a GroupNorm or LayerNorm, through
``Transpose``; or the weight and bias of a preceding MatMul/Gemm) and is otherwise an explicit ``Mul`` on X.

Departure from ModelOpt: linears that read the same X (attention's to_q/to_k/to_v) share one s, computed from the
largest weight row across them (the SmoothQuant paper's ``smooth_ln_fcs``), so that one Mul (or one fold) serves
them all; ModelOpt gives each linear its own pre_quant_scale (identical for a single reader).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from calibrators.channel_stats import channel_absmax
from calibrators.ranges import TensorRanges
from calibrators.sample import CalibSample
from common.errors import UserError
from exporter.graph_index import GraphIndex
from exporter.shape_info import infer_value_info
from quantization.qdq_policy import QDQPolicy
from quantization.qdq_rules import RULES, ActivationMark, WeightMark

DEFAULT_ALPHA = 0.8  # ModelOpt examples/diffusers README: --alpha 0.8 ("Recommendation: 0.8 for SDXL")
SCALE_CLAMP = (1e-4, 1e4)  # ModelOpt smoothquant(): scale_a.clamp(min=1e-4, max=1e4) on pre_quant_scale = 1/s
ZERO_EPS = 1.0 / (1 << 31)  # ModelOpt: channels with act amax <= 2^-31 keep pre_quant_scale 1


@dataclass(frozen=True)
class SmoothQuantConfig:
    """SmoothQuant's settings. alpha: migration strength in [0, 1] (0: s from the weights only, 1: from the
    activations only); fold: fold 1/s into the op before the activation where possible (else always a ``Mul``)."""

    alpha: float = DEFAULT_ALPHA
    fold: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--smoothquant-alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True)
class SmoothedInput:
    """One smoothed activation. tensor: the activation X the linears read before; quantized: what they read now
    (X itself when folded, else the new ``Mul`` output); nodes: the linears; scales: s, float64 (K,); amax: the
    smoothed tensor's abs-max, ``max_j(max|X_j| / s_j)``; folded_into: the node whose constants took 1/s ("" for an
    explicit Mul); changed: tensors whose values are X/s up to a transpose (their ranges become ``amax``)."""

    tensor: str
    quantized: str
    nodes: tuple[str, ...]
    scales: np.ndarray
    amax: float
    folded_into: str
    changed: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"tensor": self.tensor, "quantized": self.quantized, "nodes": list(self.nodes),
                "amax": self.amax, "folded_into": self.folded_into,
                "scale_min": float(self.scales.min()), "scale_max": float(self.scales.max())}


def smoothing_scales(act_amax: np.ndarray, weight_amax: np.ndarray, alpha: float) -> np.ndarray:
    """s (K,) from per-input-channel activation and weight abs-maxes, exactly as ModelOpt computes its inverse:
    ``pre_quant_scale = w^(1-alpha) / a^alpha``, 1 where a <= 2^-31, clamped to [1e-4, 1e4]; s = 1 / pre_quant_scale."""
    a = np.asarray(act_amax, dtype=np.float64)
    w = np.asarray(weight_amax, dtype=np.float64)
    if a.shape != w.shape:
        raise ValueError(f"activation channels {a.shape} and weight rows {w.shape} differ")
    with np.errstate(divide="ignore", invalid="ignore"):
        pqs = np.power(w, 1.0 - alpha) / np.power(a, alpha)
    pqs = np.where(a <= ZERO_EPS, 1.0, pqs)
    pqs = np.clip(np.nan_to_num(pqs, nan=1.0, posinf=SCALE_CLAMP[1]), *SCALE_CLAMP)
    return 1.0 / pqs


def weight_rows(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """The weight of MatMul/Gemm ``node`` as K×N (row j multiplies input channel j)."""
    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    return w.T if trans_b else w


class _Graph:
    """Producer/consumer maps, initializers and ranks of one graph, with new-initializer bookkeeping."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.inits = {i.name: i for i in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}
        self.rank = {v.name: len(v.type.tensor_type.shape.dim) for v in infer_value_info(model)
                     if v.type.tensor_type.HasField("shape")}
        for v in list(self.graph.input) + list(self.graph.output):
            self.rank.setdefault(v.name, len(v.type.tensor_type.shape.dim))
        self._uid = 0

    def const(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def set_input(self, node: onnx.NodeProto, index: int, value: np.ndarray, base: str) -> None:
        """Give ``node`` input ``index`` a new initializer holding ``value`` (the old one may be shared)."""
        self._uid += 1
        name = f"{base}_smoothed_{self._uid}"
        init = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        node.input[index] = name

    def drop_unused_initializers(self) -> None:
        used = {i for n in self.graph.node for i in n.input} | self.outputs
        keep = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)


def _along(c: np.ndarray, axis: int, rank: int, k: int) -> int | None:
    """Index of ``axis`` (of a rank-``rank`` tensor) in constant ``c`` under numpy broadcasting, when ``c`` can be
    divided per channel there (its size there is k or 1); else None."""
    idx = axis - (rank - c.ndim)
    if idx < 0 or c.shape[idx] not in (1, k):
        return None
    return idx


def _divide_along(c: np.ndarray, idx: int, s: np.ndarray) -> np.ndarray:
    shape = [1] * c.ndim
    shape[idx] = s.size
    return np.broadcast_to(c, np.broadcast_shapes(c.shape, tuple(shape))) / s.reshape(shape)


@dataclass
class _Fold:
    node: str
    edits: list[tuple[onnx.NodeProto, int, np.ndarray]]
    changed: list[str]


def _plan_fold(g: _Graph, x: str, s: np.ndarray, protected: set[str]) -> _Fold | None:
    """How to divide X by s in the ops before it, or None. The walk goes up through single-reader ``Transpose``
    (the channel axis follows the permutation) and ``Add`` of a constant (the constant divided, the walk continues on
    the other input) and ends at a ``Mul`` by a constant or a MatMul/Gemm with constant weight (divided per output
    channel, bias too). Every tensor it passes must have one reader and not be a graph output; a tensor it passes
    after an Add (no longer X up to a transpose) must not be in ``protected`` (its calibrated range would be stale)."""
    k = s.size
    cur, axis = x, g.rank.get(x, 0) - 1
    rank = g.rank.get(x, 0)
    edits: list[tuple[onnx.NodeProto, int, np.ndarray]] = []
    changed: list[str] = []
    equal = True  # cur is X up to a transpose
    while True:
        p = g.producer.get(cur)
        if p is None or rank < 1 or (cur != x and (len(g.consumers[cur]) != 1 or cur in g.outputs)):
            return None
        if not equal and cur in protected:
            return None
        if equal:
            changed.append(cur)
        if p.op_type == "Transpose":
            perm = next((list(a.ints) for a in p.attribute if a.name == "perm"), list(range(rank))[::-1])
            axis = perm[axis]
            cur = p.input[0]
            continue
        if p.op_type in ("Add", "Mul") and len(p.input) == 2:
            ci = next((i for i, t in enumerate(p.input) if t in g.inits), None)
            if ci is None:
                return None
            c = g.const(p.input[ci])
            assert c is not None
            idx = _along(c, axis, rank, k)
            if idx is None or g.rank.get(p.input[1 - ci], -1) != rank:
                return None
            edits.append((p, ci, _divide_along(c, idx, s)))
            if p.op_type == "Mul":
                return _Fold(p.name, edits, changed)
            cur, equal = p.input[1 - ci], False
            continue
        if p.op_type in ("MatMul", "Gemm") and len(p.input) >= 2 and p.input[1] in g.inits and axis == rank - 1:
            w = g.const(p.input[1])
            assert w is not None
            rows = weight_rows(p, w)
            if rows.ndim != 2 or rows.shape[1] != k:
                return None
            new_w = rows / s.reshape(1, -1)  # its output channel j divided by s_j
            edits.append((p, 1, new_w if rows is w else new_w.T))
            if len(p.input) > 2 and p.input[2]:
                b = g.const(p.input[2])
                if b is None or (idx := _along(b, b.ndim - 1, b.ndim, k)) is None:
                    return None
                edits.append((p, 2, _divide_along(b, idx, s)))
            return _Fold(p.name, edits, changed)
        return None


def smooth_graph(model: onnx.ModelProto, channel_amax: Mapping[str, np.ndarray], nodes: Iterable[str],
                 config: SmoothQuantConfig = SmoothQuantConfig(), protected: Iterable[str] = (),
                 ) -> tuple[onnx.ModelProto, list[SmoothedInput]]:
    """A copy of ``model`` with the MatMul/Gemm ``nodes`` smoothed (``model`` untouched).

    channel_amax: activation tensor -> (K,) per-input-channel abs-max (calibrators.channel_stats); a node whose
    activation has no entry, or whose weight is not a constant 2-D initializer, is left as it is. protected: tensors
    whose calibrated ranges must stay valid (a fold that would change one of them, other than X itself up to a
    transpose, falls back to an explicit Mul). Returns the model and one ``SmoothedInput`` per smoothed activation."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out)
    wanted = set(nodes)
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.graph.node:
        if n.name in wanted and n.op_type in ("MatMul", "Gemm") and n.input[0] in channel_amax \
                and len(n.input) > 1 and n.input[1] in g.inits and len(g.inits[n.input[1]].dims) == 2 \
                and not any(a.name == "transA" and a.i for a in n.attribute):
            readers[n.input[0]].append(n)
    protected = set(protected)
    result: list[SmoothedInput] = []
    for x, linears in readers.items():
        a = np.asarray(channel_amax[x], dtype=np.float64)
        raw = [g.const(n.input[1]) for n in linears]
        ws = [weight_rows(n, w) for n, w in zip(linears, raw, strict=True)]  # type: ignore[arg-type]
        if any(w.shape[0] != a.size for w in ws):
            raise UserError(f"per-channel statistics of '{x}' have {a.size} channels, but its linears take "
                            f"{sorted({w.shape[0] for w in ws})}: calibrate this model again")
        w_amax = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
        s = smoothing_scales(a, w_amax, config.alpha)
        for n, w, w0 in zip(linears, ws, raw, strict=True):
            scaled = w * s.reshape(-1, 1)  # row j (input channel j) times s_j
            g.set_input(n, 1, scaled if w is w0 else scaled.T, n.input[1])
        only_linears = {id(c) for c in g.consumers[x]} == {id(n) for n in linears} and x not in g.outputs
        fold = _plan_fold(g, x, s, protected - {x}) if config.fold and only_linears else None
        if fold is not None:
            for node, index, value in fold.edits:
                g.set_input(node, index, value, node.input[index])
            quantized, changed, folded = x, tuple(fold.changed), fold.node
        else:
            quantized = f"{x}_smoothed"
            inv = numpy_helper.from_array((1.0 / s).astype(np.float32), f"{x}_smoothquant_inv_scale")
            g.graph.initializer.append(inv)
            mul = onnx.helper.make_node("Mul", [x, inv.name], [quantized], name=f"{x}_SmoothQuant")
            first = min(list(g.graph.node).index(n) for n in linears)
            g.graph.node.insert(first, mul)
            for n in linears:
                n.input[0] = quantized
            ids = {id(n) for n in linears}  # keep the maps true for the folds of later inputs
            g.consumers[x] = [c for c in g.consumers[x] if id(c) not in ids] + [g.graph.node[first]]
            g.consumers[quantized] = list(linears)
            g.producer[quantized] = g.graph.node[first]
            changed, folded = (quantized,), ""
        result.append(SmoothedInput(x, quantized, tuple(n.name for n in linears), s, float(np.max(a / s)), folded,
                                    changed))
    g.drop_unused_initializers()
    return out, result


def smoothed_ranges(ranges: TensorRanges, smoothed: Iterable[SmoothedInput]) -> TensorRanges:
    """``ranges`` for the smoothed graph: every tensor that now holds X/s (up to a transpose) takes the smoothed
    abs-max ``max_j(max|X_j| / s_j)`` (ModelOpt's rescaled input amax). The per-channel statistics are global, so
    with time-step groups those tensors take the same amax in every group (``quantize_groups`` refuses SmoothQuant:
    only the global graph is smoothed)."""
    amax = dict(ranges.amax)
    group_amax = dict(ranges.group_amax)
    for item in smoothed:
        for name in item.changed:
            amax[name] = item.amax
            if ranges.group_bounds:
                group_amax[name] = [item.amax] * len(ranges.group_bounds)
    return replace(ranges, amax=amax, group_amax=group_amax)


def smoothable_linears(model: onnx.ModelProto, policy: QDQPolicy) -> list[str]:
    """MatMul/Gemm nodes ``policy`` quantizes with an INT8 weight and a quantized activation input: the layers
    SmoothQuant applies to (ModelOpt smooths quantized linears with 8-bit input and weight quantizers only; the
    attention-score MatMuls have no weight and are never smoothed). Empty for ``weight_bits`` 4 (weight-only INT4)."""
    if policy.weight_bits != 8:
        return []
    index = GraphIndex.build(model.graph, infer_value_info(model))
    names = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.name in policy.keep_float or \
                any(fnmatch.fnmatchcase(node.name, p) for p in policy.exclude):
            continue
        marks = RULES[node.op_type].mark(node, index)
        if any(isinstance(m, WeightMark) for m in marks) and any(isinstance(m, ActivationMark) for m in marks):
            names.append(node.name)
    return names


def smooth_for_quantize(model: onnx.ModelProto, ranges: TensorRanges, channel_amax: Mapping[str, np.ndarray],
                        policy: QDQPolicy, config: SmoothQuantConfig = SmoothQuantConfig(),
                        ) -> tuple[onnx.ModelProto, TensorRanges, list[SmoothedInput]]:
    """SmoothQuant before ``quantize``: the smoothed model, the ranges that go with it and what was smoothed.
    Every linear ``policy`` quantizes is smoothed; folds never touch a tensor ``ranges`` calibrated (other than the
    smoothed input itself). ``quantize(model, ranges, policy)`` on the result places the input Q/DQ after the
    smoothing (on the explicit Mul's output, or on the folded tensor)."""
    smoothed_model, items = smooth_graph(model, channel_amax, smoothable_linears(model, policy), config,
                                         protected=set(ranges.amax))
    return smoothed_model, smoothed_ranges(ranges, items), items


def smooth_with_samples(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy,
                        samples: list[CalibSample], scratch_dir: Path, progress: bool = True,
                        ) -> tuple[onnx.ModelProto, TensorRanges, list[SmoothedInput]]:
    """``smooth_for_quantize`` with ``policy.smoothquant`` as alpha and the per-channel abs-max of the smoothed
    linears' inputs taken on ``samples`` (what ``quantize`` runs for ``--smoothquant``)."""
    linears = set(smoothable_linears(model, policy))
    tensors = sorted({n.input[0] for n in model.graph.node if n.name in linears})
    stats = channel_absmax(model, scratch_dir, samples, tensors, progress=progress)
    return smooth_for_quantize(model, ranges, stats, policy, SmoothQuantConfig(policy.smoothquant))
