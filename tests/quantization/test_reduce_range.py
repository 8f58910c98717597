"""``QDQPolicy.reduce_range`` (``quantize --reduce-range``): 8-bit weights in [-64, 64] at twice the scale, stored as
INT8, recorded in the policy; records written before the field existed keep loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from calibrators.ranges import TensorRanges
from engines.ort_session import OrtSession
from quantization.qdq_policy import REDUCED_RANGE_QMAX, QDQPolicy
from quantization.quantize import quantize

FEEDS = {"sample": np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32),
         "timestep": np.array([10.0, 700.0], np.float32)}


def _weight_codes(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {i.name: i for i in model.graph.initializer}
    return [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) >= 2]


def test_reduced_weights_span_seven_bits_and_keep_the_output(tiny_calibrated: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    ranges = TensorRanges.load(tiny_calibrated / "ranges.json")
    full, _ = quantize(model, ranges, QDQPolicy(target="onnxruntime"))
    reduced, record = quantize(model, ranges, QDQPolicy(target="onnxruntime", reduce_range=True))
    full_codes, reduced_codes = _weight_codes(full), _weight_codes(reduced)
    assert len(full_codes) == len(reduced_codes) > 0
    assert max(int(np.abs(c).max()) for c in full_codes) == 127
    # every per-channel max lands on the 7-bit limit: the scale is amax / 64, not a clipped 127-grid
    assert max(int(np.abs(c).max()) for c in reduced_codes) == REDUCED_RANGE_QMAX
    assert record.policy.reduce_range and record.policy.container_qmax == REDUCED_RANGE_QMAX
    outs = {}
    for name, m in (("fp32", model), ("full", full), ("reduced", reduced)):
        onnx.save(m, str(tmp_path / f"{name}.onnx"))
        with OrtSession(tmp_path / f"{name}.onnx") as s:
            outs[name] = s.run(FEEDS)["out"]
    ref = outs["fp32"]
    err = {k: float(np.abs(outs[k] - ref).max() / np.abs(ref).max()) for k in ("full", "reduced")}
    assert err["reduced"] < 0.1, err  # one bit less weight precision, still the same function


def test_old_policy_json_loads_without_the_field() -> None:
    data = QDQPolicy(target="tensorrt").to_json()
    del data["reduce_range"]
    assert QDQPolicy.from_json(data).reduce_range is False


def test_reduce_range_flag_reaches_the_record(tiny_calibrated: Path, tmp_path: Path) -> None:
    from quantization.record import QuantizeRecord
    from tests.conftest import run_cli

    out = tmp_path / "model.int8.ort.onnx"
    assert run_cli("quantize", tiny_calibrated, "--reduce-range", "--out", out) == 0
    record = QuantizeRecord.load(next(tmp_path.glob("*.json")))
    assert record.policy.reduce_range
    assert max(int(np.abs(c).max()) for c in _weight_codes(onnx.load(str(out)))) == REDUCED_RANGE_QMAX
