"""The device-resident loop: the same images as the CPU loop, on torch tensors (CPU here; CUDA in the gpu tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from engines.ort_session import OrtSession
from pipelines.runner import Conditioning, DenoiseRunner, to_images
from pipelines.schedulers import SCHEDULERS, make_scheduler
from pipelines.tensor_runner import TensorDenoiseRunner, TensorSession
from tests.conftest import TINY_COND_LEN


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _sched(work: Path, name: str) -> object:
    return make_scheduler(name, json.loads((work / "export.json").read_text())["scheduler"])


class _NoHostRuns:
    """An OrtSession whose numpy ``run`` must not be called: the tensor loop uses ``run_tensors`` only."""

    def __init__(self, session: OrtSession) -> None:
        self.session = session
        self.tensor_calls = 0

    @property
    def input_names(self) -> list[str]:
        return self.session.input_names

    def run(self, feeds: object) -> object:
        raise AssertionError("the tensor loop called the numpy run()")

    def run_tensors(self, feeds: dict) -> dict:  # type: ignore[type-arg]
        import torch

        assert all(isinstance(t, torch.Tensor) for t in feeds.values())
        self.tensor_calls += 1
        return self.session.run_tensors(feeds)


# "flow" needs its family's set-up (sigmas, shift: pipelines/flow_matching.py); tests/pipelines/test_transformer_parity.py
@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - {"flow"}))
def test_tensor_loop_matches_the_cpu_loop(tiny_work: Path, name: str) -> None:
    """Every scheduler (stochastic ones draw from the same CPU generator): the same samples as DenoiseRunner."""
    with OrtSession(tiny_work / "model.onnx") as s:
        cpu = DenoiseRunner(s, _sched(tiny_work, name), batch_size=3)
        noise = cpu.initial_noise((4, 1, 16, 16), seed=5)
        expected = cpu.sample(noise, 4, seed=5)
        spy = _NoHostRuns(s)
        runner = TensorDenoiseRunner(spy, _sched(tiny_work, name), device="cpu", batch_size=3)
        got = runner.sample(noise, 4, seed=5)
    assert spy.tensor_calls == len(runner.scheduler.timesteps) * 2  # each step: 2 chunks of at most 3 images
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert runner.health.summary()["images"] == 4
    assert runner.health.summary() == cpu.health.summary()


def test_tensor_loop_with_guidance_matches_the_cpu_loop(tiny_cond_work: Path) -> None:
    rng = np.random.default_rng(0)
    cond = Conditioning(rng.standard_normal((2, TINY_COND_LEN, 12)).astype(np.float32),
                        np.zeros((1, TINY_COND_LEN, 12), np.float32), guidance_scale=5.0)
    with OrtSession(tiny_cond_work / "model.onnx") as s:
        cpu = DenoiseRunner(s, _sched(tiny_cond_work, "ddim"), batch_size=1)
        noise = cpu.initial_noise((2, 4, 8, 8), seed=1)
        expected = cpu.sample(noise, 3, seed=1, cond=cond)
        got = TensorDenoiseRunner(s, _sched(tiny_cond_work, "ddim"), device="cpu", batch_size=1).sample(
            noise, 3, seed=1, cond=cond)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_session_without_run_tensors_is_refused() -> None:
    class NumpyOnly:
        input_names = ["sample", "timestep"]

        def run(self, feeds: dict) -> dict:  # type: ignore[type-arg]
            return feeds

    assert not isinstance(NumpyOnly(), TensorSession)
    with pytest.raises(UserError, match="NumpyOnly cannot run on device tensors"):
        TensorDenoiseRunner(NumpyOnly(), None, device="cpu")


# --- GPU -------------------------------------------------------------------------------------------------------------
@pytest.mark.gpu("onnxruntime-gpu")
def test_gpu_resident_loop_on_the_cuda_provider_matches_the_cpu_loop(reference_work: Path) -> None:
    """The reference model, 50 DDIM steps, 8 images: CUDA tensors through IO binding vs the CPU loop: >= 40 dB."""
    with OrtSession(reference_work / "model.onnx", providers=["CPUExecutionProvider"]) as cpu_session:
        cpu = DenoiseRunner(cpu_session, _sched(reference_work, "ddim"), batch_size=8)
        noise = cpu.initial_noise((8, 1, 32, 32), seed=0)
        expected = cpu.sample(noise, 50, seed=0, use_clipped_model_output=True)
    cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})
    with OrtSession(reference_work / "model.onnx", providers=[cuda]) as gpu_session:
        assert gpu_session.active_providers[0] == "CUDAExecutionProvider"
        got = TensorDenoiseRunner(gpu_session, _sched(reference_work, "ddim"), device="cuda", batch_size=8).sample(
            noise, 50, seed=0, use_clipped_model_output=True)
    value = psnr(to_images(expected), to_images(got))
    print(f"GPU-resident loop (ORT CUDA, IO binding) vs CPU loop, 50 DDIM steps, 8 images: {value:.2f} dB")
    assert value >= 40.0


@pytest.mark.gpu("tensorrt")
def test_gpu_resident_loop_on_a_tensorrt_engine_with_cuda_graphs_matches_the_cpu_loop(reference_work: Path) -> None:
    """FP16 engine replayed as CUDA graphs inside the device loop vs the same engine in the numpy loop: >= 40 dB."""
    from engines.tensorrt.session import TrtSession
    from tests.conftest import run_cli

    work = reference_work
    if not (work / "model.fp16.plan").is_file():
        assert run_cli("build", work, "--precision", "fp16") == 0
    with TrtSession(work / "model.fp16.plan") as plain:
        cpu = DenoiseRunner(plain, _sched(work, "ddim"), batch_size=8)
        noise = cpu.initial_noise((8, 1, 32, 32), seed=0)
        expected = cpu.sample(noise, 50, seed=0, use_clipped_model_output=True)
    with TrtSession(work / "model.fp16.plan", cuda_graph=True) as graphed:
        got = TensorDenoiseRunner(graphed, _sched(work, "ddim"), device="cuda", batch_size=8).sample(
            noise, 50, seed=0, use_clipped_model_output=True)
        assert all(b.graph is not None for b in graphed._bindings.values())
    value = psnr(to_images(expected), to_images(got))
    print(f"GPU-resident loop (TensorRT FP16, CUDA graphs) vs numpy loop, 50 DDIM steps: {value:.2f} dB")
    assert value >= 40.0


def test_device_of_picks_the_loop_from_what_the_session_runs_on(tiny_work: Path) -> None:
    from pipelines.tensor_runner import device_of
    from engines.tensorrt.session import TrtSession

    assert device_of(TrtSession(tiny_work / "model.int8.plan", device=1)) == "cuda:1"
    with OrtSession(tiny_work / "model.onnx", providers=["CPUExecutionProvider"]) as s:
        assert device_of(s) is None  # the CPU provider: the numpy loop, as before
    assert device_of(object()) is None


def test_time_step_groups_run_in_the_tensor_loop(tiny_grouped: Path) -> None:
    """A TimestepGroupedSession runs the device loop (TensorRT groups on a GPU): the same samples as the CPU loop,
    every call through its group's ``run_tensors``."""
    from engines.backends import onnx_session
    from engines.timestep_routed import TimestepGroupedSession

    model = tiny_grouped / "model.int8.ort.onnx"
    with onnx_session(model) as grouped:
        assert isinstance(grouped, TimestepGroupedSession)
        cpu = DenoiseRunner(grouped, _sched(tiny_grouped, "ddim"), batch_size=2)
        noise = cpu.initial_noise((2, 1, 16, 16), seed=1)
        expected = cpu.sample(noise, 6, seed=1)
        host_calls = list(grouped.calls)
        spies = [_NoHostRuns(s) for s in grouped.sessions]  # type: ignore[arg-type]
        routed = TimestepGroupedSession(spies, grouped.bounds)  # type: ignore[arg-type]
        got = TensorDenoiseRunner(routed, _sched(tiny_grouped, "ddim"), device="cpu", batch_size=2).sample(
            noise, 6, seed=1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert [s.tensor_calls for s in spies] == host_calls and sum(1 for c in host_calls if c) >= 3
