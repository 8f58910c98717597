"""TrtSession: lazy and honest without TensorRT (CPU); 50 DDIM steps on the INT8 engine vs ORT FP32 (gpu)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from common.workdir import WorkDir
from engines import backends
from engines.backends import open_session
from engines.cpu_backend import choose_cpu_backend
from engines.openvino_session import OpenVinoSession
from engines.ort_session import OrtSession
from pipelines.runner import DenoiseRunner, to_images
from pipelines.schedulers import make_scheduler
from engines.session import Session
from engines.tensorrt.plan import GpuInfo, PlanInfo, ShapeRange, tensorrt_installed, write_plan_info
from engines.tensorrt.session import TrtSession
from tests.engines.tensorrt.test_build import quantized_reference


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def test_construction_is_lazy_and_metadata_needs_activate(tmp_path: Path) -> None:
    session = TrtSession(tmp_path / "model.int8.plan", cuda_graph=True)
    with pytest.raises(RuntimeError, match="before activate"):
        _ = session.input_names
    assert session.inference_time == 0.0


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")
def test_activate_without_tensorrt_is_a_user_error_with_hint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="requirements-gpu.txt"):
        TrtSession(tmp_path / "model.int8.plan").activate()


def _fake_engine(work: Path, precision: str = "int8", cuda_graph: bool = True) -> Path:
    plan = work / f"model.{precision}.plan"
    plan.write_bytes(b"engine")
    write_plan_info(plan, PlanInfo(precision=precision, tensorrt_version="10.13.0.35",
                                   gpu=GpuInfo("NVIDIA L40S", "8.9"),
                                   profiles=[{"timestep": ShapeRange((1,), (1,), (16,))}], source_onnx="model.onnx",
                                   source_sha256="0" * 64, strongly_typed=True, cuda_graph=cuda_graph))
    return plan


def test_open_session_trt_branch_with_tensorrt_present(tiny_work: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a GPU machine: the engine and its .plan.json decide; nothing is loaded before activate."""
    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    work = WorkDir(tmp_path)
    (tmp_path / "model.onnx").write_bytes((tiny_work / "model.onnx").read_bytes())
    with pytest.raises(UserError, match="no TensorRT engine .*model.int8.plan.*python -m tools build"):
        open_session(work, "int8", "trt")
    with pytest.raises(UserError, match="int8, fp8 or fp16, not 'fp32'"):
        open_session(work, "fp32", "trt")
    _fake_engine(tmp_path)
    session, described = open_session(work, "int8", "trt")
    assert isinstance(session, TrtSession) and session.cuda_graph
    assert described == "TensorRT 10.13.0.35 (model.int8.plan, CUDA graphs)"
    # auto: TensorRT and a GPU, but no fp32 engine -> ONNX Runtime, saying why
    session, described = open_session(work, "fp32", "auto")
    cpu_backend = choose_cpu_backend()[0]  # ONNX Runtime, or OpenVINO on a VNNI/AMX CPU
    assert (isinstance(session, OpenVinoSession) if cpu_backend == "openvino" else isinstance(session, OrtSession))
    assert "no engine model.fp32.plan" in described
    session, described = open_session(work, "int8", "auto")
    assert isinstance(session, TrtSession)


def test_auto_without_tensorrt_uses_the_cpu_backend_and_says_why(tiny_work: Path) -> None:
    if backends.tensorrt_available():
        pytest.skip("TensorRT and a GPU are here")
    session, described = open_session(WorkDir(tiny_work), "fp32", "auto")
    cpu, cpu_why = choose_cpu_backend()  # ONNX Runtime, or OpenVINO on a VNNI/AMX CPU
    if cpu == "ort":
        assert isinstance(session, OrtSession)
        assert described == ("ONNX Runtime on CPUExecutionProvider (model.onnx; --backend auto: "
                             f"{backends.tensorrt_missing()}; {cpu_why})")
    else:
        assert isinstance(session, OpenVinoSession)
        assert described == f"OpenVINO (model.onnx; --backend auto: {backends.tensorrt_missing()}; {cpu_why})"
    assert backends.tensorrt_missing() in ("TensorRT is not installed", ) or "no CUDA device" in described
    with pytest.raises(UserError, match="fp16 runs on TensorRT engines only"):
        open_session(WorkDir(tiny_work), "fp16", "auto")


