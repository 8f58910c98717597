"""What a transformer family (SD3, FLUX, PixArt, DiT) states beyond a UNet family's fields, as data.

``TransformerParts`` is the ``transformer`` field of a ``Family``: the denoiser's export kind
(exporter/transformer_export.py), how each text encoder is exported (exporter/text_encoders.py), T5's default token
count (diffusers' ``max_sequence_length`` default of the pipeline), the flow-matching set-up, and the feeds its
denoiser takes beyond the conditioning rows, from the export.json ``inputs`` (pipelines/denoiser_adapter.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.denoiser_adapter import DenoiserFeeds
from pipelines.flux_latents import latent_image_ids, pack_latents, text_ids, unpack_latents


@dataclass(frozen=True)
class EncoderPlan:
    """How one text encoder (by its folder name) is exported: kind ``clip`` or ``t5``, the output the denoiser
    takes as hidden states and as pooled embedding, whether T5 gets the attention mask (PixArt)."""

    encoder: str
    kind: str
    hidden_output: str
    pooled_output: str | None = None
    attention_mask: bool = False


def no_feeds(inputs: Mapping[str, Any]) -> DenoiserFeeds:
    """Feeds of a denoiser that takes only the conditioning rows."""
    return DenoiserFeeds()


def learned_sigma_feeds(inputs: Mapping[str, Any]) -> DenoiserFeeds:
    """PixArt, DiT: a denoiser with twice the latent channels out keeps the first half (learned sigma)."""
    return DenoiserFeeds(keep_channels=int(inputs["sample"]["shape"][1]))


def flux_feeds(inputs: Mapping[str, Any]) -> DenoiserFeeds:
    """FLUX: ``txt_ids`` and ``img_ids`` of the exported shapes (a square token grid)."""
    tokens = int(inputs["img_ids"]["shape"][0])
    side = int(round(np.sqrt(tokens)))
    return DenoiserFeeds(fixed={"txt_ids": text_ids(int(inputs["txt_ids"]["shape"][0])),
                                "img_ids": latent_image_ids(side, tokens // side)})


@dataclass(frozen=True)
class TransformerParts:
    """See the module docstring. ``flow``: None for a DDPM-type scheduler; else (FLUX's explicit sigmas, ``mu``
    always) and the pipeline's default ``max_shift``."""

    kind: str
    encoders: tuple[EncoderPlan, ...]
    t5_length: int | None
    feeds: Callable[[Mapping[str, Any]], DenoiserFeeds] = no_feeds
    flow: tuple[bool, bool, float] | None = None


def square_unpack(packed: np.ndarray) -> np.ndarray:
    """FLUX's packed N×tokens×C·4 latents -> N×C×h×w, for a square token grid (the exported image size)."""
    side = int(round(np.sqrt(packed.shape[1])))
    if side * side != packed.shape[1]:
        raise ValueError(f"packed latents with {packed.shape[1]} tokens are not a square grid")
    return unpack_latents(packed, (2 * side, 2 * side))


__all__ = ["EncoderPlan", "TransformerParts", "flux_feeds", "learned_sigma_feeds", "no_feeds", "pack_latents",
           "square_unpack"]
