"""Weight memory counts stored bytes: INT4 packed two per byte, external data from dims."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantization.weight_memory import tensor_bytes, weight_memory


def test_bytes_by_storage_type() -> None:
    int4 = numpy_helper.from_array(np.zeros((3, 5), ml_dtypes.int4), "w4")  # 15 values -> 8 bytes
    int8 = numpy_helper.from_array(np.zeros((4, 4), np.int8), "w8")
    f32 = numpy_helper.from_array(np.zeros(10, np.float32), "s")
    i64 = numpy_helper.from_array(np.zeros(2, np.int64), "shape")
    external = onnx.TensorProto(name="ext", data_type=onnx.TensorProto.FLOAT, dims=[1000, 1000])
    assert tensor_bytes(int4) == 8 and tensor_bytes(external) == 4_000_000
    graph = helper.make_graph([], "g", [], [], [int4, int8, f32, i64])
    mem = weight_memory(helper.make_model(graph))
    assert (mem.int4, mem.int8, mem.float, mem.other, mem.total) == (8, 16, 40, 16, 80)
