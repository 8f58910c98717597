"""``python -m tools build`` and ``sample --backend trt|auto`` on a machine without TensorRT or a GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engines.backends import tensorrt_available
from tests.conftest import run_cli

no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="TensorRT and a GPU are here")


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_build_is_a_registered_command(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m tools --help`` lists build, and ``build --help`` is the build command's own parser."""
    assert run_cli("--help") == 0
    commands = re.search(r"^commands: (.*)$", capsys.readouterr().out, re.MULTILINE)
    assert commands is not None and "build" in commands.group(1).split(", ")
    with pytest.raises(SystemExit) as stop:
        run_cli("build", "--help")
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tools build") and "--opt-level" in out and "--timing-cache" in out


@no_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_without_tensorrt_exits_2_with_install_hint(tiny_work: Path, tmp_path: Path, precision: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    work.mkdir()
    for name, src in (("export.json", "export.json"), ("model.onnx", "model.onnx"), ("model.int8.trt.onnx", "model.onnx")):
        (work / name).write_bytes((tiny_work / src).read_bytes())
    assert run_cli("build", work, "--precision", precision, "--max-batch", "8") == 2
    err = _one_line_error(capsys)
    assert "TensorRT" in err and "pip install -r requirements-gpu.txt" in err and "Docker image" in err
    # no engine, no .plan.json, no temporary build folder
    assert sorted(p.name for p in work.iterdir()) == ["export.json", "model.int8.trt.onnx", "model.onnx"]


@pytest.mark.parametrize(("args", "message"), [
    (["--min-batch", "0"], "--min-batch must be >= 1"),
    (["--min-batch", "9", "--max-batch", "4"], "1 <= min <= opt <= max"),
    (["--opt-level", "9"], "--opt-level must be in 0..5"),
    (["--workspace-gb", "-1"], "--workspace-gb must be > 0"),
    (["--timing-cache", "/no/such/folder/t.cache"], "--timing-cache '/no/such/folder/t.cache'"),
    (["--precision", "int8"], "missing model.int8.trt.onnx); run python -m tools quantize"),
])
def test_bad_input_is_checked_before_tensorrt(tiny_work: Path, args: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["build", tiny_work, *args] if "--precision" in args else ["build", tiny_work, "--precision", "fp16", *args]
    assert run_cli(*argv) == 2
    assert message in _one_line_error(capsys)


def test_build_on_a_folder_that_is_not_a_work_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("build", tmp_path, "--precision", "fp16") == 2
    assert "export.json" in _one_line_error(capsys)


@no_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_sample_backend_trt_without_tensorrt_exits_2(tiny_work: Path, tmp_path: Path, precision: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("sample", tiny_work, "--backend", "trt", "--precision", precision, "--num", "1", "--steps", "1",
                   "--out", tmp_path / "g.png") == 2
    err = _one_line_error(capsys)
    assert "--backend trt needs TensorRT and an NVIDIA GPU" in err and "requirements-gpu.txt" in err
    assert not (tmp_path / "g.png").exists()


@no_tensorrt
def test_sample_backend_auto_falls_back_to_onnx_runtime_and_says_so(tiny_work: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU without VNNI/AMX (or without OpenVINO) --backend auto runs ONNX Runtime and says why; the CPU's
    answer is fixed here so the test runs the same on every machine."""
    from engines import backends

    monkeypatch.setattr(backends, "choose_cpu_backend", lambda: ("ort", "the CPU has no VNNI/AMX INT8 instructions"))
    assert run_cli("sample", tiny_work, "--backend", "auto", "--num", "1", "--steps", "2",
                   "--out", tmp_path / "g.png") == 0
    out = capsys.readouterr().out
    assert "on ONNX Runtime on CPUExecutionProvider (model.onnx; --backend auto: TensorRT is not installed; " in out
    assert "--backend auto: TensorRT is not installed" in json.loads((tmp_path / "g.json").read_text())["backend"]


def test_int8_build_refuses_a_graph_of_another_target(tiny_calibrated: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An onnxruntime-target Q/DQ graph never reaches TensorRT: by its file name, its record, then the lint."""
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("report", "*.int8.*", "quantize*.json"))
    assert run_cli("quantize", work, "--target", "onnxruntime") == 0
    capsys.readouterr()
    fix = f"run python -m tools quantize {work} --target tensorrt"
    # only model.int8.ort.onnx here: build looks for model.int8.trt.onnx
    assert run_cli("build", work, "--precision", "int8") == 2
    err = _one_line_error(capsys)
    assert "missing model.int8.trt.onnx" in err and fix in err
    # the onnxruntime graph under the TensorRT name, its record beside it: the record's target refuses it
    shutil.copy(work / "model.int8.ort.onnx", work / "model.int8.trt.onnx")
    shutil.copy(work / "quantize.ort.json", work / "quantize.trt.json")
    assert run_cli("build", work, "--precision", "int8") == 2
    err = _one_line_error(capsys)
    assert "'model.int8.trt.onnx' was quantized for --target onnxruntime (quantize.trt.json)" in err and fix in err
    # without a record, the TensorRT lint catches the same graph (UINT8 activations, INT32 bias)
    (work / "quantize.trt.json").unlink()
    assert run_cli("build", work, "--precision", "int8") == 2
    err = _one_line_error(capsys)
    assert "breaks" in err and "of TensorRT's Q/DQ rules" in err and fix in err
    assert not list(work.glob("*.plan*"))


def test_sample_fp16_needs_a_tensorrt_engine(tiny_work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("sample", tiny_work, "--backend", "ort", "--precision", "fp16", "--num", "1") == 2
    assert "fp16 runs on TensorRT engines only" in _one_line_error(capsys)
