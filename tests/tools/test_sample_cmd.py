"""``python -m tools sample``: outputs beside the grid, --init-noise reproduction, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.openvino_session import OpenVinoSession
from engines.ort_session import OrtSession
from pipelines.conditioning import Conditioning
from pipelines.runner import DenoiseRunner
from pipelines.schedulers import make_scheduler
from tests.conftest import run_cli


def test_sample_writes_grid_samples_and_noise(tiny_work: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    assert run_cli("sample", tiny_work, "--steps", "4", "--num", "3", "--seed", "5", "--out", out) == 0
    samples = np.load(tmp_path / "g.samples.npy")
    noise = np.load(tmp_path / "g.noise.npy")
    assert samples.shape == noise.shape == (3, 1, 16, 16)
    assert Image.open(out).size[0] > 16
    meta = json.loads((tmp_path / "g.json").read_text())
    assert meta["steps"] == 4 and meta["seed"] == 5
    assert meta["backend"].startswith(("ONNX Runtime", "OpenVINO"))  # auto: OpenVINO on VNNI/AMX CPUs
    # the same noise given back reproduces the samples exactly
    out2 = tmp_path / "h.png"
    assert run_cli("sample", tiny_work, "--steps", "4", "--num", "3", "--init-noise", tmp_path / "g.noise.npy",
                   "--seed", "5", "--out", out2) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "h.samples.npy"), samples)


def test_conditional_sampling_with_guidance(tiny_cond_work: Path, tmp_path: Path) -> None:
    """--cond without --uncond: guided (scale 7.5 by default) against zero rows; the samples are the library loop's
    with that conditioning, and differ from the unguided ones."""
    cond = np.random.default_rng(0).standard_normal((2, 5, 12)).astype(np.float32)
    np.save(tmp_path / "cond.npy", cond)
    out = tmp_path / "c.png"
    assert run_cli("sample", tiny_cond_work, "--backend", "ort", "--scheduler", "euler", "--steps", "3", "--num", "2",
                   "--cond", tmp_path / "cond.npy", "--out", out) == 0
    samples, noise = np.load(tmp_path / "c.samples.npy"), np.load(tmp_path / "c.noise.npy")
    assert samples.shape == (2, 4, 8, 8)
    scheduler = json.loads((tiny_cond_work / "export.json").read_text())["scheduler"]
    with OrtSession(tiny_cond_work / "model.onnx") as s:
        def run(c: Conditioning) -> np.ndarray:
            return DenoiseRunner(s, make_scheduler("euler", scheduler)).sample(noise, 3, seed=0, cond=c)

        guided = run(Conditioning(cond, np.zeros((1, 5, 12), np.float32), 7.5))
        unguided = run(Conditioning(cond))
    np.testing.assert_allclose(samples, guided, rtol=1e-5, atol=1e-5)
    assert np.abs(samples - unguided).max() > 1e-2


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 1, 16, 16), (3, 16, 16)])
def test_wrong_init_noise_shape(tiny_work: Path, tmp_path: Path, shape: tuple[int, ...],
                                capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "n.npy", np.zeros(shape, np.float32))
    out = tmp_path / "o" / "g.png"
    assert run_cli("sample", tiny_work, "--num", "3", "--steps", "2", "--init-noise", tmp_path / "n.npy",
                   "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert "--init-noise" in err and "n.npy" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_pickled_noise_is_refused(tiny_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "n.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert run_cli("sample", tiny_work, "--num", "1", "--init-noise", tmp_path / "n.npy",
                   "--out", tmp_path / "g.png") == 2
    assert "not a readable .npy" in capsys.readouterr().err


def test_truncated_model_in_work(tiny_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "export.json").write_text((tiny_work / "export.json").read_text())
    data = (tiny_work / "model.onnx").read_bytes()
    (work / "model.onnx").write_bytes(data[: len(data) // 3])
    assert run_cli("sample", work, "--num", "1", "--steps", "1") == 2
    assert "cannot load ONNX model" in capsys.readouterr().err
    assert sorted(p.name for p in work.iterdir()) == ["export.json", "model.onnx"]


def test_not_a_work_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("sample", tmp_path) == 2
    assert "export.json" in capsys.readouterr().err


def test_float_above_t_routes_the_first_steps(tiny_calibrated: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("*.int8.*", "report", "samples"))
    out = tmp_path / "routed.png"
    assert run_cli("sample", work, "--float-above-t", "1", "--num", "2", "--steps", "4", "--out", out) == 2
    assert "--float-above-t needs --precision int8" in capsys.readouterr().err and not out.exists()
    assert run_cli("quantize", work) == 0
    assert run_cli("sample", work, "--precision", "int8", "--float-above-t", "500", "--num", "2", "--steps", "4",
                   "--out", out) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["float_above_t"] == 500 and sum(record["unet_calls"].values()) == 4
    assert 0 < record["unet_calls"]["high"] < 4


def test_use_clipped_model_output_is_recorded_with_the_trajectory_health(tiny_work: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.png"
    assert run_cli("sample", tiny_work, "--use-clipped-model-output", "--num", "2", "--steps", "4", "--out", out) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["use_clipped_model_output"] is True
    assert record["trajectory"]["images"] == 2 and record["trajectory"]["abs_limit"] == 8.0
    bad = tmp_path / "e.png"
    assert run_cli("sample", tiny_work, "--scheduler", "euler", "--use-clipped-model-output", "--num", "1",
                   "--steps", "2", "--out", bad) == 2
    assert "--use-clipped-model-output: EulerDiscreteScheduler.step does not take it" in capsys.readouterr().err
    assert not bad.exists()


def test_backend_openvino_int8(tiny_calibrated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")
    work = tmp_path / "w"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("model.int8*", "quantize*.json"))
    assert run_cli("quantize", work, "--target", "onnxruntime") == 0
    assert run_cli("quantize", work, "--target", "tensorrt") == 0
    out = tmp_path / "ov.png"
    assert run_cli("sample", work, "--backend", "openvino", "--precision", "int8", "--steps", "3", "--num", "2",
                   "--threads", "1", "--out", out) == 0
    meta = json.loads((tmp_path / "ov.json").read_text())
    assert meta["backend"].startswith("OpenVINO (model.int8.trt.onnx")  # one graph for GPU and CPU
    samples, noise = np.load(tmp_path / "ov.samples.npy"), np.load(tmp_path / "ov.noise.npy")
    scheduler = json.loads((work / "export.json").read_text())["scheduler"]
    # the samples are that graph's on OpenVINO, not ONNX Runtime's (whose INT8 kernels round differently)
    with OpenVinoSession(work / "model.int8.trt.onnx", threads=1) as s:
        expected = DenoiseRunner(s, make_scheduler("ddim", scheduler)).sample(noise, 3, seed=0)
    with OrtSession(work / "model.int8.trt.onnx") as s:
        on_ort = DenoiseRunner(s, make_scheduler("ddim", scheduler)).sample(noise, 3, seed=0)
    np.testing.assert_allclose(samples, expected, rtol=0, atol=1e-5)
    assert np.abs(samples - on_ort).max() > 1e-4
    assert any((work / ".openvino_cache").iterdir())  # compiled model cached in the work folder
    assert "OpenVINO" in capsys.readouterr().out
