""".plan.json: round trip, and an engine from another TensorRT/GPU or with stale/missing metadata is a UserError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.errors import UserError
from common.hashing import onnx_model_sha256
from engines.tensorrt.plan import (
    GpuInfo,
    PlanInfo,
    ShapeRange,
    check_compatible,
    check_source,
    current_gpu,
    info_path,
    load_checked,
    plan_path,
    read_plan_info,
    require_tensorrt,
    tensorrt_installed,
    trt_major,
    write_plan_info,
)

L40S = GpuInfo("NVIDIA L40S", "8.9")
ORIN = GpuInfo("Orin", "8.7")


def _info(source_sha: str = "0" * 64) -> PlanInfo:
    profile = {"sample": ShapeRange((1, 1, 16, 16), (2, 1, 16, 16), (32, 1, 16, 16)),
               "timestep": ShapeRange((1,), (2,), (32,))}
    return PlanInfo(precision="int8", tensorrt_version="10.13.0.35", gpu=L40S, profiles=[profile],
                    source_onnx="model.int8.onnx", source_sha256=source_sha, strongly_typed=True, cuda_graph=True,
                    builder={"optimization_level": 3, "layers": {"int8_convolutions": 20}})


def _engine(folder: Path, info: PlanInfo) -> Path:
    plan = plan_path(folder, info.precision)
    plan.write_bytes(b"not really an engine")
    write_plan_info(plan, info)
    return plan


def test_round_trip(tmp_path: Path) -> None:
    info = _info()
    plan = _engine(tmp_path, info)
    assert info_path(plan).name == "model.int8.plan.json"
    assert read_plan_info(plan) == info
    raw = json.loads(info_path(plan).read_text())
    assert raw["schema_version"] == 1 and raw["gpu"] == {"name": "NVIDIA L40S", "compute_capability": "8.9"}
    assert raw["profiles"][0]["sample"] == {"min": [1, 1, 16, 16], "opt": [2, 1, 16, 16], "max": [32, 1, 16, 16]}
    assert raw["source_onnx"] == {"file": "model.int8.onnx", "sha256": "0" * 64}
    assert PlanInfo.from_json(info.to_json()) == info


def test_other_tensorrt_version_is_a_user_error_naming_the_engine(tmp_path: Path) -> None:
    plan = _engine(tmp_path, _info())
    with pytest.raises(UserError) as err:
        check_compatible(read_plan_info(plan), plan, "10.8.0.43", L40S)
    msg = str(err.value)
    assert str(plan) in msg and "10.13.0.35" in msg and "10.8.0.43" in msg and "python -m tools build" in msg


def test_other_gpu_is_a_user_error_naming_the_engine(tmp_path: Path) -> None:
    plan = _engine(tmp_path, _info())
    with pytest.raises(UserError) as err:
        check_compatible(read_plan_info(plan), plan, "10.13.0.35", ORIN)
    msg = str(err.value)
    assert str(plan) in msg and "NVIDIA L40S" in msg and "Orin" in msg and "8.7" in msg
    # same model name, other compute capability: still another GPU
    with pytest.raises(UserError):
        check_compatible(read_plan_info(plan), plan, "10.13.0.35", GpuInfo("NVIDIA L40S", "9.0"))
    check_compatible(read_plan_info(plan), plan, "10.13.0.35", GpuInfo("NVIDIA L40S", "8.9"))


def test_missing_or_corrupt_metadata(tmp_path: Path) -> None:
    plan = plan_path(tmp_path, "fp16")
    with pytest.raises(UserError, match="no TensorRT engine .*build it with python -m tools build .*--precision fp16"):
        read_plan_info(plan)
    plan.write_bytes(b"engine without metadata")
    with pytest.raises(UserError, match=r"has no 'model.fp16.plan.json' beside it"):
        read_plan_info(plan)
    info_path(plan).write_text("{not json")
    with pytest.raises(UserError, match=r"cannot read .*model.fp16.plan.json.*model.fp16.plan"):
        read_plan_info(plan)
    info_path(plan).write_text(json.dumps({**_info().to_json(), "schema_version": 99}))
    with pytest.raises(UserError, match="unknown schema_version 99"):
        read_plan_info(plan)
    info_path(plan).write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(UserError, match="cannot read"):
        read_plan_info(plan)


def test_stale_engine_when_the_source_onnx_changed(tiny_work: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_work / "model.onnx", tmp_path / "model.int8.onnx")
    plan = _engine(tmp_path, _info(onnx_model_sha256(tmp_path / "model.int8.onnx")))
    assert load_checked(plan, "10.13.0.35", L40S) == read_plan_info(plan)
    (tmp_path / "model.int8.onnx").write_bytes((tmp_path / "model.int8.onnx").read_bytes() + b" ")
    with pytest.raises(UserError, match=r"engine '.*model.int8.plan' is stale: 'model.int8.onnx' changed"):
        check_source(read_plan_info(plan), plan)
    (tmp_path / "model.int8.onnx").unlink()  # an engine copied alone to a device: nothing to compare
    check_source(read_plan_info(plan), plan)


def test_plan_path_and_versions(tmp_path: Path) -> None:
    assert plan_path(tmp_path, "int8") == tmp_path / "model.int8.plan"
    with pytest.raises(UserError, match="int8, fp8 or fp16, not 'fp32'"):
        plan_path(tmp_path, "fp32")
    assert trt_major("10.13.0.35") == 10 and trt_major("8.6.1") == 8 and trt_major("11.4.0.106") == 11


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")
def test_require_tensorrt_without_tensorrt_gives_the_install_hint() -> None:
    # with tensorrt-stubs installed (make typecheck) 'tensorrt' imports as an empty namespace package: still missing
    with pytest.raises(UserError, match="requirements-gpu.txt"):
        require_tensorrt()


def test_current_gpu_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        assert current_gpu().compute_capability.count(".") == 1
    else:
        with pytest.raises(UserError, match="no CUDA GPU"):
            current_gpu()
