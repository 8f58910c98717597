"""Prompts -> conditioning of a CLIP-conditioned UNet (SD 1.x/2.x, SDXL), as diffusers' pipelines build it.

The encoders' hidden states concatenated along the feature axis (SDXL: both encoders' penultimate states); the
negative prompt (the empty prompt by default; zeros with ``force_zeros_for_empty_prompt`` and no negative prompt) is
the unconditional row; no unconditional row at guidance scale <= 1. A family adds its own per-image inputs
(``AddedConditions``: SDXL's pooled embedding and size ids).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from common.errors import UserError
from pipelines.conditioning import Conditioning
from pipelines.families.family import PromptRequest
from pipelines.prompt_encoder import PromptEmbeddings, PromptEncoder

#: (prompt embeddings, unconditional embeddings or None, image size (H, W) in pixels) -> (added, added_uncond):
#: the denoiser's further inputs by name, rows like the embeddings.
AddedConditions = Callable[[PromptEmbeddings, PromptEmbeddings | None, tuple[int, int]],
                           tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]


def concatenated(encoded: list[PromptEmbeddings]) -> PromptEmbeddings:
    """Hidden states of every encoder concatenated along the last axis; the first pooled output (diffusers)."""
    pooled = next((e.pooled for e in encoded if e.pooled is not None), None)
    return PromptEmbeddings(np.concatenate([e.hidden for e in encoded], axis=-1), pooled)


def no_added(pos: PromptEmbeddings, uncond: PromptEmbeddings | None,
             image_size: tuple[int, int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """SD 1.x/2.x: the UNet takes the text embeddings only."""
    return {}, {}


def unet_prompt_conditioning(added: AddedConditions) -> Callable[[PromptEncoder, PromptRequest], Conditioning]:
    """The family's prompt conditioner, with ``added`` giving its further UNet inputs."""

    def condition(encoder: PromptEncoder, request: PromptRequest) -> Conditioning:
        if not request.prompts:
            raise UserError("no prompt given")
        pos = concatenated(encoder.encode_each(list(request.prompts)))
        uncond: PromptEmbeddings | None = None
        if request.guidance_scale > 1.0:
            if request.negative_prompt is None and request.force_zeros_for_empty_prompt:
                uncond = PromptEmbeddings(np.zeros_like(pos.hidden[:1]),
                                          None if pos.pooled is None else np.zeros_like(pos.pooled[:1]))
            else:
                uncond = concatenated(encoder.encode_each([request.negative_prompt or ""]))
        extra, extra_uncond = added(pos, uncond, request.image_size)
        return Conditioning(pos.hidden, None if uncond is None else uncond.hidden, request.guidance_scale, extra,
                            extra_uncond)

    return condition
