"""ModelOpt's INT8 diffusers recipe on our graph: its constants, which tensors take which statistic."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from calibrators.modelopt_recipe import (
    BATCH_SIZE,
    CALIB_SIZE,
    N_STEPS,
    PERCENTILE,
    linear_inputs,
    modelopt_config,
    modelopt_ranges,
)
from common.workdir import WorkDir
from quantization.qdq_rules import calibration_tensors


def test_config_is_the_readme_recipe() -> None:
    cfg = modelopt_config()
    assert (CALIB_SIZE, N_STEPS, PERCENTILE, BATCH_SIZE) == (32, 20, 1.0, 2)
    assert cfg.source.method == "uniform" and cfg.source.steps == 20 and cfg.source.keep_every == 1
    assert cfg.source.samples == 32 * 20  # 32 whole trajectories
    assert cfg.batch_rows == 2 and cfg.estimator.method == "max"
    assert cfg.aggregation.method == "min-mean" and cfg.aggregation.step_fraction == 1.0
    assert cfg.aggregation.mean_divisor == "steps"  # ModelOpt's sum over calls / total_step


def test_linear_inputs_are_the_matmul_and_gemm_activations() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("MatMul", ["y", "m"], ["z"]),
             helper.make_node("Gemm", ["z", "g"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    assert linear_inputs(helper.make_model(graph)) == {"y", "z"}


def test_ranges_take_min_mean_for_conv_inputs_and_max_for_linear(tiny_work: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(tiny_work, work, ignore=shutil.ignore_patterns("calib", "ranges.json", "*.int8.*"))
    r = modelopt_ranges(WorkDir(work), calibration_tensors, progress=False, calib_size=2, n_steps=4)
    assert "modelopt" in r.settings.params["recipe"] and r.settings.aggregation.method == "min-mean"
    linear = linear_inputs(onnx.load(str(work / "model.onnx")))
    for name, amax in r.amax.items():
        peak = max(r.step_summary[name].absmax)
        if name in linear:
            assert amax == pytest.approx(peak)  # the global abs-max
        else:
            assert amax <= peak  # a min over steps of a (scaled) mean
    assert any(r.amax[n] < max(r.step_summary[n].absmax) for n in r.amax if n not in linear)
