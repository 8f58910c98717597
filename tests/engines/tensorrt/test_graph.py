"""What a TensorRT version can build: INT4 refused below 10, quantized ConvTranspose back to float for 8.x."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from common.errors import UserError
from engines.tensorrt.graph import check_for_tensorrt, float_conv_transpose, int4_tensors


def int4_matmul_model(k: int = 128, n: int = 8, block: int = 64) -> onnx.ModelProto:
    """x (1×K) @ DequantizeLinear(INT4 K×N weight, block ``block`` along K) at opset 21."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-8, 8, (k, n)).tolist()
    weight = helper.make_tensor("w_q", TensorProto.INT4, [k, n], [c for row in codes for c in row])
    zero = helper.make_tensor("w_zp", TensorProto.INT4, [k // block, n], [0] * (k // block * n))
    scale = numpy_helper.from_array(np.full((k // block, n), 0.01, np.float32), "w_scale")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=0, block_size=block,
                              name="w_dq"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")]
    graph = helper.make_graph(nodes, "int4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [weight, zero, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def test_int4_is_refused_below_tensorrt_10_in_one_line() -> None:
    model = int4_matmul_model()
    assert sorted(int4_tensors(model)) == ["w_q", "w_zp"]
    with pytest.raises(UserError, match="TensorRT 8.x has no INT4 .*--weight-bits 8 --target tensorrt") as err:
        check_for_tensorrt(model, 8, "model.int8.onnx")
    assert "\n" not in str(err.value) and "model.int8.onnx" in str(err.value)
    check_for_tensorrt(model, 10)
    check_for_tensorrt(deconv_model(), 8)  # INT8 only: fine on 8.x


def deconv_model() -> onnx.ModelProto:
    """x -> Q/DQ (per tensor) -> ConvTranspose with INT8 weights per output channel (axis 1) -> y."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)  # Cin × Cout × kH × kW
    scale = (np.abs(w).max(axis=(0, 2, 3)) / 127).astype(np.float32)
    codes = np.clip(np.rint(w / scale[None, :, None, None]), -127, 127).astype(np.int8)
    inits = [numpy_helper.from_array(codes, "w_q"), numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "x_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_q"),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=1, name="w_dq"),
             helper.make_node("ConvTranspose", ["x_dq", "w"], ["y"], strides=[2, 2], name="up")]
    graph = helper.make_graph(nodes, "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_quantized_conv_transpose_runs_in_float_for_tensorrt_8() -> None:
    import onnxruntime as ort

    model = deconv_model()
    floated, names = float_conv_transpose(model)
    assert names == ["up"]
    assert [n.op_type for n in floated.graph.node] == ["ConvTranspose"]
    assert {i.name for i in floated.graph.initializer} == {"w__float"}
    onnx.checker.check_model(floated)
    codes = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float32)
    scale = numpy_helper.to_array(model.graph.initializer[1])
    weight = numpy_helper.to_array(floated.graph.initializer[0])
    np.testing.assert_array_equal(weight, codes * scale[None, :, None, None])
    weight = weight.copy()  # writable, for torch.from_numpy
    x = np.random.default_rng(2).standard_normal((1, 3, 4, 4)).astype(np.float32)
    run = ort.InferenceSession(floated.SerializeToString(), providers=["CPUExecutionProvider"]).run
    import torch  # the input is no longer quantized: the float layer reads x itself

    expected = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight), stride=2).numpy()
    np.testing.assert_allclose(run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    assert float_conv_transpose(floated)[1] == []  # nothing left to change
