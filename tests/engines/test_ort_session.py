"""OrtSession: the Session protocol, clear errors for bad model files, feed checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from engines.ort_session import OrtSession
from engines.session import Session


def test_is_a_session_and_runs(tiny_work: Path) -> None:
    with OrtSession(tiny_work / "model.onnx") as s:
        assert isinstance(s, Session)
        assert s.input_names == ["sample", "timestep"]
        assert s.output_names == ["out"]
        out = s.run({"sample": np.zeros((2, 1, 16, 16), np.float32), "timestep": np.array([1, 2], np.float32)})
        assert out["out"].shape == (2, 1, 16, 16)
        assert s.inference_time > 0


def test_truncated_model_is_user_error(tiny_work: Path, tmp_path: Path) -> None:
    data = (tiny_work / "model.onnx").read_bytes()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot load ONNX model .*model.onnx"):
        OrtSession(bad).activate()


def test_missing_model_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        OrtSession(tmp_path / "none.onnx").activate()


def test_feed_names_checked(tiny_work: Path) -> None:
    with OrtSession(tiny_work / "model.onnx") as s, pytest.raises(ValueError, match="missing \\['timestep'\\]"):
        s.run({"sample": np.zeros((1, 1, 16, 16), np.float32)})


def test_unknown_provider_is_user_error(tiny_work: Path) -> None:
    with pytest.raises(UserError, match="not available"):
        OrtSession(tiny_work / "model.onnx", providers=["NoSuchExecutionProvider"]).activate()


@pytest.mark.gpu
def test_cuda_provider_matches_cpu(tiny_work: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_work / "model.onnx", tmp_path / "model.onnx")
    feeds = {"sample": np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32),
             "timestep": np.array([1, 200, 500, 999], np.float32)}
    with OrtSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"]) as cpu, \
            OrtSession(tmp_path / "model.onnx", providers=["CUDAExecutionProvider"]) as gpu:
        np.testing.assert_allclose(gpu.run(feeds)["out"], cpu.run(feeds)["out"], rtol=1e-3, atol=1e-4)
