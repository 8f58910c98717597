"""FP16 conversion of the float parts of a graph: runs on ONNX Runtime, stays close to FP32, leaves Q/DQ intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines.tensorrt.fp16_convert import PRECISION_OPS, _toposort, convert_file, convert_to_fp16


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _feeds(sess: ort.InferenceSession, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([batch if isinstance(d, str) else d for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    feeds["timestep"] = np.array([999.0, 7.0][:batch], np.float32)
    return feeds


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}


@pytest.mark.parametrize("fixture", ["tiny_work", "tiny_cond_work"])
def test_fp16_model_runs_close_to_fp32_with_fp32_io(fixture: str, request: pytest.FixtureRequest) -> None:
    work: Path = request.getfixturevalue(fixture)
    model = onnx.load(work / "model.onnx")
    before = model.SerializeToString()
    fp16, report = convert_to_fp16(model)
    assert model.SerializeToString() == before, "the input model must not be modified"
    onnx.checker.check_model(fp16)
    assert [(i.name, i.type.tensor_type.elem_type) for i in fp16.graph.input] == \
        [(i.name, TensorProto.FLOAT) for i in model.graph.input]
    assert [o.type.tensor_type.elem_type for o in fp16.graph.output] == [TensorProto.FLOAT]
    # most of the float work is FP16 now: weights stored as FP16, convolutions/matmuls compute in FP16
    types = _elem_types(fp16)
    norm_inputs = {i for n in fp16.graph.node if n.op_type in PRECISION_OPS for i in n.input}
    weights = [i for i in fp16.graph.initializer if i.name.endswith(".weight") and i.name not in norm_inputs]
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights)
    # normalization and Resize compute in FP32 (a strongly typed network computes them in their input's type)
    kept = [n for n in fp16.graph.node if n.op_type in PRECISION_OPS]
    assert kept and all(types.get(n.output[0], TensorProto.FLOAT) == TensorProto.FLOAT for n in kept)
    convs = [n for n in fp16.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert convs and all(types.get(n.output[0]) == TensorProto.FLOAT16 for n in convs)
    # the sinusoidal time-step embedding stays FP32, as diffusers computes it
    sincos = [n for n in fp16.graph.node if n.op_type in ("Sin", "Cos")]
    assert sincos and all(types[n.output[0]] == TensorProto.FLOAT for n in sincos)
    assert report.fp16_nodes > 10 * report.fp32_nodes and report.initializers_fp16 >= len(weights)
    s32, s16 = _session(model), _session(fp16)
    feeds = _feeds(s32)
    ref, out = s32.run(None, feeds)[0], s16.run(None, feeds)[0]
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert _rel_error(ref, out) < 5e-3


def _add_qdq(source: onnx.ModelProto, act_scale: float = 4.0 / 127) -> onnx.ModelProto:
    """TensorRT-style Q/DQ on every Conv: per-tensor INT8 activations, per-channel INT8 weights (axis 0)."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    new_nodes = []
    for node in list(g.node):
        if node.op_type != "Conv" or node.input[1] not in inits:
            continue
        x, w_name = node.input[0], node.input[1]
        tag = node.output[0].replace("/", "_")
        g.initializer.extend([numpy_helper.from_array(np.array(act_scale, np.float32), f"{tag}_xs"),
                              numpy_helper.from_array(np.array(0, np.int8), f"{tag}_xz")])
        new_nodes += [helper.make_node("QuantizeLinear", [x, f"{tag}_xs", f"{tag}_xz"], [f"{tag}_xq"], name=f"{tag}_Q"),
                      helper.make_node("DequantizeLinear", [f"{tag}_xq", f"{tag}_xs", f"{tag}_xz"], [f"{tag}_xdq"],
                                       name=f"{tag}_DQ")]
        w = numpy_helper.to_array(inits[w_name])
        scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127
        scale[scale == 0] = 1.0
        wq = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
        g.initializer.extend([numpy_helper.from_array(wq, f"{tag}_wq"),
                              numpy_helper.from_array(scale.astype(np.float32), f"{tag}_ws"),
                              numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"{tag}_wz")])
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_wq", f"{tag}_ws", f"{tag}_wz"], [f"{tag}_wdq"],
                                          name=f"{tag}_wDQ", axis=0))
        node.input[0], node.input[1] = f"{tag}_xdq", f"{tag}_wdq"
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    _toposort(g)
    return model


