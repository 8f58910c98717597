"""``QDQPolicy.reduce_range`` (``quantize --reduce-range [all|pairs]``): ``all`` puts 8-bit weights in [-64, 64] at
twice the scale; ``pairs`` keeps 8-bit convolution codes whose input-channel pairs sum to at most 128 in magnitude
(MatMul/Gemm in [-64, 64]); both stored as INT8 and recorded in the policy; older records keep loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from calibrators.ranges import TensorRanges
from engines.ort_session import OrtSession
from quantization.qdq_policy import REDUCED_RANGE_QMAX, QDQPolicy
from quantization.weight_quant import PAIR_SUM_QMAX, pair_safe_scales, pair_sums
from quantization.quantize import quantize

FEEDS = {"sample": np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32),
         "timestep": np.array([10.0, 700.0], np.float32)}


def _weight_codes(model: onnx.ModelProto, ndim: int | None = None) -> list[np.ndarray]:
    """INT8 weight codes of every weight DequantizeLinear (only ``ndim``-D ones when given: 4 = Conv, 2 = MatMul)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) >= 2
            and (ndim is None or len(inits[n.input[0]].dims) == ndim)]


def _dequantized_convs(model: onnx.ModelProto) -> list[np.ndarray]:
    """code × per-channel scale of every Conv weight, in graph order."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[0]].astype(np.float64) * inits[n.input[1]].reshape(-1, 1, 1, 1) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4]


def _outputs(tmp_path: Path, models: dict[str, onnx.ModelProto]) -> dict[str, np.ndarray]:
    outs = {}
    for name, m in models.items():
        onnx.save(m, str(tmp_path / f"{name}.onnx"))
        with OrtSession(tmp_path / f"{name}.onnx") as s:
            outs[name] = s.run(FEEDS)["out"]
    return outs


def test_reduced_weights_span_seven_bits_and_keep_the_output(tiny_calibrated: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    ranges = TensorRanges.load(tiny_calibrated / "ranges.json")
    full, _ = quantize(model, ranges, QDQPolicy(target="onnxruntime"))
    reduced, record = quantize(model, ranges, QDQPolicy(target="onnxruntime", reduce_range="all"))
    full_codes, reduced_codes = _weight_codes(full), _weight_codes(reduced)
    assert len(full_codes) == len(reduced_codes) > 0
    assert max(int(np.abs(c).max()) for c in full_codes) == 127
    # every per-channel max lands on the 7-bit limit: the scale is amax / 64, not a clipped 127-grid
    assert max(int(np.abs(c).max()) for c in reduced_codes) == REDUCED_RANGE_QMAX
    assert record.policy.reduce_range == "all" and record.policy.weight_qmax("Conv") == REDUCED_RANGE_QMAX
    outs = _outputs(tmp_path, {"fp32": model, "full": full, "reduced": reduced})
    ref = outs["fp32"]
    err = {k: float(np.abs(outs[k] - ref).max() / np.abs(ref).max()) for k in ("full", "reduced")}
    assert err["reduced"] < 0.1, err  # one bit less weight precision, still the same function


def test_pair_safe_convolutions_keep_eight_bits_and_more_precision(tiny_calibrated: Path, tmp_path: Path) -> None:
    """``pairs``: no input-channel pair of convolution codes sums beyond 128 in magnitude (full-range codes do),
    convolutions still use 8-bit codes on finer scales than with every range halved, MatMul/Gemm weights are in
    [-64, 64], and the model's output stays close to FP32."""
    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    ranges = TensorRanges.load(tiny_calibrated / "ranges.json")
    graphs = {name: quantize(model, ranges, QDQPolicy(target="onnxruntime", reduce_range=mode))[0]
              for name, mode in (("full", ""), ("all", "all"), ("pairs", "pairs"))}
    full_convs, pair_convs = _weight_codes(graphs["full"], 4), _weight_codes(graphs["pairs"], 4)
    assert len(full_convs) == len(pair_convs) > 0
    assert max(int(np.abs(pair_sums(c)).max()) for c in full_convs) > PAIR_SUM_QMAX
    assert max(int(np.abs(pair_sums(c)).max()) for c in pair_convs) <= PAIR_SUM_QMAX
    assert max(int(np.abs(c).max()) for c in pair_convs) > REDUCED_RANGE_QMAX
    matmuls = _weight_codes(graphs["pairs"], 2)
    assert matmuls and max(int(np.abs(c).max()) for c in matmuls) == REDUCED_RANGE_QMAX
    float_convs = _dequantized_convs(graphs["full"])  # within half a 127-step of the float weights
    weight_err = {k: sum(float(np.square(a - b).sum()) for a, b in zip(_dequantized_convs(graphs[k]), float_convs))
                  for k in ("all", "pairs")}
    assert weight_err["pairs"] < weight_err["all"], weight_err
    outs = _outputs(tmp_path, {"fp32": model, "pairs": graphs["pairs"]})
    assert float(np.abs(outs["pairs"] - outs["fp32"]).max() / np.abs(outs["fp32"]).max()) < 0.15  # same function


def test_pair_safe_scales_leave_room_for_learned_rounding() -> None:
    """With ``slack`` 2 any floor/ceil choice per weight keeps every pair within 128; safe channels keep their
    scale."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    w[0] = 0.01 * np.sign(np.arange(6) % 2 - 0.5)[:, None, None]  # alternating signs: no pair needs a coarser scale
    amax = np.abs(w).reshape(8, -1).max(axis=1)
    scale = pair_safe_scales(w, amax / 127, slack=2)
    assert scale[0] == np.float32(amax[0] / 127) and np.all(scale >= amax / 127) and np.any(scale > amax / 127)
    x = w / scale[:, None, None, None]
    for _ in range(20):  # random floor/ceil, as AdaRound may choose
        codes = np.clip(np.floor(x) + rng.integers(0, 2, x.shape), -127, 127).astype(np.int8)
        assert np.abs(pair_sums(codes)).max() <= PAIR_SUM_QMAX


def test_old_policy_json_loads_without_the_field_and_with_a_bool() -> None:
    data = QDQPolicy(target="tensorrt").to_json()
    del data["reduce_range"]
    assert QDQPolicy.from_json(data).reduce_range == ""
    assert QDQPolicy.from_json({**data, "reduce_range": True}).reduce_range == "all"
    assert QDQPolicy.from_json({**data, "reduce_range": False}).reduce_range == ""


def test_reduce_range_flag_reaches_the_record(tiny_calibrated: Path, tmp_path: Path) -> None:
    from quantization.record import QuantizeRecord
    from tests.conftest import run_cli

    out = tmp_path / "model.int8.ort.onnx"
    assert run_cli("quantize", tiny_calibrated, "--reduce-range", "--out", out) == 0
    record = QuantizeRecord.load(next(tmp_path.glob("*.json")))
    assert record.policy.reduce_range == "all"
    assert max(int(np.abs(c).max()) for c in _weight_codes(onnx.load(str(out)))) == REDUCED_RANGE_QMAX
    assert run_cli("quantize", tiny_calibrated, "--reduce-range", "pairs", "--out", out) == 0
    assert QuantizeRecord.load(next(tmp_path.glob("*.json"))).policy.reduce_range == "pairs"


def test_unknown_reduce_range_mode_is_one_line(tiny_calibrated: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    out = tmp_path / "model.int8.ort.onnx"
    assert run_cli("quantize", tiny_calibrated, "--reduce-range", "half", "--out", out) == 2
    assert "--reduce-range" in capsys.readouterr().err and not out.exists()
