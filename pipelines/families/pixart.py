"""PixArt-α and PixArt-Σ (``PixArtAlphaPipeline``, ``PixArtSigmaPipeline``): T5 with its attention mask,
``PixArtTransformer2DModel`` with adaLN-single, the resolution and aspect-ratio conditions when the model uses them
(α at 1024 px), learned sigma (the first half of the output channels is the prediction), VAE, DPM-Solver.

T5 tokens: α's pipeline default is 120, Σ's 300 (the pipelines' ``max_sequence_length``); the folder's own pipeline
class decides, ``export --cond-len`` overrides. Kept float by default, as ModelOpt's filters for DiT-type models:
the time-step embedder (``adaln_single``), the text embedder (``caption_projection``), ``pos_embed``, ``proj_out``.
"""

from __future__ import annotations

from pipelines.conditioning import Conditioning
from pipelines.families.family import LAST_HIDDEN, Family, PromptRequest, TextEncoderSlot
from pipelines.families.flow_defaults import ddpm_scheduler_config, needs_text_encoders
from pipelines.families.transformer_parts import EncoderPlan, TransformerParts, learned_sigma_feeds
from pipelines.families.transformer_prompts import pixart_conditioning
from pipelines.prompt_encoder import PromptEncoder

T5_LENGTH = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}
KEEP_FLOAT = ("*/adaln_single/*", "*/caption_projection/*", "*/pos_embed/*", "*/norm_out/*", "*/proj_out/*")


def pixart_prompts(encoder: PromptEncoder, request: PromptRequest) -> Conditioning:
    """PixArt's conditioning: T5 states and mask; the image size as resolution and aspect ratio."""
    return pixart_conditioning(encoder, list(request.prompts), request.negative_prompt, request.guidance_scale,
                               request.image_size)


FAMILY = Family(
    name="pixart",
    description="PixArt-α/Σ: T5 with mask, PixArtTransformer2DModel (adaLN-single, learned sigma), DPM-Solver",
    pipeline_classes=tuple(T5_LENGTH),
    denoiser_folder="transformer",
    denoiser_classes=("PixArtTransformer2DModel",),
    text_encoders=(TextEncoderSlot("text_encoder", "tokenizer", LAST_HIDDEN),),
    keep_float=KEEP_FLOAT,
    default_scheduler=ddpm_scheduler_config,
    prompt_conditioning=pixart_prompts,
    raw_conditioning=needs_text_encoders,
    transformer=TransformerParts("pixart", (EncoderPlan("text_encoder", "t5", LAST_HIDDEN, attention_mask=True),),
                                 T5_LENGTH["PixArtAlphaPipeline"], feeds=learned_sigma_feeds),
)
