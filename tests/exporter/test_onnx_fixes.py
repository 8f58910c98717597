"""Repairs of dynamo-exported graphs on three-node models built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from exporter.onnx_fixes import count_float64, demote_float64, drop_noop_squeezes


def _squeeze_model(dim1: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, dim1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    axes = numpy_helper.from_array(np.asarray([1], np.int64), "axes")
    node = helper.make_node("Squeeze", ["x", "axes"], ["y"])
    return helper.make_model(helper.make_graph([node], "g", [x], [y], [axes]), opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_squeeze_of_a_dimension_other_than_one_becomes_identity() -> None:
    model = _squeeze_model(16)
    assert drop_noop_squeezes(model) == 1
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 16, 8)).astype(np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x)


def test_real_squeeze_is_kept() -> None:
    model = _squeeze_model(1)
    assert drop_noop_squeezes(model) == 0
    assert model.graph.node[0].op_type == "Squeeze"


def test_float64_tables_become_float32() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    freqs = numpy_helper.from_array(np.asarray([1.0, 0.5, 0.25, 0.125]), "freqs")  # float64
    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE),
             helper.make_node("Mul", ["xd", "freqs"], ["angle"]), helper.make_node("Cos", ["angle"], ["c"]),
             helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [freqs]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert count_float64(model) == 2
    assert demote_float64(model) == 2 and count_float64(model) == 0
    onnx.checker.check_model(model, full_check=True)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.arange(4, dtype=np.float32)})[0]
    np.testing.assert_allclose(got, np.cos(np.arange(4) * np.asarray([1.0, 0.5, 0.25, 0.125])), rtol=1e-6)
