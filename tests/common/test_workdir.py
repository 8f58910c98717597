"""The work folder's file names, which model each precision and target means, and export.json's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from common.workdir import EXPORT_SCHEMA_VERSION, WorkDir


def test_file_names(tmp_path: Path) -> None:
    work = WorkDir(tmp_path)
    assert work.int8_model("onnxruntime") == tmp_path / "model.int8.ort.onnx"
    assert work.int8_model("tensorrt") == tmp_path / "model.int8.trt.onnx"
    assert work.quantize_record(tmp_path / "model.int8.trt.onnx") == tmp_path / "quantize.trt.json"
    assert work.quantize_record(tmp_path / "model.int8.onnx") == tmp_path / "quantize.json"
    assert work.quantize_record(tmp_path / "x" / "g1.onnx") == tmp_path / "x" / "g1.quantize.json"
    with pytest.raises(UserError, match="unknown --target 'cuda'; known: onnxruntime, tensorrt"):
        work.int8_model("cuda")


def test_model_for_prefers_the_onnxruntime_graph_and_says_what_to_run(tmp_path: Path) -> None:
    work = WorkDir(tmp_path)
    with pytest.raises(UserError, match="missing model.onnx.*python -m tools export"):
        work.model_for("fp32")
    with pytest.raises(UserError, match=r"missing model\.int8\.<target>\.onnx\); run python -m tools quantize"):
        work.model_for("int8")
    (tmp_path / "model.int8.trt.onnx").write_bytes(b"")
    assert work.model_for("int8") == tmp_path / "model.int8.trt.onnx"
    (tmp_path / "model.int8.ort.onnx").write_bytes(b"")
    assert work.model_for("int8") == tmp_path / "model.int8.ort.onnx"
    assert work.model_for("int8", "tensorrt") == tmp_path / "model.int8.trt.onnx"
    with pytest.raises(UserError, match="unknown --precision 'bf16'"):
        work.model_for("bf16")


def test_a_legacy_int8_model_counts_for_its_recorded_target(tmp_path: Path) -> None:
    (tmp_path / "model.int8.onnx").write_bytes(b"")
    (tmp_path / "quantize.json").write_text(json.dumps({"policy": {"target": "tensorrt"}}))
    assert WorkDir(tmp_path).int8_models() == {"tensorrt": tmp_path / "model.int8.onnx"}


def test_export_info_is_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist; create it with python -m tools export"):
        WorkDir(tmp_path / "none").load_export_info()
    work = WorkDir(tmp_path)
    with pytest.raises(UserError, match="export.json' is missing"):
        work.load_export_info()
    work.export_json.write_text(json.dumps({"schema_version": EXPORT_SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="unknown schema"):
        work.load_export_info()
    work.export_json.write_text(json.dumps({"schema_version": EXPORT_SCHEMA_VERSION, "inputs": {}}))
    assert work.load_export_info()["inputs"] == {}
