"""Shared fixtures: tiny diffusers UNets built in code, saved as local folders and exported once per session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_MODEL = REPO / "models" / "digits-ddpm"

TINY_UNET2D: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
    "attention_head_dim": None,
}
TINY_COND: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [8, 16],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 12,
    "attention_head_dim": 2,
    "norm_num_groups": 4,
}
TINY_COND_LEN = 5


# What a ``gpu`` test can need: ``@pytest.mark.gpu("cuda", "onnxruntime-gpu")``; a bare ``@pytest.mark.gpu`` needs
# CUDA. Each missing requirement skips the test with its own reason (TensorRT implies CUDA).
GPU_REQUIREMENTS = ("cuda", "onnxruntime-gpu", "tensorrt")


def _missing_cuda() -> str:
    try:
        import torch
    except ImportError:
        return "needs CUDA (torch is not installed)"
    if not torch.cuda.is_available():
        return f"needs CUDA (no CUDA device visible to torch {torch.__version__}; run make test-gpu in the Docker image)"
    return ""


def _missing_ort_gpu() -> str:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ("needs onnxruntime-gpu (CUDAExecutionProvider not available: pip install -r requirements-gpu.txt, "
                "or the Docker image)")
    return ""


def _missing_tensorrt() -> str:
    from engines.tensorrt.plan import tensorrt_installed

    if not tensorrt_installed():
        return "needs TensorRT (not installed: pip install -r requirements-gpu.txt, or the Docker image)"
    return ""


_CHECKS = {"cuda": _missing_cuda, "onnxruntime-gpu": _missing_ort_gpu, "tensorrt": _missing_tensorrt}


def gpu_skip_reason(needs: tuple[str, ...]) -> str:
    """The skip reason for a ``gpu`` test needing ``needs`` ("" when everything is here)."""
    unknown = [n for n in needs if n not in GPU_REQUIREMENTS]
    if unknown:
        raise ValueError(f"unknown gpu requirement(s) {unknown}; known: {GPU_REQUIREMENTS}")
    wanted = ["cuda", *(n for n in needs if n != "cuda")]
    reasons = [r for r in (_CHECKS[n]() for n in wanted) if r]
    return "; ".join(reasons)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip each ``gpu`` test whose requirements (CUDA; onnxruntime-gpu; TensorRT) are missing, saying which."""
    cache: dict[tuple[str, ...], str] = {}
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is None:
            continue
        needs = tuple(str(a) for a in marker.args)
        if needs not in cache:
            cache[needs] = gpu_skip_reason(needs)
        if cache[needs]:
            item.add_marker(pytest.mark.skip(reason=cache[needs]))


def build_unet(config: dict[str, Any], conditional: bool, seed: int = 0) -> Any:
    import diffusers
    import torch

    torch.manual_seed(seed)
    cls = diffusers.UNet2DConditionModel if conditional else diffusers.UNet2DModel
    unet = cls(**config).eval()
    # Random init leaves zero-initialised output convs in some blocks: perturb so every path matters.
    with torch.no_grad():
        for p in unet.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return unet


def save_pipeline(unet: Any, folder: Path, scheduler_cls: str = "DDPMScheduler") -> Path:
    """Save ``unet`` as a diffusers pipeline-style folder with unet/ and scheduler/."""
    import diffusers

    unet.save_pretrained(folder / "unet")
    sched = getattr(diffusers, scheduler_cls)(num_train_timesteps=1000)
    sched.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    return folder


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline folder holding a tiny UNet2DModel (1×16×16) and a DDPM scheduler."""
    return save_pipeline(build_unet(TINY_UNET2D, False), tmp_path_factory.mktemp("tiny-unet"))


@pytest.fixture(scope="session")
def tiny_cond_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain UNet folder (no scheduler) holding a tiny UNet2DConditionModel (4×8×8, text 5×12)."""
    folder = tmp_path_factory.mktemp("tiny-cond") / "unet"
    build_unet(TINY_COND, True).save_pretrained(folder)
    return folder


def run_cli(*args: str) -> int:
    """Run ``python -m tools`` in-process; returns the exit code."""
    from tools.__main__ import main

    return main([str(a) for a in args])


