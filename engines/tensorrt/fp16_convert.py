"""FP32 -> FP16 for the float parts of an ONNX graph, before a strongly typed TensorRT build.

A strongly typed network takes every precision from the graph, so "INT8 where quantized, FP16 elsewhere" has to be
written into the ONNX file. This pass does it with plain ``onnx`` (no onnxconverter-common):

* graph inputs and outputs stay FP32 (Casts at the boundary), so the engine's I/O matches ``export.json``;
* Q/DQ nodes, their FP32 scales and zero points, and every node fed by a DequantizeLinear (the quantized
  Conv/MatMul/Gemm/Add) stay FP32 and are left byte-for-byte unchanged: TensorRT then sees exactly the
  ``DQ -> op -> Q`` patterns it fuses into INT8 kernels, as in an FP32 build;
* except blocked INT4 weight-only MatMul/Gemm: TensorRT's INT4 weight-only GEMM is W4A16 (FP16 activations, as
  Model Optimizer's W4A16 format), so the blocked DequantizeLinear gets FP16 block scales (opset 21 allows them; its
  output type is its scale's) and the MatMul computes in FP16. A scale that FP16 cannot hold (below its smallest
  subnormal or above 65504) keeps that DequantizeLinear and its reader FP32;
* normalization (InstanceNormalization, GroupNormalization, LayerNormalization, BatchNormalization) and Resize stay
  FP32: in a strongly typed network a normalization layer computes in its input's type (TensorRT's
  ``INormalizationLayer::setComputePrecision``: "Strongly typed network rejects calls to this method since the
  compute precision is typically controlled by casting the input tensors"), so an FP16 input means FP16 mean and
  variance over a whole group; TensorRT's demo/Diffusion casts Resize to FP32 ("Resize needs to be run in fp32").
  Casts around them are the price. Not measured against FP16 normalization here: ONNX Runtime's CPU provider runs
  these ops in FP32 whatever the graph says (no FP16 kernels: it inserts casts itself), so a CPU run cannot tell;
* the sinusoidal time-step embedding (from the ``timestep`` input up to its Sin/Cos) stays FP32, as diffusers
  computes it (``t * freq`` for t up to 1000 loses up to a quarter radian in FP16);
* every other float node computes in FP16; FP32 initializers it reads are stored as FP16 (clipped to +-65504).

Edges between the two regions get a Cast. An FP32 node always keeps its input names: when an FP16 producer feeds
it, the producer's output is renamed ``<name>__fp16`` and a Cast writes the original name back in FP32.
"""

from __future__ import annotations

import copy
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common.protobuf import fits_protobuf

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Ops kept in FP32: no FP16 type in the ONNX spec (Range), or index/geometry work that FP16 would break ...
INDEX_OPS = frozenset({"Range", "NonMaxSuppression", "RoiAlign", "TopK", "RandomNormal", "RandomUniform",
                       "RandomNormalLike", "RandomUniformLike", "Multinomial"})
# ... and statistics over many values, or resampling, computed in the input's type (see the module docstring).
PRECISION_OPS = frozenset({"InstanceNormalization", "GroupNormalization", "LayerNormalization", "BatchNormalization",
                           "Resize"})
DEFAULT_BLOCK_OPS = INDEX_OPS | PRECISION_OPS
# Inputs typed tensor(float) by the spec whatever the data type (Resize ``scales``).
ALWAYS_FLOAT_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({2}), "Upsample": frozenset({1})}
# Ops that read only the shape of a float input: they take FP16 or FP32 as it comes, no Cast.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
# Nodes with no float input that create float values: converted like initializers (FP16 iff all readers are).
VALUE_OPS = frozenset({"Constant", "ConstantOfShape"})
# The FP32 time-step region ends after these ops (Sin/Cos included; the linear layers after them are FP16).
EMBEDDING_END_OPS = frozenset({"Sin", "Cos"})
LINEAR_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})


@dataclass(frozen=True)
class Fp16Report:
    """What the conversion did, for build logs and ``.plan.json``."""

    fp16_nodes: int
    fp32_nodes: int  # float nodes kept in FP32 (Q/DQ, quantized ops, time-step embedding, blocked ops)
    casts: int
    initializers_fp16: int
    clipped_values: int
    int4_fp16_matmuls: int = 0  # blocked INT4 weight-only MatMul/Gemm computing in FP16 (W4A16)

    def to_json(self) -> dict[str, int]:
        return {
            "fp16_nodes": self.fp16_nodes, "fp32_nodes": self.fp32_nodes, "casts": self.casts,
            "initializers_fp16": self.initializers_fp16, "clipped_values": self.clipped_values,
            "int4_fp16_matmuls": self.int4_fp16_matmuls,
        }


