"""Prompts (or class labels) -> denoiser conditioning for the transformer families, as diffusers' pipelines build it.

- SD3 (``StableDiffusion3Pipeline.encode_prompt``): CLIP-L and CLIP-G penultimate hidden states concatenated along
  features, zero-padded to T5's width, T5's tokens appended along the sequence (zeros when the pipeline has no T5);
  the two pooled projections concatenated as ``pooled_projections``; the negative prompt ("" by default) is the
  unconditional row at guidance scale > 1.
- FLUX (``FluxPipeline``): T5's hidden states as ``encoder_hidden_states``, CLIP's ``pooler_output`` as
  ``pooled_projections``, the guidance scale as ``guidance`` (one value per row: dev-type models embed it;
  ``AdaptedDenoiser`` drops it for schnell-type graphs); no unconditional row, except in true-CFG mode (a negative
  prompt and ``true_cfg_scale`` > 1).
- PixArt: T5 with its attention mask; the mask goes to the denoiser as ``encoder_attention_mask``; the resolution
  (H, W) in pixels and the aspect ratio H/W as added conditions (dropped by ``AdaptedDenoiser`` for a model
  without them); the negative prompt "" by default.
- DiT: the class labels as ``class_labels`` rows, the null class for the unconditional row; a zero placeholder for
  the text rows (DiT's graph has no text input, ``AdaptedDenoiser`` drops it).
"""

from __future__ import annotations

import numpy as np

from common.errors import UserError
from pipelines.conditioning import Conditioning
from pipelines.prompt_encoder import PromptEmbeddings, PromptEncoder
from pipelines.tokenizers import tokenize


def _guided(scale: float) -> bool:
    return scale > 1.0


def sd3_embeddings(encoder: PromptEncoder, prompts: list[str], t5_shape: tuple[int, int]) -> PromptEmbeddings:
    """SD3's ``prompt_embeds`` N×(L_clip + L_t5)×D and ``pooled_prompt_embeds`` N×(P_l + P_g). ``encoder`` holds
    CLIP-L, CLIP-G and optionally T5, in that order; ``t5_shape`` = (L_t5, D): T5's tokens and width (zeros of this
    shape stand for an absent T5)."""
    encoded = encoder.encode_each(prompts)
    clip_l, clip_g = encoded[0], encoded[1]
    clip = np.concatenate([clip_l.hidden, clip_g.hidden], axis=-1)
    length, width = t5_shape
    if clip.shape[-1] > width:
        raise UserError(f"the CLIP hidden states ({clip.shape[-1]} wide) do not fit the denoiser's text width {width}")
    clip = np.pad(clip, ((0, 0), (0, 0), (0, width - clip.shape[-1])))
    t5 = encoded[2].hidden if len(encoded) > 2 else np.zeros((len(prompts), length, width), np.float32)
    assert clip_l.pooled is not None and clip_g.pooled is not None
    return PromptEmbeddings(np.concatenate([clip, t5], axis=1).astype(np.float32),
                            np.concatenate([clip_l.pooled, clip_g.pooled], axis=-1))


def sd3_conditioning(encoder: PromptEncoder, prompts: list[str], negative_prompt: str | None,
                     guidance_scale: float, t5_shape: tuple[int, int]) -> Conditioning:
    """SD3's conditioning (see the module docstring)."""
    if not prompts:
        raise UserError("no prompt given")
    pos = sd3_embeddings(encoder, prompts, t5_shape)
    if not _guided(guidance_scale):
        return Conditioning(pos.hidden, None, guidance_scale, {"pooled_projections": pos.pooled})
    neg = sd3_embeddings(encoder, [negative_prompt or ""], t5_shape)
    return Conditioning(pos.hidden, neg.hidden, guidance_scale, {"pooled_projections": pos.pooled},
                        {"pooled_projections": neg.pooled})


