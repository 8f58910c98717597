"""FP8 (E4M3) Q/DQ graphs: standard ONNX only, FLOAT8E4M3FN zero points, ONNX Runtime against an ml_dtypes reference,
the attention head_dim rule, and the policy's refusals."""

from __future__ import annotations

import collections
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibrators.aggregation import AggregationConfig
from calibrators.estimators import EstimatorConfig
from calibrators.ranges import CalibrationSettings, TensorRanges
from common.errors import UserError
from engines.ort_session import OrtSession
from quantization.fp8 import fake_quantize, fp8_weight, to_e4m3
from quantization.qdq_insert import insert_qdq, plan_qdq
from quantization.qdq_policy import QDQPolicy
from quantization.record import QuantizeRecord
from quantization.trt_lint import lint_model

FP8 = QDQPolicy(target="tensorrt", format="fp8")


def _ranges(amax: dict[str, float]) -> TensorRanges:
    settings = CalibrationSettings(method="uniform", params={}, estimator=EstimatorConfig("max"),
                                   aggregation=AggregationConfig("global"), seed=0, num_bins=2048)
    return TensorRanges(model_sha256="0" * 64, settings=settings, amax=amax)


def _attention_model(d: int, seed: int = 0) -> onnx.ModelProto:
    """x (2×4×d) -> linear (d×d) -> single-head self-attention softmax(q·kᵀ)·v with q = k = v = the linear output."""
    w = np.random.default_rng(seed).standard_normal((d, d)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="linear"),
             helper.make_node("Transpose", ["h"], ["kt"], name="transpose", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "kt"], ["scores"], name="qk"),
             helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["probs", "h"], ["out"], name="pv")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, d])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4, d])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _linear_model(d: int) -> onnx.ModelProto:
    """The first node of ``_attention_model`` alone: h = x @ w."""
    model = _attention_model(d)
    del model.graph.node[1:]
    model.graph.output[0].name = "h"
    return model


def _run(model: onnx.ModelProto, path: Path, feeds: dict[str, np.ndarray], output: str = "out") -> np.ndarray:
    onnx.save(model, str(path))
    with OrtSession(path) as s:
        return s.run(feeds)[output]


def test_fp8_graph_is_standard_onnx_with_e4m3_zero_points(tiny_calibrated: Path) -> None:
    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    q = insert_qdq(model, TensorRanges.load(tiny_calibrated / "ranges.json"), FP8)
    assert {n.domain for n in q.graph.node} <= {"", "ai.onnx"}  # no custom-domain op (ModelOpt's trt::TRT_FP8*)
    assert max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 19 and q.ir_version >= 9
    inits = {i.name: i for i in q.graph.initializer}
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zp = inits[node.input[2]]
        assert zp.data_type == TensorProto.FLOAT8E4M3FN and not numpy_helper.to_array(zp).astype(np.float32).any()
        scale = numpy_helper.to_array(inits[node.input[1]])
        if node.op_type == "QuantizeLinear":
            assert scale.size == 1  # activations per tensor
    weights = [inits[n.input[0]] for n in qdq if n.input[0] in inits]
    assert weights and all(w.data_type == TensorProto.FLOAT8E4M3FN for w in weights)
    assert not any(i.data_type in (TensorProto.INT8, TensorProto.UINT8) for i in q.graph.initializer)
    assert lint_model(q) == []


def test_fp8_places_like_int8(tiny_calibrated: Path) -> None:
    """Same rules, same marks: the FP8 plan quantizes exactly the tensors and weights the INT8 one does."""
    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    ranges = TensorRanges.load(tiny_calibrated / "ranges.json")
    int8 = plan_qdq(model, ranges, QDQPolicy(target="tensorrt"))
    fp8 = plan_qdq(model, ranges, FP8)
    assert fp8.activations == int8.activations and fp8.weights == int8.weights
    assert [s.conv for s in fp8.splits] == [s.conv for s in int8.splits] and fp8.splits