def test_qdq_nodes_and_quantized_convs_left_intact(tiny_work: Path) -> None:
    qdq = _add_qdq(onnx.load(tiny_work / "model.onnx"))
    onnx.checker.check_model(qdq)
    fp16, _ = convert_to_fp16(qdq)
    onnx.checker.check_model(fp16)

    def by_name(m: onnx.ModelProto, ops: tuple[str, ...]) -> dict[str, bytes]:
        return {n.name: n.SerializeToString() for n in m.graph.node if n.op_type in ops}

    qdq_ops = ("QuantizeLinear", "DequantizeLinear")
    assert by_name(fp16, qdq_ops) == by_name(qdq, qdq_ops) and len(by_name(qdq, qdq_ops)) == 3 * 25
    assert by_name(fp16, ("Conv",)) == by_name(qdq, ("Conv",))  # the quantized convolutions read the DQ outputs
    scales = {i.name: i for i in qdq.graph.initializer if i.name.endswith(("_xs", "_ws", "_xz", "_wz", "_wq"))}
    after = {i.name: i for i in fp16.graph.initializer}
    assert all(after[k].SerializeToString() == v.SerializeToString() for k, v in scales.items())
    assert {after[k].data_type for k in scales if k.endswith(("_xs", "_ws"))} == {TensorProto.FLOAT}
    # the float parts between the quantized convolutions are FP16
    types = _elem_types(fp16)
    norms = [n for n in fp16.graph.node if n.op_type == "InstanceNormalization"]
    assert norms and all(types[n.output[0]] == TensorProto.FLOAT for n in norms)  # statistics in FP32
    adds = [n for n in fp16.graph.node if n.op_type == "Add" and not n.name.endswith("Cast")]
    assert sum(types.get(n.output[0]) == TensorProto.FLOAT16 for n in adds) > len(adds) // 2
    # FP16 rounding moves some values across an INT8 rounding boundary at the next Q node (one step = 1/127 of the
    # range): the difference is of the order of the quantization error itself, not of FP16's 1e-3.
    s32, s_qdq, s16 = _session(onnx.load(tiny_work / "model.onnx")), _session(qdq), _session(fp16)
    feeds = _feeds(s_qdq)
    ref, q32, q16 = (s.run(None, feeds)[0] for s in (s32, s_qdq, s16))
    quant_error = float(np.linalg.norm(q32 - ref) / np.linalg.norm(ref))
    fp16_error = float(np.linalg.norm(q16 - q32) / np.linalg.norm(q32))
    assert fp16_error < 1.5 * quant_error and fp16_error < 0.1


