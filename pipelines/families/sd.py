"""Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``): one CLIP text encoder, ``UNet2DConditionModel``, VAE.

As diffusers' pipeline: the text encoder's ``last_hidden_state`` for the prompt and for the negative prompt (the
empty prompt by default), both padded to the tokenizer's length, are the UNet's ``encoder_hidden_states``.
"""

from __future__ import annotations

from pipelines.families import ddpm
from pipelines.families.family import LAST_HIDDEN, Family, TextEncoderSlot
from pipelines.families.unet_prompts import no_added, unet_prompt_conditioning

FAMILY = Family(
    name="sd",
    description="Stable Diffusion 1.x/2.x: CLIP text encoder, UNet2DConditionModel, VAE",
    pipeline_classes=("StableDiffusionPipeline",),
    denoiser_folder="unet",
    denoiser_classes=("UNet2DConditionModel",),
    text_encoders=(TextEncoderSlot("text_encoder", "tokenizer", LAST_HIDDEN),),
    keep_float=ddpm.UNET_KEEP_FLOAT,
    default_scheduler=ddpm.default_scheduler,
    prompt_conditioning=unet_prompt_conditioning(no_added),
    raw_conditioning=ddpm.raw_conditioning,
)
