"""Blocked INT4 MatMul/Gemm weights: opset 21, MatMulNBits in ONNX Runtime, exact storage of given codes, lint."""

from __future__ import annotations

import collections
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

from calibrators.ranges import TensorRanges
from engines.ort_session import OrtSession, session_options
from quantization.qdq_insert import plan_qdq, rewrite
from quantization.qdq_policy import QDQPolicy
from quantization.trt_lint import lint_model
from quantization.weight_layers import from_matrix

FEEDS = {"sample": np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32),
         "timestep": np.array([10.0, 700.0], np.float32)}


def _plan(work: Path, policy: QDQPolicy):  # type: ignore[no-untyped-def]
    model = onnx.load(str(work / "model.onnx"))
    return model, plan_qdq(model, TensorRanges.load(work / "ranges.json"), policy)


def _run(model: onnx.ModelProto, path: Path, optimized: Path | None = None) -> np.ndarray:
    onnx.save(model, str(path))
    if optimized is not None:
        import onnxruntime as ort

        ort.InferenceSession(str(path), session_options(1, optimized), providers=["CPUExecutionProvider"])
    with OrtSession(path) as s:
        return s.run(FEEDS)["out"]


def test_int4_linear_runs_as_matmulnbits(tiny_calibrated: Path, tmp_path: Path) -> None:
    policy = QDQPolicy(target="onnxruntime", weight_bits=4, int4_scope="linear", int4_block_size=16)
    model, plan = _plan(tiny_calibrated, policy)
    assert plan.blocked and any("K is not a multiple" in w for w in plan.warnings)  # K=8 layers stay INT8
    q = rewrite(model, plan, policy)
    assert q.opset_import[0].version == 21 and q.ir_version >= 10
    int4 = [i for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT4]
    assert len(int4) == 2 * len(plan.blocked)  # codes and zero points
    blocked_inputs = {n.input[0] for n in q.graph.node if n.name in plan.blocked}
    assert not any(i.endswith("_dequantized") for i in blocked_inputs)  # weight-only: float activations
    out = _run(q, tmp_path / "q.onnx", tmp_path / "opt.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["MatMulNBits"] == len(plan.blocked)
    ref = _run(model, tmp_path / "fp32.onnx")
    assert np.abs(out - ref).max() / np.abs(ref).max() < 0.2
    convs = [numpy_helper.to_array(i) for i in q.graph.initializer
             if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert convs and max(np.abs(c).max() for c in convs) == 127  # int4-scope linear: convolutions stay 8-bit


def test_given_codes_are_stored_exactly(tiny_calibrated: Path) -> None:
    """Codes learned in matrix form come back bit-exact from the INT4 and INT8 initializers of the model."""
    policy = QDQPolicy(target="onnxruntime", weight_bits=4, int4_block_size=16)  # TensorRT takes 64/128 only
    model, plan = _plan(tiny_calibrated, policy)
    rng = np.random.default_rng(0)
    rounded = {}
    for layer in plan.layers(model, policy):
        groups = layer.w.shape[1] // layer.block_size if layer.block_size else 1
        codes = rng.integers(-layer.qmax, layer.qmax + 1, layer.w.shape).astype(np.int8)
        rounded[layer.node] = (codes, rng.uniform(0.01, 0.1, (layer.w.shape[0], groups)).astype(np.float32))
    q = rewrite(model, plan, policy, rounded=rounded)
    assert lint_model(q, allow_int32_bias=True) == []
    inits = {i.name: i for i in q.graph.initializer}
    consumers = {i: n for n in q.graph.node for i in n.input}
    checked = 0
    for dq in (n for n in q.graph.node if n.op_type == "DequantizeLinear" and "weight_DQ" in n.name):
        node = consumers[dq.output[0]]
        if node.name not in rounded:
            continue
        codes_m, scale_m = rounded[node.name]
        stored = numpy_helper.to_array(inits[dq.input[0]])
        scale = numpy_helper.to_array(inits[dq.input[1]])
        if node.name in plan.blocked:
            assert inits[dq.input[0]].data_type == onnx.TensorProto.INT4
            assert np.array_equal(stored.astype(np.int8), codes_m.T) and np.array_equal(scale, scale_m.T)
        else:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            assert np.array_equal(stored, from_matrix(node.op_type, codes_m, stored.shape, trans_b))
            assert np.array_equal(scale, scale_m.reshape(-1))
        checked += 1
    assert checked == len(rounded)
    assert ml_dtypes.int4  # the INT4 values unpack through ml_dtypes


def test_tensorrt_target_takes_only_what_tensorrt_builds() -> None:
    """--target tensorrt: block sizes 64/128 only (default 64); odd-N weights stay INT8 with a warning."""
    import pytest

    from common.errors import UserError
    from quantization.weight_layers import int4_block_problem

    assert QDQPolicy(target="tensorrt", weight_bits=4).int4_block_size == 64
    assert QDQPolicy(target="onnxruntime", weight_bits=4).int4_block_size == 32
    old_record = QDQPolicy(target="tensorrt", weight_bits=4, int4_block_size=32)  # loads (old quantize records)
    with pytest.raises(UserError, match="--int4-block-size 32: TensorRT builds blocked INT4 with block sizes 64 and "
                                        "128 only"):
        old_record.check_buildable()
    QDQPolicy(target="onnxruntime", weight_bits=4, int4_block_size=32).check_buildable()
    assert QDQPolicy(target="tensorrt", weight_bits=8, int4_block_size=32).int4_block_size == 32  # unused at 8 bits
    assert int4_block_problem("MatMul", (128, 7), False, 64, tensorrt=True).startswith("N=7 is odd")
    assert int4_block_problem("MatMul", (128, 7), False, 64) == ""
    assert int4_block_problem("Gemm", (7, 128), True, 64, tensorrt=True).startswith("N=7 is odd")  # stored K×N
    assert int4_block_problem("MatMul", (96, 8), False, 64) == "K is not a multiple of --int4-block-size 64 (K=96)"