def test_convert_file_round_trip(tiny_work: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.fp16.onnx"
    report = convert_file(tiny_work / "model.onnx", out)
    assert report.casts >= 2 and report.clipped_values == 0
    assert report.to_json()["fp16_nodes"] == report.fp16_nodes
    model = onnx.load(out)
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert not (tmp_path / "model.fp16.onnx.data").exists()


def test_large_values_are_clipped_not_inf() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    big = numpy_helper.from_array(np.array([1e6, -2.0], np.float32), "big")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "big"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                              "g", [x], [y], [big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    fp16, report = convert_to_fp16(model, keep_fp32_inputs=())
    assert report.clipped_values == 1 and report.casts == 2
    out = _session(fp16).run(None, {"x": np.array([1.0, 1.0], np.float32)})[0]
    assert out.dtype == np.float32 and np.isfinite(out).all() and out[0] == np.float16(65504)


def test_the_quantize_stage_output_for_tensorrt(tiny_work: Path, tmp_path: Path) -> None:
    """``calibrate`` + ``quantize --target tensorrt`` then FP16: Q/DQ untouched, runs on ORT, close to the INT8 graph."""
    import shutil

    from tests.conftest import run_cli

    work = tmp_path / "w"
    work.mkdir()
    for name in ("export.json", "model.onnx"):
        shutil.copy(tiny_work / name, work / name)
    assert run_cli("calibrate", work, "--samples", "8", "--steps", "5") == 0
    assert run_cli("quantize", work, "--target", "tensorrt") == 0
    qdq = onnx.load(work / "model.int8.trt.onnx")
    fp16, report = convert_to_fp16(qdq)
    onnx.checker.check_model(fp16)
    qdq_ops = ("QuantizeLinear", "DequantizeLinear")
    nodes = {n.name: n.SerializeToString() for n in qdq.graph.node if n.op_type in qdq_ops}
    assert nodes and nodes == {n.name: n.SerializeToString() for n in fp16.graph.node if n.op_type in qdq_ops}
    assert report.fp32_nodes >= len(nodes) and report.fp16_nodes > 0
    s_qdq, s16, s32 = _session(qdq), _session(fp16), _session(onnx.load(work / "model.onnx"))
    feeds = _feeds(s_qdq)
    q32, q16, f32 = (s.run(None, feeds)[0] for s in (s_qdq, s16, s32))
    # FP16 activations move some values across INT8 code boundaries: the FP16 graph is as far from the INT8 graph
    # as the INT8 graph is from FP32 (relative L2 0.044 and 0.051 on a 2-core Xeon with AMX, 2026-12-03), never more
    def rel_l2(ref: np.ndarray, out: np.ndarray) -> float:
        return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))

    assert q16.dtype == np.float32 and rel_l2(q32, q16) < 0.08
    assert rel_l2(f32, q16) < 1.5 * rel_l2(f32, q32)


def test_blocked_int4_matmul_computes_in_fp16_w4a16() -> None:
    """TensorRT's INT4 weight-only GEMM takes FP16 activations: FP16 block scales, the MatMul in FP16."""
    from tests.engines.tensorrt.test_graph import int4_matmul_model

    model = int4_matmul_model(k=128, n=8, block=64)
    fp16, report = convert_to_fp16(model, keep_fp32_inputs=())
    onnx.checker.check_model(fp16)
    inits = {i.name: i for i in fp16.graph.initializer}
    assert inits["w_scale"].data_type == TensorProto.FLOAT16
    assert inits["w_q"].SerializeToString() == model.graph.initializer[0].SerializeToString()  # codes unchanged
    types = _elem_types(fp16)
    assert types["w"] == TensorProto.FLOAT16 and types["y__fp16"] == TensorProto.FLOAT16
    assert report.int4_fp16_matmuls == 1 and report.to_json()["int4_fp16_matmuls"] == 1
    x = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
    ref, out = (_session(m).run(None, {"x": x})[0] for m in (model, fp16))
    assert out.dtype == np.float32 and _rel_error(ref, out) < 5e-3
    # a block scale FP16 cannot hold keeps that weight and its MatMul in FP32
    tiny = int4_matmul_model(k=128, n=8, block=64)
    scale = next(i for i in tiny.graph.initializer if i.name == "w_scale")
    scale.CopyFrom(numpy_helper.from_array(np.full((2, 8), 1e-9, np.float32), "w_scale"))
    kept, report = convert_to_fp16(tiny, keep_fp32_inputs=())
    assert report.int4_fp16_matmuls == 0
    assert next(i for i in kept.graph.initializer if i.name == "w_scale").data_type == TensorProto.FLOAT
