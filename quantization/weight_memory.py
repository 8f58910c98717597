"""Weight memory of a model: bytes of its initializers by storage type (INT4 packed two per byte)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8,
         onnx.TensorProto.FLOAT8E4M3FN: 8,
         onnx.TensorProto.FLOAT16: 16, onnx.TensorProto.BFLOAT16: 16, onnx.TensorProto.INT32: 32,
         onnx.TensorProto.FLOAT: 32, onnx.TensorProto.INT64: 64, onnx.TensorProto.DOUBLE: 64}


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Stored size of an initializer from its type and dims (external data included, never read)."""
    n = 1
    for d in t.dims:
        n *= int(d)
    bits = _BITS.get(t.data_type, 8 * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize)
    return (n * bits + 7) // 8


@dataclass(frozen=True)
class WeightMemory:
    """Initializer bytes of a model: int4 (packed), int8, int32 (ONNX Runtime biases), float (float32/16 weights,
    scales, biases), other (shape constants), fp8 (FLOAT8E4M3FN weights and zero points)."""

    int4: int
    int8: int
    int32: int
    float: int
    other: int
    fp8: int = 0

    @property
    def total(self) -> int:
        return self.int4 + self.int8 + self.int32 + self.float + self.other + self.fp8

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "int4": self.int4, "int8": self.int8, "int32": self.int32, "float": self.float,
                "other": self.other, "fp8": self.fp8}


def weight_memory(model: onnx.ModelProto) -> WeightMemory:
    """Bytes of every initializer of ``model``'s main graph, by storage type."""
    acc = {"int4": 0, "int8": 0, "int32": 0, "float": 0, "other": 0, "fp8": 0}
    T = onnx.TensorProto
    kinds = {T.INT4: "int4", T.UINT4: "int4", T.INT8: "int8", T.UINT8: "int8", T.INT32: "int32",
             T.FLOAT: "float", T.FLOAT16: "float", T.BFLOAT16: "float", T.FLOAT8E4M3FN: "fp8"}
    for t in model.graph.initializer:
        acc[kinds.get(t.data_type, "other")] += tensor_bytes(t)
    return WeightMemory(**acc)