def test_ort_runs_fp8_qdq_as_the_ml_dtypes_reference(tmp_path: Path) -> None:
    """ONNX Runtime's FP8 Q/DQ around a linear layer equals E4M3 rounding done with ml_dtypes (saturation at ±448
    included: amax is set below the data's maximum so some inputs clip)."""
    d = 16
    model = _linear_model(d)
    x = (3 * np.random.default_rng(1).standard_normal((2, 4, d))).astype(np.float32)
    amax = float(np.abs(x).max()) * 0.5
    q = insert_qdq(model, _ranges({"x": amax}), FP8)
    got = _run(q, tmp_path / "q.onnx", {"x": x}, "h")
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    values, scale = fp8_weight(w, axis=1)
    x_dq = fake_quantize(x, amax / 448.0)
    assert np.abs(x_dq).max() == pytest.approx(amax, rel=1e-6)  # clipped, not NaN
    ref = x_dq @ (values * scale[None, :])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.abs(got - x @ w).max() > 1e-3  # and the quantization is really there


def test_e4m3_rounding_and_saturation() -> None:
    vals = to_e4m3(np.array([0.0, 1.0625, 1.1875, 500.0, -1e6, 17.0], np.float32)).astype(np.float32)
    # 1.0625 lies halfway between 1.0 and 1.125: ties to even (1.0); 1.1875 halfway to 1.25: even is 1.25
    np.testing.assert_array_equal(vals, [0.0, 1.0, 1.25, 448.0, -448.0, 16.0])
    assert to_e4m3(np.array([448.0], np.float32)).dtype == ml_dtypes.float8_e4m3fn


@pytest.mark.parametrize("d, quantized", [(16, True), (8, False)])
def test_fp8_attention_needs_head_dim_multiple_of_16(d: int, quantized: bool) -> None:
    model = _attention_model(d)
    ranges = _ranges({"x": 3.0, "h": 5.0, "kt": 5.0, "probs": 1.0})
    plan = plan_qdq(model, ranges, QDQPolicy(target="tensorrt", format="fp8", attention_matmul=True))
    attention = {t for t, readers in plan.activations.items() if readers & {"qk", "pv"}}
    assert attention == ({"h", "kt", "probs"} if quantized else set())
    assert any("head_dim 8 is not a multiple of 16" in w for w in plan.warnings) is not quantized
    int8 = plan_qdq(model, ranges, QDQPolicy(target="tensorrt", attention_matmul=True))
    assert {t for t, r in int8.activations.items() if r & {"qk", "pv"}} == {"h", "kt", "probs"}  # INT8: no rule