@pytest.fixture(scope="session")
def tiny_work(tiny_unet_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny UNet2DModel exported to a work folder."""
    work = tmp_path_factory.mktemp("work") / "tiny"
    assert run_cli("export", "--model", tiny_unet_dir, work) == 0
    return work


@pytest.fixture(scope="session")
def tiny_cond_work(tiny_cond_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny UNet2DConditionModel exported to a work folder."""
    work = tmp_path_factory.mktemp("work") / "tiny-cond"
    assert run_cli("export", "--model", tiny_cond_dir, work, "--cond-len", TINY_COND_LEN) == 0
    return work


@pytest.fixture(scope="session")
def reference_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled reference model exported to a work folder."""
    if not (REFERENCE_MODEL / "unet" / "config.json").is_file():
        pytest.fail(f"reference model missing at {REFERENCE_MODEL}: train it with python -m tools train-reference")
    work = tmp_path_factory.mktemp("work") / "digits"
    assert run_cli("export", "--model", REFERENCE_MODEL, work) == 0
    return work


@pytest.fixture(scope="session")
def tiny_calibrated(tiny_work: Path) -> Path:
    """The tiny UNet2DModel work folder with a ranges.json (uniform, 16 samples, 10 DDIM steps)."""
    assert run_cli("calibrate", tiny_work, "--method", "uniform", "--samples", "16", "--steps", "10") == 0
    return tiny_work


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random StableDiffusionPipeline folder (tests/tiny_pipelines.py)."""
    from tests.tiny_pipelines import build_sd_pipeline

    return build_sd_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random StableDiffusionXLPipeline folder (tests/tiny_pipelines.py)."""
    from tests.tiny_pipelines import build_sdxl_pipeline

    return build_sdxl_pipeline(tmp_path_factory.mktemp("tiny-sdxl") / "pipe")


@pytest.fixture(scope="session")
def tiny_sd_work(tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD pipeline exported: text_encoder.onnx, model.onnx, vae_decoder.onnx."""
    work = tmp_path_factory.mktemp("work") / "tiny-sd"
    assert run_cli("export", "--model", tiny_sd_dir, work) == 0
    return work


@pytest.fixture(scope="session")
def tiny_sdxl_work(tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL pipeline exported: text_encoder(_2).onnx, model.onnx, vae_decoder.onnx."""
    work = tmp_path_factory.mktemp("work") / "tiny-sdxl"
    assert run_cli("export", "--model", tiny_sdxl_dir, work) == 0
    return work


@pytest.fixture(scope="session")
def tiny_grouped(tiny_calibrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_calibrated`` quantized for both targets with ``--timestep-groups 4`` (4 group graphs each)."""
    import shutil

    work = tmp_path_factory.mktemp("work") / "tiny-grouped"
    shutil.copytree(tiny_calibrated, work, ignore=shutil.ignore_patterns("calib", "report", "*.int8.*",
                                                                         "quantize*.json", "*.plan*"))
    for target in ("onnxruntime", "tensorrt"):
        assert run_cli("quantize", work, "--target", target, "--timestep-groups", "4") == 0
    return work


@pytest.fixture(scope="session")
def tiny_transformer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random transformer pipelines by name (tests/tiny_pipelines.py): sd3, sd3-no-t5, flux (dev-type),
    flux-schnell, pixart-alpha, pixart-sigma, dit; each built on first use."""
    from tests import tiny_pipelines as tp

    builders = {"sd3": tp.build_sd3_pipeline, "sd3-no-t5": lambda f: tp.build_sd3_pipeline(f, t5=False),
                "flux": tp.build_flux_pipeline, "flux-schnell": lambda f: tp.build_flux_pipeline(f, guidance=False),
                "pixart-alpha": tp.build_pixart_pipeline,
                "pixart-sigma": lambda f: tp.build_pixart_pipeline(f, sigma=True), "dit": tp.build_dit_pipeline}
    root = tmp_path_factory.mktemp("tiny-transformers")

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, name: str) -> Path:
            self[name] = builders[name](root / name)
            return self[name]

    return Lazy()