def test_ort_gpu_backend_needs_onnxruntime_gpu(tiny_work: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        session, described = open_session(WorkDir(tiny_work), "fp32", "ort-gpu")
        assert isinstance(session, OrtSession) and "CUDAExecutionProvider" in described
    else:
        with pytest.raises(UserError, match="onnxruntime-gpu .*requirements-gpu.txt"):
            open_session(WorkDir(tiny_work), "fp32", "ort-gpu")


# --- GPU -------------------------------------------------------------------------------------------------------------
def _ddim(work: Path, session: Session, noise: np.ndarray, steps: int = 50) -> np.ndarray:
    """DDIM with eps re-derived from the clipped x0: under the reference model's clip_sample config the default step
    lets some FP32 trajectories leave the training range (pipelines/trajectory_health.py), which would make the
    comparison measure those, not the engine. Asserts that every trajectory stayed in range."""
    scheduler = make_scheduler("ddim", WorkDir(work).load_export_info()["scheduler"])
    runner = DenoiseRunner(session, scheduler, batch_size=noise.shape[0])
    out = runner.sample(noise, steps, seed=0, use_clipped_model_output=True)
    assert runner.health.off_images == [], runner.health.summary()
    return out


@pytest.mark.gpu("tensorrt")
def test_50_ddim_steps_on_the_int8_engine_match_ort_fp32(reference_work: Path) -> None:
    work = quantized_reference(reference_work)
    c, h, w = WorkDir(work).load_export_info()["inputs"]["sample"]["shape"][1:]
    with OrtSession(work / "model.onnx") as ort_session:
        noise = DenoiseRunner(ort_session, None).initial_noise((8, c, h, w), seed=0)
        reference = _ddim(work, ort_session, noise)
    with TrtSession(work / "model.int8.plan") as trt_session:
        assert trt_session.input_names == ["sample", "timestep"] and trt_session.output_names == ["out"]
        int8 = _ddim(work, trt_session, noise)
        assert trt_session.inference_time > 0
    value = psnr(to_images(reference), to_images(int8))
    print(f"PSNR INT8 TensorRT vs FP32 ONNX Runtime, 50 DDIM steps, 8 images: {value:.2f} dB")
    assert value >= 30.0


@pytest.mark.gpu("tensorrt")
def test_cuda_graphs_give_the_same_result_and_shapes_are_checked(reference_work: Path) -> None:
    work = quantized_reference(reference_work)
    c, h, w = WorkDir(work).load_export_info()["inputs"]["sample"]["shape"][1:]
    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((3, c, h, w)).astype(np.float32),
             "timestep": np.array([999.0, 500.0, 1.0], np.float32)}
    with TrtSession(work / "model.int8.plan") as plain:
        expected = plain.run(feeds)["out"]
        with pytest.raises(ValueError, match="missing \\['timestep'\\]"):
            plain.run({"sample": feeds["sample"]})
        too_big = {"sample": np.zeros((4096, c, h, w), np.float32), "timestep": np.zeros(4096, np.float32)}
        with pytest.raises(ValueError, match="outside engine 'model.int8.plan' profile"):
            plain.run(too_big)
    with TrtSession(work / "model.int8.plan", cuda_graph=True) as graphed:
        first = graphed.run(feeds)["out"]  # warm-up run, then capture
        replayed = graphed.run(feeds)["out"]  # graph replay
        other = graphed.run({k: v[:2] for k, v in feeds.items()})["out"]  # a second shape: its own graph
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(replayed, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(other, expected[:2], rtol=0, atol=1e-3)


@pytest.mark.gpu("tensorrt")
def test_50_ddim_steps_on_the_fp16_engine_match_ort_fp32(reference_work: Path) -> None:
    """The FP16 engine's images, not only its metadata: against ONNX Runtime FP32 (CPU), 8 images.

    Threshold 40 dB: the FP16 rewrite ran on ONNX Runtime's CUDA provider at 61.6 dB against CPU FP32 (issue 15);
    TensorRT's kernels and fusions differ, so the bound leaves room, yet sits well above INT8's (>= 30 dB here) and
    fails on a precision bug (a layer overflowing FP16 costs tens of dB)."""
    from tests.conftest import run_cli

    work = reference_work
    if not (work / "model.fp16.plan").is_file():
        assert run_cli("build", work, "--precision", "fp16") == 0
    c, h, w = WorkDir(work).load_export_info()["inputs"]["sample"]["shape"][1:]
    with OrtSession(work / "model.onnx", providers=["CPUExecutionProvider"]) as ort_session:
        noise = DenoiseRunner(ort_session, None).initial_noise((8, c, h, w), seed=0)
        reference = _ddim(work, ort_session, noise)
    with TrtSession(work / "model.fp16.plan") as trt_session:
        fp16 = _ddim(work, trt_session, noise)
    value = psnr(to_images(reference), to_images(fp16))
    print(f"PSNR FP16 TensorRT vs FP32 ONNX Runtime, 50 DDIM steps, 8 images: {value:.2f} dB")
    assert value >= 40.0


# --- TensorRT objects mocked: the call order is the point ------------------------------------------------------------
class _FakeContext:
    def __init__(self, enqueue_ok: bool = True) -> None:
        self.enqueue_ok = enqueue_ok
        self.memory: tuple[int, int] | None = None
        self.calls: list[str] = []

    def execute_async_v3(self, stream: int) -> bool:
        self.calls.append("execute_async_v3")
        return self.enqueue_ok

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = (ptr, size)


class _FakeEngine:
    device_memory_size_v2 = 4096

    def __init__(self) -> None:
        self.strategies: list[object] = []
        self.contexts: list[_FakeContext] = []

    def create_execution_context(self, strategy: object = None) -> _FakeContext:
        self.strategies.append(strategy)
        self.contexts.append(_FakeContext())
        return self.contexts[-1]


class _FakeStream:
    cuda_stream = 7

    def synchronize(self) -> None:
        pass


class _CpuTrtSession(TrtSession):
    def _allocate(self, nbytes: int) -> object:
        import torch

        return torch.empty(nbytes, dtype=torch.uint8)


def _mocked_session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[TrtSession, _FakeEngine]:
    import sys
    import types

    import torch

    fake_trt = types.SimpleNamespace(ExecutionContextAllocationStrategy=types.SimpleNamespace(USER_MANAGED="USER"))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)

    class FakeGraph:
        pass

    class FakeCapture:
        def __init__(self, graph: FakeGraph, stream: object = None) -> None:
            self.graph = graph

        def __enter__(self) -> FakeCapture:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", FakeCapture)
    session = _CpuTrtSession(tmp_path / "model.int8.plan", cuda_graph=True)
    engine = _FakeEngine()
    session._engine = engine  # type: ignore[assignment]
    session._stream = _FakeStream()  # type: ignore[assignment]
    return session, engine


