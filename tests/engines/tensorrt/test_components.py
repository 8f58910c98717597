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


@pytest.mark.gpu
def test_build_writes_one_engine_per_component(tiny_sd_work: Path, tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tiny_sd_work, work)
    assert run_cli("build", work, "--precision", "fp16", "--max-batch", 4) == 0
    for name in ("model", "text_encoder", "vae_decoder"):
        plan = work / f"{name}.fp16.plan"
        assert plan.is_file() and (work / f"{name}.fp16.plan.json").is_file()
    assert run_cli("sample", work, "--precision", "fp16", "--backend", "trt", "--prompt", "a photo of 3",
                   "--num", 2, "--steps", 3, "--out", work / "s.png") == 0