def convert_to_fp16(
    model: onnx.ModelProto,
    keep_fp32_inputs: Iterable[str] = ("timestep",),
    block_ops: Iterable[str] = DEFAULT_BLOCK_OPS,
) -> tuple[onnx.ModelProto, Fp16Report]:
    """A converted copy of ``model`` (the argument is not modified) and a report. See the module docstring."""
    model = copy.deepcopy(model)
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ValueError("graphs with subgraphs (If/Loop/Scan) are not supported by the FP16 conversion")
    types = _float_types(model)
    nodes = list(graph.node)
    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for n in nodes:
        for i, name in enumerate(n.input):
            if name:
                consumers[name].append((n, i))

    def is_float(name: str) -> bool:
        return types.get(name) == FLOAT

    # --- phase 1: decide which nodes stay FP32 ------------------------------------------------------------------
    initializers = {init.name: init for init in graph.initializer}
    w4a16 = _w4a16_dequantizers(nodes, consumers, initializers)
    keep = _fp32_nodes(nodes, producer, consumers, set(keep_fp32_inputs), frozenset(block_ops), w4a16)

    def needs_fp16(node: onnx.NodeProto, index: int) -> bool | None:
        """Whether ``node`` reads input ``index`` in FP16 (True), FP32 (False) or either (None)."""
        if node.op_type in SHAPE_ONLY_OPS:
            return None
        if id(node) in keep or index in ALWAYS_FLOAT_INPUTS.get(node.op_type, frozenset()):
            return False
        return True

    def readers_all_fp16(name: str) -> bool:
        wants = [needs_fp16(n, i) for n, i in consumers.get(name, [])]
        return any(w is True for w in wants) and all(w is not False for w in wants)

    value_fp16 = {
        id(n) for n in nodes
        if n.op_type in VALUE_OPS and id(n) not in keep and all(is_float(o) and readers_all_fp16(o) for o in n.output)
    }
    fp16_nodes = [n for n in nodes if id(n) not in keep and (n.op_type not in VALUE_OPS or id(n) in value_fp16)
                  and any(is_float(t) for t in [*n.input, *n.output] if t)]
    fp16_ids = {id(n) for n in fp16_nodes}

    # --- phase 2: rewrite ---------------------------------------------------------------------------------------
    graph_outputs = {o.name for o in graph.output}
    new_nodes: list[onnx.NodeProto] = []
    stats = {"casts": 0, "inits": 0, "clipped": 0}

    def add_cast(src: str, dst: str, to: int) -> None:
        new_nodes.append(helper.make_node("Cast", [src], [dst], to=to, name=f"{dst}/Cast"))
        stats["casts"] += 1

    # FP16 producers: outputs become FP16; FP32 readers (and graph outputs) get a Cast under the original name.
    for n in fp16_nodes:
        _retype_attributes(n)
        for k, out in enumerate(n.output):
            if not out or not is_float(out):
                continue
            fp32_readers = [(c, i) for c, i in consumers.get(out, []) if needs_fp16(c, i) is False]
            if out in graph_outputs or fp32_readers:
                renamed = f"{out}__fp16"
                n.output[k] = renamed
                for c, i in consumers.get(out, []):
                    if needs_fp16(c, i) is not False:
                        c.input[i] = renamed
                add_cast(renamed, out, FLOAT)

    # FP32 sources (graph inputs, FP32 nodes, initializers, constants) read by FP16 nodes.
    fp16_copies: dict[str, str] = {}
    for name in list(consumers):
        if not is_float(name) or (name in producer and id(producer[name]) in fp16_ids):
            continue
        readers = [(c, i) for c, i in consumers[name] if needs_fp16(c, i) is True]
        if not readers:
            continue
        if name in initializers and all(needs_fp16(c, i) is not False for c, i in consumers[name]):
            stats["clipped"] += _to_fp16_in_place(initializers[name])
            stats["inits"] += 1
            continue
        if name not in fp16_copies:
            target = f"{name}__to_fp16"
            if name in initializers:
                arr = numpy_helper.to_array(initializers[name])
                stats["clipped"] += int(np.count_nonzero(np.abs(arr) > FP16_MAX))
                graph.initializer.append(numpy_helper.from_array(_clip16(arr), target))
                stats["inits"] += 1
            else:
                add_cast(name, target, FLOAT16)
            fp16_copies[name] = target
        for c, i in readers:
            c.input[i] = fp16_copies[name]

    graph.node.extend(new_nodes)
    _toposort(graph)
    del graph.value_info[:]  # stale FP32 types; consumers re-infer
    fp32_float = sum(1 for n in nodes if id(n) in keep and any(is_float(t) for t in [*n.input, *n.output] if t))
    w4a16_readers = sum(len(consumers[n.output[0]]) for n in nodes if id(n) in w4a16)
    report = Fp16Report(len(fp16_nodes), fp32_float, stats["casts"], stats["inits"], stats["clipped"], w4a16_readers)
    return model, report


