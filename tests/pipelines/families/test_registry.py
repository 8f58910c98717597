"""The one family lookup: by name, from a pipeline folder's class or structure, and from old export.json files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from common.workdir import WorkDir
from pipelines.families import ddpm, sd, sdxl
from pipelines.families.registry import FAMILIES, family_for_pipeline, family_named, family_of


def test_every_family_is_found_by_its_name_and_names_are_unique() -> None:
    assert [family_named(f.name) for f in FAMILIES] == list(FAMILIES)
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    with pytest.raises(UserError, match="unknown model family 'flux9' .*ddpm, sd, sdxl"):
        family_named("flux9")


@pytest.mark.parametrize("cls, listed, expected", [
    ("StableDiffusionPipeline", ["unet", "vae", "text_encoder", "tokenizer"], sd.FAMILY),
    ("StableDiffusionXLPipeline", ["unet", "vae", "text_encoder", "text_encoder_2"], sdxl.FAMILY),
    ("DDPMPipeline", ["unet", "scheduler"], ddpm.FAMILY),
    # classes no family names: by structure, the family whose text encoders are all listed (the most of them)
    ("StableDiffusionXLImg2ImgPipeline", ["unet", "vae", "text_encoder", "text_encoder_2"], sdxl.FAMILY),
    ("MyCommunityPipeline", ["unet", "vae", "text_encoder"], sd.FAMILY),
    ("", ["unet"], ddpm.FAMILY),
])
def test_pipeline_folder_family(cls: str, listed: list[str], expected: object) -> None:
    assert family_for_pipeline(cls, listed) is expected


def test_the_bundled_models_and_tiny_pipelines_export_their_family(tiny_work: Path, tiny_sd_work: Path,
                                                                   tiny_sdxl_work: Path) -> None:
    for work, name in ((tiny_work, "ddpm"), (tiny_sd_work, "sd"), (tiny_sdxl_work, "sdxl")):
        info = WorkDir(work).load_export_info()
        assert info["family"] == name and family_of(info).name == name


def test_folders_exported_before_families_keep_loading(tiny_sd_work: Path, tiny_sdxl_work: Path,
                                                       tiny_work: Path) -> None:
    """Old export.json files hold no ``family``: SDXL's flag, else text encoders, else bare — inferred once."""
    for work, legacy_t2i, name in ((tiny_sd_work, {"sdxl": False}, "sd"), (tiny_sdxl_work, {"sdxl": True}, "sdxl"),
                                   (tiny_work, None, "ddpm")):
        info = json.loads((work / "export.json").read_text())
        del info["family"]
        if legacy_t2i is not None:
            info["text_to_image"].update(legacy_t2i)
        assert family_of(info).name == name


def test_families_state_what_the_stages_ask() -> None:
    """The UNet families keep conv_in/conv_out float; only text-to-image families take prompts; SDXL's added
    conditions refuse raw embeddings, a bare conditional UNet takes them."""
    for family in (ddpm.FAMILY, sd.FAMILY, sdxl.FAMILY):
        assert family.keep_float == ("*/conv_in/*", "*/conv_out/*")
        x = object()
        assert family.pack_latents(x) is x and family.unpack_latents(x) is x  # type: ignore[arg-type]
    assert not ddpm.FAMILY.text_to_image and sd.FAMILY.text_to_image and sdxl.FAMILY.text_to_image
    assert [s.hidden_output for s in sdxl.FAMILY.text_encoders] == ["penultimate_hidden_state"] * 2
    assert sd.FAMILY.text_encoders[0].hidden_output == "last_hidden_state"
    cond = {"encoder_hidden_states": {"shape": ["batch", 5, 12]}}
    assert ddpm.FAMILY.raw_conditioning(cond) == ""
    assert "text_embeds and time_ids" in ddpm.FAMILY.raw_conditioning({**cond, "text_embeds": {}, "time_ids": {}})
    assert ddpm.FAMILY.default_scheduler("UNet2DModel")["_class_name"] == "DDPMScheduler"
    assert ddpm.FAMILY.default_scheduler("UNet2DConditionModel")["_class_name"] == "PNDMScheduler"
