"""SmoothQuant graph rewrite: the FP32 function is unchanged, the smoothed tensors are flatter, and the scale sits
on the input-channel axis (weights K x N for MatMul, N x K for Gemm transB=1)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibrators.ranges import CalibrationSettings, TensorRanges
from calibrators.settings import AggregationConfig, EstimatorConfig
from common.errors import UserError
from quantization.smoothquant import SmoothQuantConfig, smooth_graph, smoothed_ranges, smoothing_scales

C, L, N, B = 6, 5, 7, 3  # channels, tokens, linear outputs (N != C so a scale on the wrong axis cannot fit)


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def tiny_model(seed: int = 0) -> onnx.ModelProto:
    """x (B,C,L) -> GroupNorm-style affine Mul/Add (C,1) -> Transpose -> h (B,L,C) read by two MatMuls (shared
    input, like to_q/to_k); q -> Gemm-free path: Relu -> r read by a MatMul and by a float Sigmoid (no fold
    possible: explicit Mul); k (B,L,N) flattened -> Gemm transB=1 (N -> N) -> Gemm transB=0 whose input comes
    straight from the first Gemm (fold into its weight and bias)."""
    rng = np.random.default_rng(seed)
    channel_gain = np.array([1, 40, 0.5, 8, 1, 20], np.float32).reshape(C, 1)  # outlier channels
    inits = [
        numpy_helper.from_array(channel_gain * rng.uniform(0.5, 1.5, (C, 1)).astype(np.float32), "gamma"),
        _init(rng, "beta", (C, 1)), _init(rng, "wq", (C, N)), _init(rng, "wk", (C, N)), _init(rng, "wr", (N, C)),
        _init(rng, "g1", (N, N)), _init(rng, "b1", (N,)), _init(rng, "g2", (N, C)), _init(rng, "b2", (C,)),
        numpy_helper.from_array(np.array([-1, N], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "gamma"], ["xg"], name="gn_mul"),
        helper.make_node("Add", ["xg", "beta"], ["xb"], name="gn_add"),
        helper.make_node("Transpose", ["xb"], ["h"], name="tr", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["h", "wq"], ["q"], name="to_q"),
        helper.make_node("MatMul", ["h", "wk"], ["k"], name="to_k"),
        helper.make_node("Relu", ["q"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "wr"], ["rr"], name="lin_r"),
        helper.make_node("Sigmoid", ["r"], ["rs"], name="float_reader"),
        helper.make_node("Reshape", ["k", "flat"], ["kf"], name="flatten"),
        helper.make_node("Gemm", ["kf", "g1", "b1"], ["y1"], name="gemm1", transB=1),
        helper.make_node("Gemm", ["y1", "g2", "b2"], ["y2"], name="gemm2"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", C, L])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o, shape in
                               (("rr", ["b", L, C]), ("rs", ["b", L, N]), ("y2", ["m", C]))],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


LINEARS = ("to_q", "to_k", "lin_r", "gemm1", "gemm2")


def run(model: onnx.ModelProto, x: np.ndarray, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in extra:
        m.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"x": x}), strict=True))


def channel_amax(model: onnx.ModelProto, x: np.ndarray, tensors: tuple[str, ...]) -> dict[str, np.ndarray]:
    outs = run(model, x, tensors)
    return {t: np.abs(outs[t]).reshape(-1, outs[t].shape[-1]).max(axis=0).astype(np.float64) for t in tensors}


@pytest.fixture(scope="module")
def smoothed() -> tuple[onnx.ModelProto, onnx.ModelProto, np.ndarray, list]:  # type: ignore[type-arg]
    model = tiny_model()
    x = np.random.default_rng(1).standard_normal((B, C, L)).astype(np.float32)
    stats = channel_amax(model, x, ("h", "r", "kf", "y1"))
    out, items = smooth_graph(model, stats, LINEARS, SmoothQuantConfig(alpha=0.8))
    return model, out, x, items


def test_smoothed_graph_computes_the_same_function(smoothed) -> None:  # type: ignore[no-untyped-def]
    model, out, _, _ = smoothed
    onnx.checker.check_model(out)
    x = np.random.default_rng(7).standard_normal((4, C, L)).astype(np.float32) * 3  # not the calibration data
    ref, got = run(model, x), run(out, x)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5 * float(np.abs(ref[name]).max()))


def test_each_input_is_folded_where_the_graph_allows(smoothed) -> None:  # type: ignore[no-untyped-def]
    _, out, _, items = smoothed
    by_tensor = {i.tensor: i for i in items}
    assert set(by_tensor) == {"h", "r", "kf", "y1"}
    assert by_tensor["h"].folded_into == "gn_mul" and by_tensor["h"].quantized == "h"  # through Transpose and Add
    assert set(by_tensor["h"].nodes) == {"to_q", "to_k"} and by_tensor["h"].changed == ("h", "xb")
    assert by_tensor["r"].folded_into == "" and by_tensor["r"].quantized == "r_smoothed"  # Sigmoid reads r too
    assert by_tensor["kf"].folded_into == ""  # Reshape before it: no fold
    assert by_tensor["y1"].folded_into == "gemm1"  # the preceding Gemm's weight and bias
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Mul") == 3  # gn_mul and the two explicit smoothing Muls
    sig = next(n for n in out.graph.node if n.name == "float_reader")
    assert sig.input[0] == "r"  # the float reader still sees the unsmoothed tensor


def test_smoothed_tensors_are_flatter_and_their_amax_is_exact(smoothed) -> None:  # type: ignore[no-untyped-def]
    model, out, x, items = smoothed
    before = channel_amax(model, x, tuple(i.tensor for i in items))
    after = channel_amax(out, x, tuple(i.quantized for i in items))
    for i in items:
        spread_before = before[i.tensor].max() / before[i.tensor].min()
        spread_after = after[i.quantized].max() / after[i.quantized].min()
        assert spread_after < spread_before, i.tensor
        assert after[i.quantized].max() == pytest.approx(i.amax, rel=1e-5)  # the rescaled range is the real one
        np.testing.assert_allclose(after[i.quantized], before[i.tensor] / i.scales, rtol=1e-5)


def test_scale_is_on_the_input_channel_axis() -> None:
    """MatMul weight K x N: row j times s_j; Gemm transB=1 weight N x K: column j times s_j. Scaling the other axis
    (the output channels) would change the function: the equivalence test above fails then, and this pins it."""
    model = tiny_model()
    x = np.random.default_rng(1).standard_normal((B, C, L)).astype(np.float32)
    stats = channel_amax(model, x, ("h", "kf"))
    out, items = smooth_graph(model, stats, ("to_q", "gemm1"), SmoothQuantConfig(alpha=0.5, fold=False))
    s = {i.tensor: i.scales for i in items}
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    node = {n.name: n for n in out.graph.node}
    np.testing.assert_allclose(after[node["to_q"].input[1]], before["wq"] * s["h"][:, None], rtol=1e-6)
    np.testing.assert_allclose(after[node["gemm1"].input[1]], before["g1"] * s["kf"][None, :], rtol=1e-6)


def test_scales_are_modelopts_formula() -> None:
    a = np.array([4.0, 1.0, 0.0, 1e-12, 9.0])
    w = np.array([1.0, 4.0, 2.0, 2.0, 0.0])
    s = smoothing_scales(a, w, 0.8)
    pqs = w[:2] ** 0.2 / a[:2] ** 0.8  # ModelOpt's pre_quant_scale = 1 / s
    np.testing.assert_allclose(s[:2], 1 / pqs)
    assert s[2] == 1.0 and s[3] == 1.0  # all-zero activation channels keep scale 1
    assert s[4] == pytest.approx(1e4)  # zero weight row: pre_quant_scale clamped at 1e-4
    np.testing.assert_allclose(smoothing_scales(a[:2], w[:2], 1.0), a[:2])  # alpha 1: s = max|X_j|


def test_alpha_outside_unit_interval_is_a_user_error() -> None:
    with pytest.raises(UserError, match="alpha"):
        SmoothQuantConfig(alpha=1.5)


def test_protected_tensor_blocks_a_fold() -> None:
    """A fold through the Add would change 'xg' (no longer h up to a transpose): a calibrated 'xg' forbids it."""
    model = tiny_model()
    x = np.random.default_rng(1).standard_normal((B, C, L)).astype(np.float32)
    out, items = smooth_graph(model, channel_amax(model, x, ("h",)), ("to_q", "to_k"), protected={"xg"})
    assert items[0].folded_into == "" and items[0].quantized == "h_smoothed"
    np.testing.assert_allclose(run(out, x)["rr"], run(model, x)["rr"], rtol=1e-5, atol=1e-5)


def _ranges(amax: dict[str, float], groups: bool = False) -> TensorRanges:
    settings = CalibrationSettings(method="uniform", params={}, estimator=EstimatorConfig("max"),
                                   aggregation=AggregationConfig("global"), seed=0, num_bins=2048)
    extra = {"group_bounds": [(0, 499), (500, 999)], "group_amax": {k: [v, v] for k, v in amax.items()}} \
        if groups else {}
    return TensorRanges(model_sha256="0" * 64, settings=settings, amax=amax, **extra)  # type: ignore[arg-type]


def test_smoothed_ranges_take_the_rescaled_amax(smoothed) -> None:  # type: ignore[no-untyped-def]
    _, _, _, items = smoothed
    r = smoothed_ranges(_ranges({"h": 50.0, "r": 3.0, "other": 2.0}), items)
    by_tensor = {i.tensor: i for i in items}
    assert r.amax["h"] == r.amax["xb"] == by_tensor["h"].amax
    assert r.amax["r_smoothed"] == by_tensor["r"].amax and r.amax["r"] == 3.0  # r itself still feeds a float op
    assert r.amax["other"] == 2.0
    grouped = smoothed_ranges(_ranges({"h": 50.0, "r": 3.0, "other": 2.0}, groups=True), items)
    assert grouped.amax == r.amax and grouped.group_amax["r_smoothed"] == [by_tensor["r"].amax] * 2
    assert grouped.group_amax["other"] == [2.0, 2.0]
    assert replace(r, amax={}).amax == {}



def test_smoothquant_on_a_unet_keeps_its_function_and_quantizes_the_smoothed_inputs(tiny_work, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SmoothQuant 0.8 with ModelOpt's float set and placement on the tiny UNet: the smoothed FP32 UNet equals the original (attention's
    to_q/k/v folded into the GroupNorm affine, to_out through an explicit Mul), and ``quantize`` with
    ``policy.smoothquant`` gives each smoothed linear input a Q/DQ with the rescaled amax and records it."""
    import shutil

    from calibrators.aggregation import AggregationConfig
    from calibrators.calibrate import CalibrateConfig, calibrate, generate_samples
    from calibrators.estimators import EstimatorConfig
    from calibrators.sources import SourceConfig
    from common.hashing import onnx_model_sha256
    from common.workdir import WorkDir
    from quantization.qdq_policy import DEFAULT_EXCLUDE, QDQPolicy
    from quantization.qdq_rules import calibration_tensors
    from quantization.quantize import quantize
    from quantization.smoothquant import smooth_with_samples, smoothable_linears

    work = tmp_path / "w"
    shutil.copytree(tiny_work, work, ignore=shutil.ignore_patterns("calib", "ranges.json", "*.int8.*"))
    wd = WorkDir(work)
    time_embeddings = ("*/time_embedding/*", "*/time_emb_proj/*")
    policy = QDQPolicy(target="tensorrt", shortcut="float", exclude=(*DEFAULT_EXCLUDE, *time_embeddings),
                       residual_add=False, smoothquant=0.8)
    model = onnx.load(str(wd.model))
    linears = smoothable_linears(model, policy)
    assert linears and all("time_emb" not in n for n in linears)
    cfg = CalibrateConfig(SourceConfig(method="uniform", samples=8, steps=4, every=1), EstimatorConfig("max"),
                          AggregationConfig("global"), batch_rows=2)
    ranges = calibrate(wd, cfg, calibration_tensors, progress=False)
    samples = generate_samples(wd, wd.load_export_info(), cfg, onnx_model_sha256(wd.model), progress=False)
    smoothed, _, items = smooth_with_samples(model, ranges, policy, samples, work, progress=False)
    assert {n for i in items for n in i.nodes} == set(linears)
    assert any(i.folded_into for i in items) and any(not i.folded_into for i in items)
    rng = np.random.default_rng(3)
    feeds = {"sample": rng.standard_normal((2, 1, 16, 16)).astype(np.float32),
             "timestep": np.array([10.0, 700.0], np.float32)}

    def unet(m: onnx.ModelProto) -> np.ndarray:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    ref = unet(model)
    np.testing.assert_allclose(unet(smoothed), ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    qmodel, record = quantize(model, ranges, policy, samples=samples, scratch_dir=work, progress=False)
    inits = {i.name: numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    q_scale = {n.input[0]: float(inits[n.input[1]]) for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    for i in items:
        assert q_scale[i.quantized] == pytest.approx(i.amax / 127, rel=1e-6)
    assert record.smoothquant is not None and record.smoothquant["alpha"] == 0.8
    assert [d["tensor"] for d in record.smoothquant["inputs"]] == [i.tensor for i in items]
    with pytest.raises(UserError, match="calibration samples"):
        quantize(model, ranges, policy, progress=False)


def test_policy_checks_smoothquant_alpha_and_weight_bits() -> None:
    from quantization.qdq_policy import QDQPolicy

    with pytest.raises(UserError, match="alpha"):
        QDQPolicy(smoothquant=1.2)
    with pytest.raises(UserError, match="weight-bits 8"):
        QDQPolicy(smoothquant=0.8, weight_bits=4)
    assert QDQPolicy.from_json(QDQPolicy(smoothquant=0.5).to_json()).smoothquant == 0.5
