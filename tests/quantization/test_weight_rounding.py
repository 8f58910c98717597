"""AdaRound over a whole (tiny) UNet from its calibration set: deterministic, better than nearest, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantization.adaround import AdaRoundConfig
from calibrators.calibrate import cached_samples_for
from calibrators.ranges import TensorRanges
from quantization.weight_rounding import RoundingConfig, learn_rounding
from quantization.qdq_insert import plan_qdq
from quantization.qdq_policy import QDQPolicy
from tests.conftest import run_cli


def _samples(work: Path, ranges: TensorRanges) -> list:  # type: ignore[type-arg]
    samples = cached_samples_for(work / "calib", ranges)
    assert samples
    return samples


def test_learn_rounding_is_deterministic_and_improves(tiny_calibrated: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_calibrated / "model.onnx"))
    ranges = TensorRanges.load(tiny_calibrated / "ranges.json")
    policy = QDQPolicy(target="onnxruntime", weight_bits=4, weight_rounding="adaround", int4_block_size=16)
    plan = plan_qdq(model, ranges, policy)
    cfg = RoundingConfig(samples=8, rows_per_sample=8, adaround=AdaRoundConfig(iters=60, seed=1))
    samples = _samples(tiny_calibrated, ranges)
    a, report = learn_rounding(model, plan, policy, samples, cfg, tmp_path, progress=False)
    b, _ = learn_rounding(model, plan, policy, samples, cfg, tmp_path, progress=False)
    assert a.keys() == b.keys() and all(np.array_equal(a[k][0], b[k][0]) for k in a)
    assert report["layers"] == len(a) == len(plan.layers(model, policy))
    assert report["layers_improved"] > report["layers"] // 2 and report["median_mse_ratio"] < 1.0
    # learned codes are kept only where they beat nearest on the captured rows
    assert all((r["mse_learned"] < r["mse_nearest"]) != r["kept_nearest"] for r in report["per_layer"])


@pytest.fixture()
def work(tiny_calibrated: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "w"
    shutil.copytree(tiny_calibrated, dest, ignore=shutil.ignore_patterns("report", "*.int8.*", "quantize*.json"))
    return dest


def test_quantize_adaround_cli(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--shortcut", "split", "--exclude", "*/conv_in/*", "*/conv_out/*", "--weight-bits", "4", "--int4-block-size", "16", "--weight-rounding", "adaround",
                   "--rounding-iters", "30", "--rounding-samples", "4") == 0
    out = capsys.readouterr().out
    assert "AdaRound-learned rounding" in out and "MatMulNBits" in out and "weight memory" in out
    record = json.loads((work / "quantize.ort.json").read_text())
    assert record["weight_rounding"]["samples_used"] == 4 and record["weight_rounding"]["seconds_total"] > 0
    memory = record["weight_memory_bytes"]
    assert memory["quantized"]["int4"] > 0 and memory["quantized"]["total"] < memory["source"]["total"] / 3


def test_adaround_without_calibration_samples(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(work / "calib")
    assert run_cli("quantize", work, "--weight-rounding", "adaround") == 2
    err = capsys.readouterr().err
    assert "calib" in err and "calibrate" in err and len(err.strip().splitlines()) == 1
    assert not list(work.glob("model.int8*"))
