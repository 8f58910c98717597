"""Q/DQ insertion on a real (tiny) diffusers UNet: placement, shortcut split, targets, and bad ranges."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest

from calibrators.ranges import TensorRanges
from common.errors import UserError
from engines.ort_session import OrtSession, session_options
from exporter.shortcut_split import split_shortcuts
from quantization.qdq_insert import insert_qdq, plan_qdq
from quantization.qdq_policy import QDQPolicy
from quantization.qdq_rules import WeightMark, mark_graph
from quantization.trt_lint import lint_model


def _feeds(batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"sample": rng.standard_normal((batch, 1, 16, 16)).astype(np.float32),
            "timestep": np.array([5.0, 400.0, 990.0][:batch], np.float32)}


def _run(model: onnx.ModelProto, tmp: Path, name: str) -> np.ndarray:
    path = tmp / f"{name}.onnx"
    onnx.save(model, str(path))
    with OrtSession(path) as s:
        return s.run(_feeds())["out"]


def _load(work: Path) -> tuple[onnx.ModelProto, TensorRanges]:
    return onnx.load(str(work / "model.onnx")), TensorRanges.load(work / "ranges.json")


def _ops(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


def _skip_shortcuts(model: onnx.ModelProto) -> int:
    """Convs named conv_shortcut that read a Concat: the up-block resnets of the tiny UNet."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "Conv" and "conv_shortcut" in n.name
               and producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "Concat")


def test_split_is_exact_in_fp32(tiny_work: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_work / "model.onnx"))
    split = split_shortcuts(model)
    k = _skip_shortcuts(model)
    assert k == 4  # two up blocks with two resnets each, every one on a skip Concat
    assert _ops(split)["Conv"] == _ops(model)["Conv"] + k
    ref, got = _run(model, tmp_path, "ref"), _run(split, tmp_path, "split")
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-5


@pytest.mark.parametrize("shortcut, extra_convs", [("split", 4), ("shared", 0), ("float", 0)])
def test_tensorrt_target_placement(tiny_calibrated: Path, tmp_path: Path, shortcut: str, extra_convs: int) -> None:
    model, ranges = _load(tiny_calibrated)
    q = insert_qdq(model, ranges, QDQPolicy(target="tensorrt", shortcut=shortcut, exclude=()))
    ops = _ops(q)
    assert ops["Conv"] == _ops(model)["Conv"] + extra_convs
    weight_dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear"
                 and any(a.name == "axis" for a in n.attribute)]
    n_weights = sum(isinstance(m, WeightMark) for m in mark_graph(model))
    assert len(weight_dq) == n_weights + {"split": 4, "shared": 0, "float": -4}[shortcut]
    assert lint_model(q) == []
    # placement follows TensorRT: Q/DQ sit only in front of ops that take INT8 (weighted ops, the residual Add)
    producers = {o: n for n in q.graph.node for o in n.output}
    readers = collections.defaultdict(list)
    for n in q.graph.node:
        for i in n.input:
            readers[i].append(n)
    for n in q.graph.node:
        if n.op_type == "QuantizeLinear":
            dq = readers[n.output[0]][0]
            assert {r.op_type for r in readers[dq.output[0]]} <= {"Add", "Conv", "Gemm", "MatMul"}
    ref, got = _run(model, tmp_path, "ref"), _run(q, tmp_path, "q")
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.1
    def source(name: str) -> str:
        """Op type behind a tensor, looking through one Q -> DQ pair."""
        p = producers[name]
        if p.op_type == "DequantizeLinear":
            return "QDQ(" + producers[producers[p.input[0]].input[0]].op_type + ")"
        return p.op_type

    convs = [source(n.input[0]) for n in q.graph.node if n.op_type == "Conv" and "conv_shortcut" in n.name]
    expected = {"float": "Concat", "shared": "QDQ(Concat)", "split": "QDQ(Concat)"}[shortcut]
    assert convs.count(expected) == (0 if shortcut == "split" else 4)


