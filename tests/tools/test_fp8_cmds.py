"""FP8 through the command line: quantize --format fp8 -> lint -> sample / validate / sensitivity / report
--precision fp8 on the CPU (simulated on ONNX Runtime), the build checks, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from engines.tensorrt.plan import fp8_unsupported
from quantization.record import QuantizeRecord
from tests.conftest import run_cli

FAST = ["--steps", "4", "--points", "2", "--num", "2"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def fp8_work(tiny_calibrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("fp8") / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("calib", "report", "*.int8.*", "quantize*"))
    assert run_cli("quantize", work, "--format", "fp8") == 0
    return work


def test_quantize_format_fp8_writes_the_trt_graph_and_its_record(fp8_work: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    record = QuantizeRecord.load(fp8_work / "quantize.fp8.trt.json")
    assert record.model == "model.fp8.trt.onnx" and record.policy.format == "fp8" and record.target == "tensorrt"
    model = onnx.load(str(fp8_work / "model.fp8.trt.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT8E4M3FN for i in model.graph.initializer)
    assert not (fp8_work / "model.int8.trt.onnx").exists() and not (fp8_work / "model.int8.ort.onnx").exists()
    capsys.readouterr()
    assert run_cli("lint", fp8_work / "model.fp8.trt.onnx") == 0
    out = capsys.readouterr().out
    assert "FP8 Conv nodes:" in out and "passes TensorRT's Q/DQ rules" in out


def test_sample_validate_report_fp8_on_the_cpu(fp8_work: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fp8.png"
    assert run_cli("sample", fp8_work, "--precision", "fp8", "--steps", "3", "--num", "2", "--out", out) == 0
    printed = capsys.readouterr().out
    assert printed.count("FP8 is simulated on ONNX Runtime") == 1 and "model.fp8.trt.onnx" in printed
    assert out.is_file()
    assert run_cli("validate", fp8_work, "--precision", "fp8", *FAST, "--images", "2", "--min-psnr", "-1",
                   "--min-cosine", "0.9", "--min-snr", "-1") == 0
    report = json.loads((fp8_work / "report" / "validate.fp8.json").read_text())
    assert report["quantized_model"] == "model.fp8.trt.onnx" and report["settings"]["precision"] == "fp8"
    assert min(s["cosine"] for s in report["steps"]) > 0.9
    assert "FP8 is simulated" in capsys.readouterr().out
    assert run_cli("report", fp8_work, "--precision", "fp8", "--no-latency") == 0
    page = (fp8_work / "report" / "fp8.html").read_text()
    assert "FP32 vs FP8 (simulated on the CPU)" in page and "format=fp8" in page


def test_sensitivity_fp8_ranks_the_fp8_graph_and_keep_float_uses_it(fp8_work: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(fp8_work, work)
    assert run_cli("sensitivity", work, "--precision", "fp8", *FAST) == 0
    ranking = json.loads((work / "report" / "sensitivity.fp8.json").read_text())
    assert ranking["policy"]["format"] == "fp8" and ranking["layers"]
    assert run_cli("quantize", work, "--format", "fp8", "--keep-float", "2") == 0
    record = QuantizeRecord.load(work / "quantize.fp8.trt.json")
    assert record.kept_float_by_sensitivity == [layer["node"] for layer in ranking["layers"][:2]]


@pytest.mark.parametrize("argv, match", [
    (["--format", "fp8", "--weight-bits", "4"], "--weight-bits 4 is INT8-only"),
    (["--format", "fp4"], "unknown --format 'fp4'"),
    (["--format", "fp8", "--target", "onnxruntime"], "use --target tensorrt"),
])
def test_quantize_bad_format_is_one_line(fp8_work: Path, tmp_path: Path, argv: list[str], match: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    shutil.copytree(fp8_work, work, ignore=shutil.ignore_patterns("*.fp8.*"))
    before = sorted(p.name for p in work.iterdir())
    assert run_cli("quantize", work, *argv) == 2
    assert match in _one_line_error(capsys)
    assert sorted(p.name for p in work.iterdir()) == before  # nothing written


@pytest.mark.parametrize("command", [["sample", "--num", "1", "--steps", "1"], ["validate"], ["report"], ["build"]])
def test_precision_fp8_without_an_fp8_graph(tiny_calibrated: Path, tmp_path: Path, command: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("calib", "report", "*.fp8.*"))
    assert run_cli(command[0], work, "--precision", "fp8", *command[1:]) == 2
    assert "no fp8 model" in _one_line_error(capsys)


def test_openvino_refuses_fp8(fp8_work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("sample", fp8_work, "--precision", "fp8", "--backend", "openvino", "--num", "1", "--steps",
                   "1") == 2
    assert "--backend openvino does not run FP8" in _one_line_error(capsys)


@pytest.mark.parametrize("version, has_fp8, cc, problem", [
    ("10.13.0", True, "9.0", ""),
    ("10.13.0", True, "8.9", ""),
    ("10.13.0", True, "8.6", "compute capability 8.6; FP8 engines need >= 8.9"),
    ("8.6.1", True, "9.0", "TensorRT 8.6.1 cannot build strongly typed FP8"),
    ("10.0.1", False, "9.0", "needs TensorRT >= 10 with DataType.FP8"),
])
def test_fp8_build_refuses_old_gpus_and_tensorrt(version: str, has_fp8: bool, cc: str, problem: str) -> None:
    got = fp8_unsupported(version, has_fp8, cc)
    assert (problem in got and got) if problem else got == ""


def test_build_fp8_checks_the_graph_format_first(fp8_work: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An INT8 graph renamed to model.fp8.trt.onnx is refused from its record, before TensorRT is looked for."""
    work = tmp_path / "w"
    shutil.copytree(fp8_work, work)
    record = json.loads((work / "quantize.fp8.trt.json").read_text())
    record["policy"]["format"] = "int8"
    (work / "quantize.fp8.trt.json").write_text(json.dumps(record))
    assert run_cli("build", work, "--precision", "fp8") == 2
    assert "was quantized as int8" in _one_line_error(capsys)
