"""``python -m tools quantize``: outputs, kernel report, W4A8 values, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from engines.openvino_session import CACHE_FOLDER

from common.errors import UserError
from common.workdir import WorkDir
from quantization.record import QuantizeRecord
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
    record = json.loads((work / "quantize.trt.json").read_text())
    assert record["policy"]["target"] == record["target"] == "tensorrt"
    assert record["summary"]["split_shortcut_convs"] == 4 and record["model"] == "model.int8.trt.onnx"
    assert record["activation_scales"].startswith("global")
    assert QuantizeRecord.load(work / "quantize.trt.json").to_json() == record  # the typed loader round-trips
    assert run_cli("lint", work / "model.int8.trt.onnx") == 0
    # the other target writes its own files beside it; CPU runtimes pick the onnxruntime graph
    assert run_cli("quantize", work, "--target", "onnxruntime") == 0
    assert WorkDir(work).int8_models() == {"tensorrt": work / "model.int8.trt.onnx",
                                           "onnxruntime": work / "model.int8.ort.onnx"}
    assert WorkDir(work).model_for("int8") == work / "model.int8.ort.onnx"
    # nothing half-written left behind (OpenVINO's compiled-model cache is not: --backend auto takes OpenVINO on
    # VNNI/AMX CPUs)
    assert not [p for p in work.iterdir() if p.name.startswith(".") and p.name != CACHE_FOLDER]


def test_w4a8_weights_hold_4bit_values(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--weight-bits", "4") == 0
    assert "emulated" in capsys.readouterr().out
    model = onnx.load(str(work / "model.int8.ort.onnx"))
    codes = [numpy_helper.to_array(i) for i in model.graph.initializer
             if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert codes and all(np.abs(c).max() <= 7 for c in codes)
    assert max(np.abs(c).max() for c in codes) == 7


def test_without_ranges(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "ranges.json").unlink()
    assert run_cli("quantize", work) == 2
    err = capsys.readouterr().err
    assert "ranges.json" in err and "calibrate" in err
    assert not list(work.glob("model.int8*"))


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


def test_ranges_for_another_bit_width_are_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``calibrate --bits 4`` ranges were estimated for a 4-bit grid; every graph has INT8 activations."""
    data = json.loads((work / "ranges.json").read_text())
    data["settings"]["estimator"]["bits"] = 4
    (work / "ranges.json").write_text(json.dumps(data))
    assert run_cli("quantize", work) == 2
    err = capsys.readouterr().err.strip()
    assert "4-bit grid" in err and "--bits 8" in err and len(err.splitlines()) == 1
    assert not list(work.glob("model.int8*"))


def test_legacy_work_folder_keeps_loading(work: Path) -> None:
    """A folder quantized before the file name carried the target: model.int8.onnx + quantize.json (schema 1)."""
    assert run_cli("quantize", work, "--target", "tensorrt") == 0
    (work / "model.int8.trt.onnx").rename(work / "model.int8.onnx")
    record = json.loads((work / "quantize.trt.json").read_text())
    (work / "quantize.trt.json").unlink()
    for key in ("target", "activation_scales"):
        del record[key]
    record.update(schema_version=1, model="model.int8.onnx")
    (work / "quantize.json").write_text(json.dumps(record))
    wd = WorkDir(work)
    assert wd.int8_models() == {"tensorrt": work / "model.int8.onnx"}
    assert wd.model_for("int8", "tensorrt") == work / "model.int8.onnx"
    loaded = QuantizeRecord.load(wd.quantize_record(work / "model.int8.onnx"))
    assert loaded.target == "tensorrt" and loaded.model == "model.int8.onnx"
    with pytest.raises(UserError, match="missing model.int8.ort.onnx.*--target onnxruntime"):
        wd.model_for("int8", "onnxruntime")


def test_int4_blocks_tensorrt_cannot_build_are_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--target", "tensorrt", "--weight-bits", "4", "--int4-block-size", "32") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--int4-block-size 32: TensorRT builds blocked INT4 with block sizes 64 " \
                                          "and 128 only" in err
    assert not (work / "model.int8.trt.onnx").exists()


def test_smoothquant_needs_the_calibration_samples(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("quantize", work, "--smoothquant", "0.8") == 2
    assert "--smoothquant needs the calibration samples" in capsys.readouterr().err
    assert run_cli("quantize", work, "--smoothquant", "0.8", "--weight-bits", "4") == 2
    assert "--weight-bits 8" in capsys.readouterr().err


def test_smoothquant_smooths_the_linear_inputs(tiny_calibrated: Path, tmp_path: Path) -> None:
    dest = tmp_path / "w"
    shutil.copytree(tiny_calibrated, dest, ignore=shutil.ignore_patterns("report", "*.int8.*", "quantize.json"))
    assert run_cli("quantize", dest, "--smoothquant", "0.8", "--target", "tensorrt") == 0
    record = QuantizeRecord.load(dest / "quantize.trt.json")
    assert record.policy.smoothquant == 0.8 and record.smoothquant is not None
    inputs = record.smoothquant["inputs"]
    assert inputs and all(i["amax"] > 0 for i in inputs)
    model = onnx.load(str(dest / "model.int8.trt.onnx"))
    explicit = [n for n in model.graph.node if n.name.endswith("_SmoothQuant")]
    assert len(explicit) == sum(not i["folded_into"] for i in inputs)  # the unfolded ones: a Mul before their Q/DQ
    assert run_cli("lint", dest / "model.int8.trt.onnx") == 0
    k = len(json.loads((dest / "ranges.json").read_text())["group_bounds"])
    if k:  # the default calibration records step groups: the grouped graphs are not smoothed
        assert run_cli("quantize", dest, "--smoothquant", "0.8", "--timestep-groups", k) == 2
