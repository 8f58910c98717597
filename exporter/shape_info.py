"""Shape inference for ONNX models of any size (protobuf cannot serialise a model above 2 GB, which
``onnx.shape_inference.infer_shapes`` needs): large initializers are replaced by data-less stand-ins first."""

from __future__ import annotations

import onnx

SMALL = 1 << 20  # initializers below 1 MiB keep their values (shape tensors, scales)
PROTOBUF_LIMIT = 2**31 - (64 << 20)


def model_bytes(model: onnx.ModelProto) -> int:
    """Serialised size, or a number above the limit when protobuf refuses to size the message."""
    try:
        return int(model.ByteSize())
    except Exception:  # noqa: BLE001 - protobuf raises its own error types above 2 GB
        return 2**31


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers have dims and type but no values."""
    out = onnx.ModelProto()
    out.CopyFrom(model) if model_bytes(model) < PROTOBUF_LIMIT else _copy_without_graph(model, out)
    if model_bytes(model) < PROTOBUF_LIMIT:
        return out
    for init in model.graph.initializer:
        keep = onnx.TensorProto(name=init.name, data_type=init.data_type, dims=list(init.dims))
        if _nbytes(init) < SMALL:
            keep.CopyFrom(init)
        out.graph.initializer.append(keep)
    return out


def _copy_without_graph(model: onnx.ModelProto, out: onnx.ModelProto) -> None:
    out.ir_version = model.ir_version
    out.opset_import.extend(model.opset_import)
    out.producer_name = model.producer_name
    g = out.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)


def _nbytes(init: onnx.TensorProto) -> int:
    size = 1
    for d in init.dims:
        size *= d
    return size * 4


def infer_value_info(model: onnx.ModelProto, data_prop: bool = True) -> list[onnx.ValueInfoProto]:
    """Inferred value_info of every intermediate tensor, whatever the model's size."""
    inferred = onnx.shape_inference.infer_shapes(skeleton(model), data_prop=data_prop)
    return list(inferred.graph.value_info)