def test_cuda_graph_contexts_share_one_user_managed_activation_buffer(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    session, engine = _mocked_session(monkeypatch, tmp_path)
    first, second = session._graph_context(), session._graph_context()
    assert engine.strategies == ["USER", "USER"]
    assert first.memory is not None and first.memory == second.memory
    assert first.memory[1] == engine.device_memory_size_v2
    assert session._activation_memory is not None and session._activation_memory.numel() == 4096
    session.deactivate()
    assert session._activation_memory is None


def test_failed_enqueue_during_capture_keeps_no_graph_and_raises(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from engines.tensorrt.session import _Binding

    session, _ = _mocked_session(monkeypatch, tmp_path)
    good = _Binding(context=_FakeContext(True), inputs={}, outputs={})  # type: ignore[arg-type]
    session._capture(good)
    assert good.graph is not None and good.context.calls == ["execute_async_v3"]
    bad = _Binding(context=_FakeContext(False), inputs={}, outputs={})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="failed while capturing a CUDA graph.*no graph kept"):
        session._capture(bad)
    assert bad.graph is None


def test_runtime_takes_the_process_wide_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT keeps one logger per process: the session's Runtime gets Polygraphy's (``trt_logger``), never a new
    trt.Logger; seen with fake TensorRT objects (the fake Runtime cannot deserialize, which ends activate)."""
    import sys
    import types

    import torch

    import engines.tensorrt.session as module

    runtimes: list[object] = []

    class Runtime:
        def __init__(self, logger: object) -> None:
            runtimes.append(logger)

        def deserialize_cuda_engine(self, data: bytes) -> None:
            return None

    def no_new_logger(*args: object) -> None:
        raise AssertionError("a new trt.Logger was made")

    fake_trt = types.SimpleNamespace(__version__="10.13.0.35", Builder=object, Runtime=Runtime, Logger=no_new_logger)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    process_logger = object()
    monkeypatch.setattr(module, "trt_logger", lambda: process_logger)
    monkeypatch.setattr(module, "current_gpu", lambda device=0: GpuInfo("NVIDIA L40S", "8.9"))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    plan = _fake_engine(tmp_path)
    with pytest.raises(UserError, match="cannot deserialize engine"):
        TrtSession(plan, check=False).activate()
    assert runtimes == [process_logger]
