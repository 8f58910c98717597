"""The bare-UNet family: a pixel ``UNet2DModel`` (DDPM/DDIM; diffusers' ``DDPMPipeline``), or a
``UNet2DConditionModel`` exported without its text encoders and fed raw ``encoder_hidden_states`` (``--cond``).

No text encoder, no VAE: the scheduler's samples are the images (``x / 2 + 0.5``). A folder without ``scheduler/``
samples with the scheduler the architecture was trained with (DDPM for a pixel UNet, Stable Diffusion 1.5's PNDM
for a conditional one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.families.family import Family

# The schedulers these models were trained with (diffusers scheduler configs, without their class).
DDPM_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "variance_type": "fixed_large",
    "clip_sample": True,
    "prediction_type": "epsilon",
}
SD15_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,  # as Stable Diffusion 1.5's scheduler_config.json: PLMS steps only (no Runge-Kutta warm-up)
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
#: Layers a UNet keeps float by default (measured on the reference model: docs/quantization.md): the first and
#: the last convolution.
UNET_KEEP_FLOAT: tuple[str, ...] = ("*/conv_in/*", "*/conv_out/*")
#: Inputs of an SDXL-type UNet (``addition_embed_type`` "text_time") that only its text encoders give.
TEXT_TIME_INPUTS = ("text_embeds", "time_ids")


def default_scheduler(denoiser_class: str) -> dict[str, Any]:
    """DDPM for a pixel ``UNet2DModel``, Stable Diffusion 1.5's PNDM for a ``UNet2DConditionModel``."""
    if denoiser_class == "UNet2DModel":
        return {"_class_name": "DDPMScheduler", **DDPM_SCHEDULER}
    return {"_class_name": "PNDMScheduler", **SD15_SCHEDULER}


def raw_conditioning(inputs: Mapping[str, dict]) -> str:
    """``--cond`` embeddings drive a conditional UNet, unless it also takes SDXL's pooled embedding and size ids."""
    added = [name for name in TEXT_TIME_INPUTS if name in inputs]
    if added:
        return (f"the UNet also takes {' and '.join(added)} (SDXL's added conditions), which only its text encoders "
                "give: export the whole SDXL pipeline folder and give --prompt/--prompts")
    return ""


FAMILY = Family(
    name="ddpm",
    description="a bare diffusers UNet: pixel UNet2DModel, or UNet2DConditionModel fed raw embeddings",
    pipeline_classes=("DDPMPipeline", "DDIMPipeline"),
    denoiser_folder="unet",
    denoiser_classes=("UNet2DModel", "UNet2DConditionModel"),
    text_encoders=(),
    keep_float=UNET_KEEP_FLOAT,
    default_scheduler=default_scheduler,
    raw_conditioning=raw_conditioning,
)
