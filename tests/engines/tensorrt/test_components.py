"""Per-component TensorRT engines of a text-to-image work folder: profiles from export.json (CPU); builds (gpu)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from engines.tensorrt.build import profiles_from_export
from engines.tensorrt.components import component_names, component_plan_path, component_profile
from engines.tensorrt.plan import ShapeRange
from tests.conftest import run_cli
from tests.tiny_pipelines import SEQ_LEN


def _info(work: Path) -> dict:
    return json.loads((work / "export.json").read_text())


def test_text_encoder_batch_doubles_with_guidance_vae_does_not(tiny_sdxl_work: Path) -> None:
    info = _info(tiny_sdxl_work)
    assert component_names(info) == ["text_encoder", "text_encoder_2", "vae_decoder"]
    for name in ("text_encoder", "text_encoder_2"):
        assert component_profile(info, name, 1, 2, 4) == {
            "input_ids": ShapeRange((1, SEQ_LEN), (4, SEQ_LEN), (8, SEQ_LEN))}
    assert component_profile(info, "vae_decoder", 1, 2, 4) == {
        "latents": ShapeRange((1, 4, 8, 8), (2, 4, 8, 8), (4, 4, 8, 8))}
    [unet] = profiles_from_export(info, 1, 2, 4)  # the UNet's added conditions follow its doubled batch
    assert unet["text_embeds"] == ShapeRange((1, 16), (4, 16), (8, 16))
    assert unet["time_ids"] == ShapeRange((1, 6), (4, 6), (8, 6))
    assert component_plan_path(tiny_sdxl_work, "vae_decoder").name == "vae_decoder.fp16.plan"


def test_bad_component_or_range(tiny_sd_work: Path) -> None:
    info = _info(tiny_sd_work)
    with pytest.raises(UserError, match="no component 'text_encoder_2'"):
        component_profile(info, "text_encoder_2")
    with pytest.raises(UserError, match="min <= opt <= max"):
        component_profile(info, "vae_decoder", 4, 2, 8)


def test_unet_work_folder_has_no_components(tiny_work: Path) -> None:
    assert component_names(_info(tiny_work)) == []


# FP16 engines vs the FP32 ONNX models on ONNX Runtime's CPU provider, final images of the same prompt and seed: a
# gate far below FP16 rounding (tens of dB above it) and far above a wrong engine (a broken component: < 15 dB).
MIN_FP16_PSNR = 30.0


@pytest.mark.gpu
def test_build_writes_one_engine_per_component(tiny_sd_work: Path, tmp_path: Path) -> None:
    """One engine per component, each with its own profile (the text encoder's batch doubled for guidance, the VAE
    decoder's not), and the engines make the images the FP32 models make."""
    import shutil

    import numpy as np

    from engines.tensorrt.plan import read_plan_info
    from validation.image_metrics import psnr

    work = tmp_path / "w"
    shutil.copytree(tiny_sd_work, work)
    assert run_cli("build", work, "--precision", "fp16", "--max-batch", 4) == 0
    for name in ("model", "text_encoder", "vae_decoder"):
        plan = work / f"{name}.fp16.plan"
        assert plan.is_file() and (work / f"{name}.fp16.plan.json").is_file()
    text_profile = read_plan_info(work / "text_encoder.fp16.plan").profiles[0]
    vae_profile = read_plan_info(work / "vae_decoder.fp16.plan").profiles[0]
    assert {r.max[0] for r in text_profile.values()} == {8} and {r.max[0] for r in vae_profile.values()} == {4}
    common = ["--prompt", "a photo of 3", "--num", 2, "--steps", 3, "--seed", 1]
    assert run_cli("sample", work, "--precision", "fp16", "--backend", "trt", *common, "--out", work / "s.png") == 0
    assert run_cli("sample", work, "--precision", "fp32", "--backend", "ort", *common, "--out", work / "r.png") == 0
    from PIL import Image

    ours, ref = (np.asarray(Image.open(work / f"{n}.png"), np.float32) / 255 for n in ("s", "r"))
    assert psnr(ours, ref) >= MIN_FP16_PSNR