def flux_embeddings(encoder: PromptEncoder, prompts: list[str]) -> PromptEmbeddings:
    """FLUX's T5 hidden states N×L×D and CLIP pooled output N×P; ``encoder`` holds CLIP then T5."""
    clip, t5 = encoder.encode_each(prompts)
    assert clip.pooled is not None
    return PromptEmbeddings(t5.hidden, clip.pooled)


def flux_conditioning(encoder: PromptEncoder, prompts: list[str], guidance_scale: float,
                      negative_prompt: str | None = None, true_cfg_scale: float = 1.0) -> Conditioning:
    """FLUX's conditioning: one row per image, ``guidance_scale`` as its ``guidance``; with a negative prompt and
    ``true_cfg_scale`` > 1 (FluxPipeline's true CFG), the negative prompt's row as the unconditional one."""
    if not prompts:
        raise UserError("no prompt given")
    pos = flux_embeddings(encoder, prompts)
    guidance = np.asarray([guidance_scale], np.float32)
    added = {"pooled_projections": pos.pooled, "guidance": guidance}
    if negative_prompt is None or not _guided(true_cfg_scale):
        return Conditioning(pos.hidden, None, 1.0, added)
    neg = flux_embeddings(encoder, [negative_prompt])
    return Conditioning(pos.hidden, neg.hidden, true_cfg_scale, added,
                        {"pooled_projections": neg.pooled, "guidance": guidance})


def _t5_with_mask(encoder: PromptEncoder, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """PixArt's T5 states N×L×D and attention mask N×L (float32, 1 token / 0 padding)."""
    spec, sess, tok = encoder.specs[0], encoder.sessions[0], encoder.tokenizers[0]
    ids = tokenize(tok, prompts, spec.sequence_length)
    mask = np.asarray(tok(prompts, padding="max_length", max_length=spec.sequence_length, truncation=True)
                      .attention_mask, np.int64)
    hidden = sess.run({"input_ids": ids, "attention_mask": mask})[spec.hidden_output]
    return hidden.astype(np.float32, copy=False), mask.astype(np.float32)


def pixart_conditioning(encoder: PromptEncoder, prompts: list[str], negative_prompt: str | None,
                        guidance_scale: float, image_size: tuple[int, int]) -> Conditioning:
    """PixArt-α/Σ's conditioning (see the module docstring); ``image_size`` (H, W) in pixels."""
    if not prompts:
        raise UserError("no prompt given")
    h, w = image_size
    sizes = {"resolution": np.asarray([[h, w]], np.float32), "aspect_ratio": np.asarray([[h / w]], np.float32)}
    hidden, mask = _t5_with_mask(encoder, prompts)
    added = {"encoder_attention_mask": mask, **sizes}
    if not _guided(guidance_scale):
        return Conditioning(hidden, None, guidance_scale, added)
    neg_hidden, neg_mask = _t5_with_mask(encoder, [negative_prompt or ""])
    return Conditioning(hidden, neg_hidden, guidance_scale, added, {"encoder_attention_mask": neg_mask, **sizes})


def class_conditioning(labels: list[int], num_classes: int, guidance_scale: float) -> Conditioning:
    """DiT's conditioning: ``labels`` (one per image, 0 <= label < ``num_classes``) and the null class
    ``num_classes`` as the unconditional row at guidance scale > 1."""
    if not labels:
        raise UserError("no --class-labels given")
    bad = [k for k in labels if not 0 <= k < num_classes]
    if bad:
        raise UserError(f"--class-labels {bad}: the model has classes 0..{num_classes - 1}")
    rows = np.zeros((len(labels), 1, 1), np.float32)  # no text: a placeholder the denoiser adapter drops
    added = {"class_labels": np.asarray(labels, np.float32)}
    if not _guided(guidance_scale):
        return Conditioning(rows, None, guidance_scale, added)
    return Conditioning(rows, rows[:1], guidance_scale, added, {"class_labels": np.asarray([num_classes], np.float32)})