@pytest.mark.parametrize("kwargs, match", [
    ({"format": "fp8", "weight_bits": 4}, "--weight-bits 4 is INT8-only"),
    ({"format": "fp8", "target": "onnxruntime"}, "use --target tensorrt"),
    ({"format": "fp4"}, "unknown --format 'fp4'"),
    ({"format": "fp8", "weight_rounding": "adaround"}, "--weight-rounding adaround is INT8-only"),
    ({"format": "fp8", "reduce_range": "pairs"}, "--reduce-range"),
])
def test_policy_refuses_int8_only_choices(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(UserError, match=match):
        QDQPolicy(**{"target": "tensorrt", **kwargs})


def test_old_records_load_as_int8_and_fp8_round_trips() -> None:
    data = QDQPolicy().to_json()
    del data["format"]  # a record written before the field
    assert QDQPolicy.from_json(data).format == "int8"
    assert QDQPolicy.from_json(FP8.to_json()) == FP8


def test_fp8_record_counts_fp8_weight_memory(tiny_calibrated: Path) -> None:
    from quantization.quantize import quantize

    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    qmodel, record = quantize(model, TensorRanges.load(tiny_calibrated / "ranges.json"), FP8, progress=False)
    assert record.policy.format == "fp8" and QuantizeRecord.from_json(
        {**record.to_json(), "model": "m", "model_sha256": "0"}).policy.format == "fp8"
    memory = record.weight_memory_bytes["quantized"]
    assert memory["fp8"] > 0 and memory["int8"] == 0
    assert any("FP8" in line for line in record.kernels)
    ops = collections.Counter(n.op_type for n in qmodel.graph.node)
    assert record.op_counts["QuantizeLinear"] == ops["QuantizeLinear"]


def _retyped_zero_point(model: onnx.ModelProto, dtype: int) -> onnx.ModelProto:
    """``model`` with the zero point of its first activation QuantizeLinear/DequantizeLinear pair changed to ``dtype``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    q = next(n for n in out.graph.node if n.op_type == "QuantizeLinear")
    for i, init in enumerate(out.graph.initializer):
        if init.name == q.input[2]:
            value = np.zeros((), helper.tensor_dtype_to_np_dtype(dtype))
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
    return out


def test_lint_catches_int8_zero_point_and_old_opset_in_fp8_graph() -> None:
    model = _attention_model(16)
    q = insert_qdq(model, _ranges({"x": 3.0, "h": 5.0, "kt": 5.0, "probs": 1.0}),
                   QDQPolicy(target="tensorrt", format="fp8", attention_matmul=True))
    assert lint_model(q) == []
    mixed = lint_model(_retyped_zero_point(q, TensorProto.INT8))
    assert [v.rule for v in mixed if v.rule == "fp8"] == ["fp8", "fp8"]  # its Q and its DQ
    assert "INT8 in an FP8 graph" in str(next(v for v in mixed if v.rule == "fp8"))
    old = onnx.ModelProto()
    old.CopyFrom(q)
    old.opset_import[0].version = 17
    assert any(v.rule == "fp8" and "opset 17 < 19" in v.message for v in lint_model(old))


def test_fp8_notes_name_each_fused_op_and_its_tensorrt_release() -> None:
    from quantization.trt_lint import fp8_notes

    q = insert_qdq(_attention_model(16), _ranges({"x": 3.0, "h": 5.0, "kt": 5.0, "probs": 1.0}),
                   QDQPolicy(target="tensorrt", format="fp8", attention_matmul=True))
    notes = fp8_notes(q)
    assert len(notes) == 2 and notes[0].startswith("FP8 MatMul nodes: 1") and "10.6" in notes[0]
    assert notes[1].startswith("FP8 attention nodes: 2") and "head_dim a multiple of 16" in notes[1]
    assert fp8_notes(_attention_model(16)) == []


def test_max_ranges_take_the_largest_step_absmax_per_tensor_and_group() -> None:
    from calibrators.ranges import StepSummary
    from quantization.fp8 import max_ranges

    base = _ranges({"a": 1.0, "b": 2.0})
    ranges = TensorRanges(base.model_sha256, base.settings, {"a": 1.0, "b": 2.0},
                          group_bounds=[(0, 499), (500, 999)], group_amax={"a": [0.5, 1.0], "b": [2.0, 2.0]},
                          step_summary={"a": StepSummary([10, 600, 900], [0.7, 3.0, 2.5])})
    out = max_ranges(ranges)
    assert out.amax == {"a": 3.0, "b": 2.0}  # b has no per-step summary: its amax stays
    assert out.group_amax == {"a": [0.7, 3.0], "b": [2.0, 2.0]}
    assert ranges.amax["a"] == 1.0  # the input is untouched


def test_head_dim_from_symbolic_shapes_when_onnx_leaves_it_unknown() -> None:
    """A Reshape whose target shape is computed at run time (Shape -> Reshape), as exported attention does, and a
    dynamic batch: the head_dim is still found (ONNX Runtime's symbolic inference where ONNX's gives up)."""
    from quantization.fp8 import symbolic_shapes

    d = 16
    model = _attention_model(d)
    graph = model.graph
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"  # a dynamic batch, as exported
    shape = [helper.make_node("Shape", ["h"], ["h_shape"], name="shape"),
             helper.make_node("Reshape", ["h", "h_shape"], ["h2"], name="reshape")]
    for node in graph.node:
        if node.name in ("qk", "pv", "transpose"):
            node.input[:] = ["h2" if i == "h" else i for i in node.input]
    graph.node.insert(1, shape[0])
    graph.node.insert(2, shape[1])
    got = symbolic_shapes(model, {"h2", "probs"})
    assert got["h2"][-1] == d and got["probs"][-1] == 4
    plan = plan_qdq(model, _ranges({"x": 3.0, "h2": 5.0, "kt": 5.0, "probs": 1.0}),
                    QDQPolicy(target="tensorrt", format="fp8", attention_matmul=True))
    assert not any("head_dim" in w for w in plan.warnings) and {"h2", "kt", "probs"} <= set(plan.activations)
