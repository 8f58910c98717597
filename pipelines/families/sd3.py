"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): CLIP-L and CLIP-G with projections, T5 (optional, as
diffusers allows ``text_encoder_3=None``), ``SD3Transformer2DModel`` (MMDiT), VAE with shift factor,
FlowMatchEulerDiscreteScheduler with its shift.

Conditioning as diffusers' pipeline (pipelines/families/transformer_prompts.py): CLIP penultimate states
concatenated and padded to T5's width, T5's 256 tokens appended (zeros without T5); pooled projections concatenated.
Kept float by default, as ModelOpt's SD3 filter: the time-step and text embedders, ``context_embedder``,
``pos_embed``, ``norm_out``, ``proj_out``.
"""

from __future__ import annotations

from pipelines.conditioning import Conditioning
from pipelines.families.family import LAST_HIDDEN, PENULTIMATE_HIDDEN, Family, PromptRequest, TextEncoderSlot
from pipelines.families.flow_defaults import flow_scheduler_config, needs_text_encoders
from pipelines.families.transformer_parts import EncoderPlan, TransformerParts
from pipelines.families.transformer_prompts import sd3_conditioning
from pipelines.prompt_encoder import PromptEncoder

T5_LENGTH = 256  # StableDiffusion3Pipeline's max_sequence_length default
KEEP_FLOAT = ("*/time_text_embed/*", "*/context_embedder/*", "*/pos_embed/*", "*/norm_out/*", "*/proj_out/*")


def sd3_prompts(encoder: PromptEncoder, request: PromptRequest) -> Conditioning:
    """SD3's conditioning; T5's share of the denoiser's text tokens and its width come from the export shapes."""
    _, length, width = request.denoiser_inputs["encoder_hidden_states"]["shape"]
    t5_len = int(length) - encoder.specs[0].sequence_length
    return sd3_conditioning(encoder, list(request.prompts), request.negative_prompt, request.guidance_scale,
                            (t5_len, int(width)))


FAMILY = Family(
    name="sd3",
    description="Stable Diffusion 3/3.5: CLIP-L, CLIP-G, T5 (optional), SD3Transformer2DModel (MMDiT), flow matching",
    pipeline_classes=("StableDiffusion3Pipeline",),
    denoiser_folder="transformer",
    denoiser_classes=("SD3Transformer2DModel",),
    text_encoders=(TextEncoderSlot("text_encoder", "tokenizer", PENULTIMATE_HIDDEN),
                   TextEncoderSlot("text_encoder_2", "tokenizer_2", PENULTIMATE_HIDDEN),
                   TextEncoderSlot("text_encoder_3", "tokenizer_3", LAST_HIDDEN)),
    keep_float=KEEP_FLOAT,
    default_scheduler=flow_scheduler_config,
    prompt_conditioning=sd3_prompts,
    raw_conditioning=needs_text_encoders,
    transformer=TransformerParts(
        "sd3", (EncoderPlan("text_encoder", "clip", PENULTIMATE_HIDDEN, "text_embeds"),
                EncoderPlan("text_encoder_2", "clip", PENULTIMATE_HIDDEN, "text_embeds"),
                EncoderPlan("text_encoder_3", "t5", LAST_HIDDEN)),
        T5_LENGTH, flow=(False, False, 1.16)),
)