def test_split_branches_have_their_own_scales(tiny_calibrated: Path) -> None:
    model, ranges = _load(tiny_calibrated)
    q = insert_qdq(model, ranges, QDQPolicy(target="tensorrt", shortcut="split"))
    producers = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    branches = sorted((n for n in q.graph.node if n.op_type == "Conv" and "/split" in n.name), key=lambda n: n.name)
    assert len(branches) == 8
    scales = [float(inits[producers[b.input[0]].input[1]]) for b in branches]
    pairs = [(scales[i], scales[i + 1]) for i in range(0, 8, 2)]
    assert all(a != b for a, b in pairs)
    for b in branches:  # each branch has its own per-channel weight DQ on axis 0
        wdq = producers[b.input[1]]
        assert wdq.op_type == "DequantizeLinear" and wdq.attribute[0].i == 0


def test_onnxruntime_target_runs_qlinearconv(tiny_calibrated: Path, tmp_path: Path) -> None:
    model, ranges = _load(tiny_calibrated)
    q = insert_qdq(model, ranges, QDQPolicy(target="onnxruntime"))
    assert lint_model(q, allow_int32_bias=True) == []
    path = tmp_path / "q.onnx"
    onnx.save(q, str(path))
    optimized = tmp_path / "optimized.onnx"
    with OrtSession(path, options=session_options(optimized_model_path=optimized)) as s:
        s.run(_feeds())
    ops = _ops(onnx.load(str(optimized)))
    producers = {o: n for n in q.graph.node for o in n.output}
    quantized_convs = sum(1 for n in q.graph.node if n.op_type == "Conv"
                          and producers.get(n.input[1]) is not None and producers[n.input[1]].op_type == "DequantizeLinear")
    assert quantized_convs == sum(1 for n in q.graph.node if n.op_type == "Conv") - 2  # conv_in/conv_out float
    assert ops["QLinearConv"] >= 0.9 * quantized_convs


def test_default_exclusions_keep_first_and_last_conv_float(tiny_calibrated: Path) -> None:
    model, ranges = _load(tiny_calibrated)
    plan = plan_qdq(model, ranges, QDQPolicy())
    assert sorted(plan.float_nodes) == ["/inner/conv_in/Conv", "/inner/conv_out/Conv"]
    assert plan_qdq(model, ranges, QDQPolicy(exclude=())).float_nodes == []


def test_missing_range_names_the_tensor(tiny_calibrated: Path) -> None:
    model, ranges = _load(tiny_calibrated)
    victim = sorted(ranges.amax)[3]
    amax = {k: v for k, v in ranges.amax.items() if k != victim}
    broken = TensorRanges(ranges.model_sha256, ranges.settings, amax)
    with pytest.raises(UserError, match=f"no amax for tensor '{victim}'"):
        plan_qdq(model, broken, QDQPolicy())


@pytest.mark.parametrize("bad", [0.0, float("nan")])
def test_unusable_range_names_the_tensor(tiny_calibrated: Path, bad: float) -> None:
    model, ranges = _load(tiny_calibrated)
    victim = sorted(ranges.amax)[0]
    with pytest.raises(UserError, match=victim.replace("/", ".").replace(".", ".")[:10]):
        TensorRanges(ranges.model_sha256, ranges.settings, {**ranges.amax, victim: bad})


def test_exclusion_pattern_warns_with_candidates(tiny_calibrated: Path) -> None:
    model, ranges = _load(tiny_calibrated)
    plan = plan_qdq(model, ranges, QDQPolicy(exclude=("*conv_inn*",)))
    assert any("conv_in" in w and "matches no node" in w for w in plan.warnings)
    plan = plan_qdq(model, ranges, QDQPolicy(exclude=("*conv_in*",)))
    assert plan.warnings == [] and any("conv_in" in n for n in plan.float_nodes)


def test_insert_qdq_is_pure(tiny_calibrated: Path) -> None:
    model, ranges = _load(tiny_calibrated)
    before = model.SerializeToString()
    insert_qdq(model, ranges, QDQPolicy(target="onnxruntime"))
    assert model.SerializeToString() == before
