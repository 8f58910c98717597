"""Graph repairs for what the dynamo ONNX exporter writes, so ONNX Runtime and TensorRT load it.

- ``drop_noop_squeezes``: PyTorch's ``x.squeeze(d)`` is a no-op when dimension ``d`` is not 1 (PixArt's
  ``hidden_states.squeeze(1)`` on a B×tokens×C tensor), but the dynamo exporter writes an ONNX ``Squeeze`` anyway,
  which ONNX Runtime's shape inference refuses ("Dimension of input 1 must be 1 instead of 16"). A Squeeze whose
  input has a known size other than 1 on every squeezed axis becomes an Identity.
- ``demote_float64``: diffusers computes RoPE tables (FLUX's ``FluxPosEmbed``) and some sin-cos position tables in
  float64; TensorRT has no float64. Every float64 tensor of the graph (initializers, ``Constant`` values, ``Cast``
  targets, value infos) becomes float32: the tables reach the graph as float32. The export check against PyTorch
  (which keeps float64) measures what that costs.
- ``name_nodes_by_scope``: dynamo names nodes ``node_linear_5``; the module path (``pkg.torch.onnx.name_scopes``
  metadata) becomes the node name, ``/inner/proj_out/MatMul`` as the legacy exporter writes it, so the families'
  keep-float patterns (``*/proj_out/*``) and sensitivity reports read the same for both exporters.
- ``fold_shape_branches``: the legacy exporter writes the same no-op squeeze as
  ``If(Shape(x)[1] == 1, Squeeze, Identity)`` when a graph has a dynamic batch; ONNX Runtime type-checks the untaken
  branch and refuses it. With ONNX shape inference first, constant folding resolves the condition and keeps the
  taken branch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DOUBLE = 11  # onnx.TensorProto.DOUBLE
FLOAT = 1  # onnx.TensorProto.FLOAT


def drop_noop_squeezes(model: Any) -> int:
    """Turn every Squeeze of a dimension whose static size is not 1 into an Identity, in place; returns how many."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    dims: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shape = vi.type.tensor_type.shape
        dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Squeeze" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        shape = dims.get(node.input[0])
        if not shape:
            continue
        axes = [int(a) % len(shape) for a in np.atleast_1d(consts[node.input[1]])]
        if all(shape[a] is not None and shape[a] != 1 for a in axes):
            node.op_type = "Identity"
            del node.input[1:]
            changed += 1
    return changed


def name_nodes_by_scope(model: Any) -> int:
    """Rename every node that carries dynamo's ``name_scopes`` metadata to ``/<module path>/<op type>`` (unique:
    ``_1``, ``_2`` ... on repeats), in place; returns how many were renamed."""
    import ast

    taken: dict[str, int] = {}
    renamed = 0
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes is None:
            continue
        try:
            modules = [s for s in ast.literal_eval(scopes)[:-1] if s]  # nested, fully qualified: "inner.proj_out"
        except (ValueError, SyntaxError):
            continue
        path = modules[-1].split(".") if modules else []
        base = "/" + "/".join([*path, node.op_type])
        count = taken.get(base, 0)
        taken[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"
        renamed += 1
    return renamed


def fold_shape_branches(path: Path, external: bool) -> int:
    """Re-fold the model at ``path`` after ONNX shape inference when it has ``If`` nodes; returns how many ``If``
    nodes went away (0: the file is left as it was)."""
    import onnx

    from exporter.onnx_export import save_model, simplify

    ifs = sum(n.op_type == "If" for n in onnx.load(str(path), load_external_data=False).graph.node)
    if not ifs:
        return 0
    inferred = path.with_name(path.stem + ".shapes.onnx")
    onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
    model = onnx.load(str(inferred), load_external_data=True)  # the .data file sits beside both
    inferred.unlink()
    producer = model.producer_name
    model = simplify(model)
    model.producer_name = producer
    left = sum(n.op_type == "If" for n in model.graph.node)
    save_model(model, path, external=external)
    return ifs - left


def demote_float64(model: Any) -> int:
    """Make every float64 tensor of ``model`` float32, in place; returns how many tensors and nodes changed."""
    import onnx

    changed = 0
    graph = model.graph
    for i, t in enumerate(graph.initializer):
        if t.data_type == DOUBLE:
            graph.initializer[i].CopyFrom(_to_float(t))
            changed += 1
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and node.op_type == "Cast" and attr.i == DOUBLE:
                attr.i = FLOAT
                changed += 1
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == DOUBLE:
                attr.t.CopyFrom(_to_float(attr.t))
                changed += 1
            elif attr.name == "dtype" and attr.type == onnx.AttributeProto.INT and attr.i == DOUBLE:
                attr.i = FLOAT
                changed += 1
    for vi in [*graph.value_info, *graph.output]:
        if vi.type.tensor_type.elem_type == DOUBLE:
            vi.type.tensor_type.elem_type = FLOAT
    return changed


def count_float64(model: Any) -> int:
    """Float64 initializers, constants and casts left in ``model`` (0 after ``demote_float64``)."""
    import onnx

    n = sum(t.data_type == DOUBLE for t in model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            n += (node.op_type == "Cast" and attr.name == "to" and attr.i == DOUBLE)
            n += (attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == DOUBLE)
    return int(n)


def _to_float(tensor: Any) -> Any:
    import onnx

    arr = onnx.numpy_helper.to_array(tensor).astype(np.float32)
    return onnx.numpy_helper.from_array(arr, tensor.name)
