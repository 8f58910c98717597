"""The TensorRT Q/DQ lint: clean graphs pass, each broken graph reports its rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from quantization.trt_lint import lint_model
from tests.conftest import run_cli


def conv_model(*, zp: int = 0, zp_type: type = np.int8, w_axis: int = 0, op: str = "Conv", opset: int = 17,
               drop_zp: bool = False, act_scales: int = 1, q_feeds_relu: bool = False,
               dq_scale: float = 0.05) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(W: int8 -> per-channel DQ) -> y, with one defect switched on by the arguments."""
    cin, cout = 4, 8
    w = np.random.default_rng(0).integers(-127, 127, (cout, cin, 3, 3) if op == "Conv" else (cin, cout, 3, 3))
    n_ch = w.shape[w_axis]
    inits = [
        nh.from_array(np.full(act_scales, 0.05, np.float32).reshape(() if act_scales == 1 else (act_scales,)), "s"),
        nh.from_array(np.array(dq_scale, np.float32), "s_dq"),
        nh.from_array(np.full(() if act_scales == 1 else (act_scales,), zp, zp_type), "z"),
        nh.from_array(w.astype(np.int8), "wq"),
        nh.from_array(np.full(n_ch, 0.01, np.float32), "ws"),
        nh.from_array(np.zeros(n_ch, np.int8), "wz"),
    ]
    q_inputs = ["x", "s"] if drop_zp else ["x", "s", "z"]
    dq_inputs = ["xq", "s_dq"] if drop_zp else ["xq", "s_dq", "z"]
    nodes = [
        h.make_node("QuantizeLinear", q_inputs, ["xq"], name="q_x", **({"axis": 1} if act_scales > 1 else {})),
        h.make_node("DequantizeLinear", dq_inputs, ["xd"], name="dq_x", **({"axis": 1} if act_scales > 1 else {})),
        h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dq_w", axis=w_axis),
        h.make_node(op, ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    outputs = [h.make_tensor_value_info("y", T.FLOAT, None)]
    if q_feeds_relu:
        nodes.append(h.make_node("Relu", ["xq"], ["r"], name="relu_on_int8"))
        outputs.append(h.make_tensor_value_info("r", T.INT8, None))
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, cin, 8, 8])], outputs, inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=8)


def rules(model: onnx.ModelProto) -> set[str]:
    return {v.rule for v in lint_model(model)}


def test_clean_graph_passes() -> None:
    assert lint_model(conv_model()) == []
    assert lint_model(conv_model(op="ConvTranspose", w_axis=1)) == []


@pytest.mark.parametrize("kwargs, rule", [
    ({"zp": 3}, "zero-point"),
    ({"zp": 128, "zp_type": np.uint8}, "dtype"),
    ({"drop_zp": True}, "dtype"),
    ({"w_axis": 1}, "axis"),
    ({"op": "ConvTranspose", "w_axis": 0}, "axis"),
    ({"opset": 11}, "opset"),
    ({"act_scales": 4}, "per-tensor-activation"),
    ({"q_feeds_relu": True}, "pair"),
    ({"dq_scale": 0.07}, "pair"),
    ({"dq_scale": -1.0}, "scale"),
])
def test_broken_graphs_are_reported(kwargs: dict, rule: str) -> None:  # type: ignore[type-arg]
    assert rule in rules(conv_model(**kwargs))


def test_dq_without_q_and_int4_without_block() -> None:
    m = conv_model()
    # make the activation DQ read the float input directly: a DQ that is neither after a Q nor on a constant
    m.graph.node[1].input[0] = "x"
    assert "pair" in rules(m)
    m = conv_model()
    zp4 = onnx.helper.make_tensor("wz", T.INT4, [8], np.zeros(8, np.int8).tolist())
    m.graph.initializer[5].CopyFrom(zp4)
    assert "opset" in rules(m)


def int4_matmul(axis: int = 0, trans_b: int = 0, k: int = 128, n: int = 8, bs: int = 64) -> onnx.ModelProto:
    """x -> MatMul/Gemm(B: INT4 K×N, blocked DequantizeLinear) -> y (weight-only INT4)."""
    w = h.make_tensor("w", T.INT4, [k, n], np.zeros(k * n, np.int8).tolist())
    scale_shape = [k // bs, n] if axis == 0 else [k, max(n // bs, 1)]
    zp = h.make_tensor("z", T.INT4, scale_shape, np.zeros(int(np.prod(scale_shape)), np.int8).tolist())
    inits = [w, nh.from_array(np.full(scale_shape, 0.01, np.float32), "s"), zp]
    nodes = [h.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"], name="dq_w", axis=axis, block_size=bs),
             h.make_node("Gemm" if trans_b else "MatMul", ["x", "wd"], ["y"], name="mm",
                         **({"transB": 1} if trans_b else {}))]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, k])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)


def test_blocked_int4_weight_rules() -> None:
    assert lint_model(int4_matmul()) == []
    assert "axis" in rules(int4_matmul(axis=1))
    assert "placement" in rules(int4_matmul(trans_b=1))


def test_tensorrt_int4_block_sizes_and_odd_n() -> None:
    """TensorRT builds INT4 blocks of 64 and 128 and rejects an odd last dimension; ONNX Runtime takes both."""
    assert lint_model(int4_matmul(bs=128)) == []
    small = lint_model(int4_matmul(k=64, bs=32))
    assert [v.rule for v in small] == ["int4-block"] and "64 or 128" in small[0].message
    odd = lint_model(int4_matmul(n=7))
    assert [v.rule for v in odd] == ["int4-block"] and "odd last dimension" in odd[0].message
    assert lint_model(int4_matmul(k=64, n=7, bs=32), allow_int32_bias=True) == []  # the onnxruntime target


def test_dq_on_shape_input() -> None:
    m = conv_model()
    m.graph.node.append(h.make_node("Reshape", ["y", "xd"], ["bad"], name="reshape"))
    assert "placement" in rules(m)


def test_cli_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(conv_model(), str(good))
    onnx.save(conv_model(zp=5), str(bad))
    assert run_cli("lint", good) == 0
    assert run_cli("lint", bad) == 1
    assert run_cli("lint", tmp_path / "missing.onnx") == 2


def test_cli_names_an_unreadable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A corrupt file or one whose external data is missing: one line naming it, exit 2."""
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(conv_model().SerializeToString()[:-7])
    assert run_cli("lint", corrupt) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot read ONNX model '{corrupt}': ") and len(err.splitlines()) == 1
    external = tmp_path / "ext.onnx"
    onnx.save_model(conv_model(), str(external), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    assert run_cli("lint", external) == 2
    assert "ext.onnx.data" in capsys.readouterr().err