def convert_file(src: Path, dst: Path, **kwargs: object) -> Fp16Report:
    """Convert the ONNX file ``src`` (external data allowed) to ``dst``; weights go to ``dst.data`` when it does not
    fit one protobuf (``common/protobuf.py``)."""
    model = onnx.load(str(src), load_external_data=True)
    converted, report = convert_to_fp16(model, **kwargs)  # type: ignore[arg-type]
    large = not fits_protobuf(converted)
    data = Path(dst).name + ".data"
    onnx.save_model(converted, str(dst), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=data if large else None)
    return report


# --- helpers -------------------------------------------------------------------------------------------------------
def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor, by shape inference with the large weights' bytes set aside meanwhile."""
    set_aside: list[tuple[onnx.TensorProto, bytes]] = []
    for init in model.graph.initializer:
        if len(init.raw_data) > (1 << 20):
            set_aside.append((init, init.raw_data))
            init.ClearField("raw_data")  # inference reads dims and type only; 2 GB protobuf limit avoided
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    finally:
        for init, raw in set_aside:
            init.raw_data = raw
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for n in model.graph.node:
        for o in n.output:
            if o and o not in types:
                raise ValueError(f"cannot infer the type of tensor '{o}' (node {n.name or n.op_type})")
    return types


def _fp32_nodes(
    nodes: list[onnx.NodeProto],
    producer: dict[str, onnx.NodeProto],
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
    keep_inputs: set[str],
    block_ops: frozenset[str],
    w4a16: set[int] = frozenset(),  # type: ignore[assignment]
) -> set[int]:
    """ids of the nodes that stay FP32: Q/DQ, readers of a DQ, blocked ops, the time-step embedding; the blocked
    INT4 DequantizeLinear nodes in ``w4a16`` and their MatMul/Gemm readers do not."""
    keep = {id(n) for n in nodes if (n.op_type in QDQ_OPS and id(n) not in w4a16) or n.op_type in block_ops}
    for n in nodes:
        fed = [producer[name] for name in n.input if name in producer
               and producer[name].op_type == "DequantizeLinear"]
        if any(id(dq) not in w4a16 for dq in fed):
            keep.add(id(n))
    queue = deque(keep_inputs)
    seen: set[str] = set()
    while queue:
        tensor = queue.popleft()
        if tensor in seen:
            continue
        seen.add(tensor)
        for node, _ in consumers.get(tensor, []):
            if node.op_type in LINEAR_OPS:
                continue
            keep.add(id(node))
            if node.op_type not in EMBEDDING_END_OPS:
                queue.extend(o for o in node.output if o)
    return keep


def _w4a16_dequantizers(
    nodes: list[onnx.NodeProto],
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
    initializers: dict[str, onnx.TensorProto],
) -> set[int]:
    """ids of the blocked INT4 DequantizeLinear nodes (``block_size`` set, INT4 constant codes) read only as the
    weight (input 1) of MatMul/Gemm, whose scales FP16 holds exactly enough (every |scale| in [2^-24, 65504])."""
    out = set()
    for n in nodes:
        if n.op_type != "DequantizeLinear" or not any(a.name == "block_size" and a.i > 0 for a in n.attribute):
            continue
        codes, scale = initializers.get(n.input[0]), initializers.get(n.input[1])
        if codes is None or scale is None or codes.data_type not in (TensorProto.INT4, TensorProto.UINT4):
            continue
        readers = consumers.get(n.output[0], [])
        if not readers or any(r.op_type not in ("MatMul", "Gemm") or i != 1 for r, i in readers):
            continue
        values = np.abs(numpy_helper.to_array(scale).astype(np.float64))
        if values.size and (values.min() < 2.0 ** -24 or values.max() > FP16_MAX):
            continue
        out.add(id(n))
    return out


def _retype_attributes(node: onnx.NodeProto) -> None:
    """FP32 -> FP16 in the attributes that name or hold a float type (Cast ``to``, ConstantOfShape/Constant value)."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = FLOAT16
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
            arr = numpy_helper.to_array(attr.t)
            attr.t.CopyFrom(numpy_helper.from_array(_clip16(arr), attr.t.name))


def _clip16(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)


def _to_fp16_in_place(init: onnx.TensorProto) -> int:
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(_clip16(arr), init.name))
    return int(np.count_nonzero(np.abs(arr) > FP16_MAX))


def _toposort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` topologically (stable: ties keep their current order)."""
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producer_index = {o: k for k, n in enumerate(nodes) for o in n.output}
    waiting: dict[int, int] = {}
    readers: dict[int, list[int]] = defaultdict(list)
    for k, n in enumerate(nodes):
        deps = {producer_index[i] for i in n.input if i not in available and i in producer_index}
        waiting[k] = len(deps)
        for d in deps:
            readers[d].append(k)
    ready = deque(k for k in range(len(nodes)) if waiting[k] == 0)
    order: list[int] = []
    while ready:
        k = ready.popleft()
        order.append(k)
        for r in readers[k]:
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle after FP16 conversion")
    del graph.node[:]
    graph.node.extend(nodes[k] for k in order)
