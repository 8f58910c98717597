"""Stable Diffusion XL (``StableDiffusionXLPipeline``): two CLIP text encoders, ``UNet2DConditionModel`` with
added conditions, VAE.

As diffusers' pipeline: the penultimate hidden states of both encoders concatenated; the second encoder's pooled
projection (``text_embeds`` N×P) and the size ids ``(H, W, 0, 0, H, W)`` (``time_ids`` N×6, the same for both halves)
as the UNet's added conditions; with ``force_zeros_for_empty_prompt`` (SDXL's default) and no negative prompt, zero
embeddings for the unconditional half.
"""

from __future__ import annotations

import numpy as np

from pipelines.families import ddpm
from pipelines.families.family import PENULTIMATE_HIDDEN, Family, TextEncoderSlot
from pipelines.families.unet_prompts import unet_prompt_conditioning
from pipelines.prompt_encoder import PromptEmbeddings


def text_time(pos: PromptEmbeddings, uncond: PromptEmbeddings | None,
              image_size: tuple[int, int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """SDXL's added conditions: pooled prompt embedding and size ids, for each half."""
    h, w = image_size
    time_ids = np.asarray([[h, w, 0, 0, h, w]], dtype=np.float32)
    assert pos.pooled is not None
    added = {"text_embeds": pos.pooled, "time_ids": time_ids}
    if uncond is None:
        return added, {}
    assert uncond.pooled is not None
    return added, {"text_embeds": uncond.pooled, "time_ids": time_ids}


FAMILY = Family(
    name="sdxl",
    description="Stable Diffusion XL: two CLIP text encoders, UNet2DConditionModel with text_time conditions, VAE",
    pipeline_classes=("StableDiffusionXLPipeline",),
    denoiser_folder="unet",
    denoiser_classes=("UNet2DConditionModel",),
    text_encoders=(TextEncoderSlot("text_encoder", "tokenizer", PENULTIMATE_HIDDEN),
                   TextEncoderSlot("text_encoder_2", "tokenizer_2", PENULTIMATE_HIDDEN)),
    keep_float=ddpm.UNET_KEEP_FLOAT,
    default_scheduler=ddpm.default_scheduler,
    prompt_conditioning=unet_prompt_conditioning(text_time),
    raw_conditioning=ddpm.raw_conditioning,
    force_zeros=True,
)
