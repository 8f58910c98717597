"""Shape inference for ONNX models of any size (protobuf cannot serialise a model above 2 GB, which
``onnx.shape_inference.infer_shapes`` needs): large initializers are replaced by data-less stand-ins first."""

from __future__ import annotations

import onnx

from common.protobuf import PROTOBUF_LIMIT, model_bytes

SMALL = 1 << 20  # initializers below 1 MiB keep their values (shape tensors, scales)


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself when it can be serialised; else a copy whose large initializers have dims and type only."""
    if model_bytes(model) < PROTOBUF_LIMIT:
        return model
    out = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    out.opset_import.extend(model.opset_import)
    graph = out.graph
    graph.name = model.graph.name
    for field in ("node", "input", "output", "value_info"):
        getattr(graph, field).extend(getattr(model.graph, field))
    for init in model.graph.initializer:
        if _nbytes(init) < SMALL:
            graph.initializer.append(init)
        else:
            graph.initializer.append(onnx.TensorProto(name=init.name, data_type=init.data_type, dims=list(init.dims)))
    return out


def _nbytes(init: onnx.TensorProto) -> int:
    size = 1
    for d in init.dims:
        size *= d
    return size * 4


def infer_value_info(model: onnx.ModelProto, data_prop: bool = True) -> list[onnx.ValueInfoProto]:
    """Inferred value_info of every intermediate tensor, whatever the model's size."""
    inferred = onnx.shape_inference.infer_shapes(skeleton(model), data_prop=data_prop)
    return list(inferred.graph.value_info)


def upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` converted to default-domain ``opset`` by ONNX's version converter (a copy; ``model`` itself when
    it is already there). Above 2 GB the converter runs on the skeleton and the initializers are put back."""
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if current >= opset:
        return model
    from onnx import version_converter

    small = model_bytes(model) < PROTOBUF_LIMIT
    converted = version_converter.convert_version(model if small else skeleton(model), opset)
    if not small:
        originals = {i.name: i for i in model.graph.initializer}
        kept = [originals.get(i.name, i) for i in converted.graph.initializer]
        del converted.graph.initializer[:]
        converted.graph.initializer.extend(kept)
    return converted
