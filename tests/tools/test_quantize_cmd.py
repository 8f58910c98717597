"""``python -m tools quantize``: outputs, kernel report, W4A8 values, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import run_cli


@pytest.fixture()
def work(tiny_calibrated: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "w"
    shutil.copytree(tiny_calibrated, dest, ignore=shutil.ignore_patterns("calib", "report", "*.int8.*",
                                                                         "quantize.json"))
    return dest


def test_quantize_writes_model_and_record(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--target", "tensorrt") == 0
    out = capsys.readouterr().out
    assert "real INT8 kernels" in out
    record = json.loads((work / "quantize.json").read_text())
    assert record["policy"]["target"] == "tensorrt" and record["summary"]["split_shortcut_convs"] == 4
    assert run_cli("lint", work / "model.int8.onnx") == 0
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def test_w4a8_weights_hold_4bit_values(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--weight-bits", "4") == 0
    assert "emulated" in capsys.readouterr().out
    model = onnx.load(str(work / "model.int8.onnx"))
    codes = [numpy_helper.to_array(i) for i in model.graph.initializer
             if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert codes and all(np.abs(c).max() <= 7 for c in codes)
    assert max(np.abs(c).max() for c in codes) == 7


def test_without_ranges(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "ranges.json").unlink()
    assert run_cli("quantize", work) == 2
    err = capsys.readouterr().err
    assert "ranges.json" in err and "calibrate" in err
    assert not (work / "model.int8.onnx").exists()


def test_corrupt_ranges(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "ranges.json").write_text("{ not json")
    assert run_cli("quantize", work) == 2
    assert "ranges.json" in capsys.readouterr().err


def test_nan_range_names_the_tensor(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads((work / "ranges.json").read_text())
    victim = sorted(data["amax"])[0]
    data["amax"][victim] = 0.0
    (work / "ranges.json").write_text(json.dumps(data))
    assert run_cli("quantize", work) == 2
    assert victim in capsys.readouterr().err


def test_unknown_exclusion_warns(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--exclude", "*conv_ot*") == 0
    out = capsys.readouterr().out
    assert "matches no node" in out and "conv_out" in out
