"""FLUX.1 (``FluxPipeline``): CLIP (pooled) + T5, ``FluxTransformer2DModel`` on 2×2-packed latents with RoPE
position ids, the guidance embedding of dev-type models (none for schnell-type), VAE with shift factor, flow
matching with FLUX's resolution-dependent shift ``mu``.

No unconditional row: ``--guidance-scale`` feeds the guidance embedding (a ``guidance`` row per image). The scheduler steps on the packed latents (FluxPipeline's ``latents=`` layout, N×tokens×C·4);
the VAE decoder gets them unpacked. Kept float by default, as ModelOpt's FLUX filter: ``proj_out``,
``time_text_embed`` (time step, guidance and pooled-text embedders), ``context_embedder``, ``x_embedder``,
``norm_out``.
"""

from __future__ import annotations

from typing import Any

from pipelines.conditioning import Conditioning
from pipelines.families.family import LAST_HIDDEN, Family, PromptRequest, TextEncoderSlot
from pipelines.families.flow_defaults import needs_text_encoders
from pipelines.families.transformer_parts import (EncoderPlan, TransformerParts, flux_feeds, pack_latents,
                                                  square_unpack)
from pipelines.families.transformer_prompts import flux_conditioning
from pipelines.prompt_encoder import PromptEncoder

T5_LENGTH = 512  # FluxPipeline's max_sequence_length default
KEEP_FLOAT = ("*/proj_out/*", "*/time_text_embed/*", "*/context_embedder/*", "*/x_embedder/*", "*/norm_out/*")


def flux_prompts(encoder: PromptEncoder, request: PromptRequest) -> Conditioning:
    """FLUX's conditioning: no unconditional row (the guidance scale goes to the guidance embedding)."""
    return flux_conditioning(encoder, list(request.prompts), request.guidance_scale)


def flux_scheduler_config(denoiser_class: str) -> dict[str, Any]:
    """FLUX.1-dev's scheduler (dynamic shifting) for a folder without ``scheduler/``."""
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
            "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
            "max_image_seq_len": 4096}


FAMILY = Family(
    name="flux",
    description="FLUX.1: CLIP pooled + T5, FluxTransformer2DModel on packed latents, guidance embedding (dev)",
    pipeline_classes=("FluxPipeline",),
    denoiser_folder="transformer",
    denoiser_classes=("FluxTransformer2DModel",),
    text_encoders=(TextEncoderSlot("text_encoder", "tokenizer", LAST_HIDDEN),
                   TextEncoderSlot("text_encoder_2", "tokenizer_2", LAST_HIDDEN)),
    keep_float=KEEP_FLOAT,
    default_scheduler=flux_scheduler_config,
    prompt_conditioning=flux_prompts,
    raw_conditioning=needs_text_encoders,
    pack_latents=pack_latents,
    unpack_latents=square_unpack,
    transformer=TransformerParts(
        "flux", (EncoderPlan("text_encoder", "clip", LAST_HIDDEN, "pooler_output"),
                 EncoderPlan("text_encoder_2", "t5", LAST_HIDDEN)),
        T5_LENGTH, feeds=flux_feeds, flow=(True, True, 1.15)),
)
