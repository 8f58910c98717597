"""What differs between diffusers pipeline families, as data plus small functions (``Family``).

A family states its components and how the text encoders are exported, how prompts become denoiser inputs, the
latent layout between scheduler and denoiser, the scheduler a bare model samples with, and the layers it keeps
float. Every stage asks the work folder's family (``pipelines.families.registry.family_of``) instead of testing
for a family by name. How to add one: docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.conditioning import Conditioning
from pipelines.families.transformer_parts import TransformerParts
from pipelines.prompt_encoder import PromptEncoder

#: Text-encoder outputs the denoiser can take (names of the exported ONNX outputs).
LAST_HIDDEN = "last_hidden_state"
PENULTIMATE_HIDDEN = "penultimate_hidden_state"


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a pipeline folder: its folder and its tokenizer's folder (model_index.json names), and
    which hidden state the denoiser takes (``LAST_HIDDEN`` or ``PENULTIMATE_HIDDEN``)."""

    encoder: str
    tokenizer: str
    hidden_output: str = LAST_HIDDEN


@dataclass(frozen=True)
class PromptRequest:
    """What a prompt-conditioned call asks for: ``prompts`` (one image row each), the negative prompt (None: the
    family's unconditional row), guidance scale w (diffusers' meaning: no guidance at w <= 1), image size (H, W) in
    pixels, and the pipeline's ``force_zeros_for_empty_prompt``."""

    prompts: tuple[str, ...]
    negative_prompt: str | None
    guidance_scale: float
    image_size: tuple[int, int]
    force_zeros_for_empty_prompt: bool
    denoiser_inputs: Mapping[str, Any] = field(default_factory=dict)  # export.json ``inputs`` (SD3 reads T5's shape)


#: (active prompt encoder, request) -> the denoiser's conditioning for those prompts.
PromptConditioner = Callable[[PromptEncoder, PromptRequest], Conditioning]


def identity_latents(latents: np.ndarray) -> np.ndarray:
    """The latent layout of a family whose scheduler and denoiser see the same N×C×h×w array."""
    return latents


def no_prompts(encoder: PromptEncoder, request: PromptRequest) -> Conditioning:
    """The prompt conditioner of a family without text encoders (never called: such work folders take no prompt)."""
    raise AssertionError("this family has no text encoder")


def raw_embeddings_ok(inputs: Mapping[str, dict]) -> str:
    """Default check for ``--cond`` embeddings: "" (accepted) — a family with inputs only its text encoders give
    returns the reason instead."""
    return ""


@dataclass(frozen=True)
class Family:
    """One diffusers pipeline family.

    name: recorded in export.json (``family``); pipeline_classes: model_index.json ``_class_name`` values it
    serves; denoiser_folder / denoiser_classes: where its denoiser lives in a pipeline folder and the diffusers
    classes it may be (a bare model folder holds one directly); text_encoders: in the order the pipeline uses their
    outputs (empty: no text encoder, the folder exports as a bare denoiser); keep_float: fnmatch node-name patterns
    ``quantize`` leaves float unless ``--exclude`` says otherwise; default_scheduler: denoiser class -> scheduler
    config (``_class_name`` included) for a folder that has none; prompt_conditioning: prompts -> denoiser inputs;
    raw_conditioning: "" when ``--cond`` embeddings can drive a denoiser with these export inputs, else why not;
    pack_latents / unpack_latents: scheduler layout <-> N×C×h×w latents (identity for UNets); force_zeros: the
    default of model_index.json's ``force_zeros_for_empty_prompt``; export_tolerance: max relative error of each
    exported component against PyTorch, unless ``export --tolerance`` says otherwise; transformer: the transformer
    families' export kinds, encoder plans, flow-matching set-up and denoiser feeds (None: a UNet family).
    """

    name: str
    description: str
    pipeline_classes: tuple[str, ...]
    denoiser_folder: str
    denoiser_classes: tuple[str, ...]
    text_encoders: tuple[TextEncoderSlot, ...]
    keep_float: tuple[str, ...]
    default_scheduler: Callable[[str], dict[str, Any]]
    prompt_conditioning: PromptConditioner = no_prompts
    raw_conditioning: Callable[[Mapping[str, dict]], str] = raw_embeddings_ok
    pack_latents: Callable[[np.ndarray], np.ndarray] = identity_latents
    unpack_latents: Callable[[np.ndarray], np.ndarray] = identity_latents
    force_zeros: bool = False
    export_tolerance: float = 1e-3
    transformer: TransformerParts | None = None

    @property
    def text_to_image(self) -> bool:
        """True when the family has text encoders (prompt in, image out through a VAE)."""
        return bool(self.text_encoders)
