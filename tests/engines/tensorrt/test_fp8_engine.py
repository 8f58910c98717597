"""FP8 TensorRT engines (GPU, compute capability >= 8.9): built from ``model.fp8.trt.onnx``, images against ONNX
Runtime FP32 from the same noise."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.workdir import WorkDir
from engines.ort_session import OrtSession
from engines.tensorrt.plan import current_gpu, fp8_unsupported, read_plan_info
from pipelines.runner import DenoiseRunner, to_images
from tests.conftest import run_cli
from validation.image_metrics import psnr


def _fp8_reference(work: Path) -> Path:
    """The reference work folder quantized to FP8 and built as an FP8 engine (once per session); skips on a GPU or a
    TensorRT without FP8."""
    import tensorrt as trt

    gpu = current_gpu()
    problem = fp8_unsupported(trt.__version__, hasattr(trt.DataType, "FP8"), gpu.compute_capability)
    if problem:
        pytest.skip(f"{gpu.name}: {problem}")
    if not (work / "ranges.json").is_file():
        assert run_cli("calibrate", work, "--samples", "64") == 0
    if not (work / "model.fp8.trt.onnx").is_file():
        assert run_cli("quantize", work, "--format", "fp8") == 0
    if not (work / "model.fp8.plan").is_file():
        assert run_cli("build", work, "--precision", "fp8") == 0
    return work


@pytest.mark.gpu("tensorrt")
def test_fp8_engine_images_match_ort_fp32(reference_work: Path) -> None:
    from engines.tensorrt.session import TrtSession
    from tests.engines.tensorrt.test_session import _ddim

    work = _fp8_reference(reference_work)
    info = read_plan_info(work / "model.fp8.plan")
    assert info.precision == "fp8" and info.strongly_typed and info.source_onnx == "model.fp8.trt.onnx"
    assert info.builder["layers"]["fp8_layers"] > 0  # FP8 kernels really chosen, not everything dequantized
    c, h, w = WorkDir(work).load_export_info()["inputs"]["sample"]["shape"][1:]
    with OrtSession(work / "model.onnx") as ort_session:
        noise = DenoiseRunner(ort_session, None).initial_noise((8, c, h, w), seed=0)
        reference = _ddim(work, ort_session, noise)
    with TrtSession(work / "model.fp8.plan") as trt_session:
        fp8 = _ddim(work, trt_session, noise)
    value = psnr(to_images(reference), to_images(fp8))
    print(f"PSNR FP8 TensorRT vs FP32 ONNX Runtime, 50 DDIM steps, 8 images: {value:.2f} dB")
    assert value >= 30.0
