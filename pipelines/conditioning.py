"""Conditioning of a UNet2DConditionModel: which rows of text embeddings each image of a batch sees.

One rule everywhere (sampling, calibration, validation, sensitivity): image ``i`` is conditioned on row ``i mod R``
of ``cond`` (R rows; one row is shared by every image), and with classifier-free guidance on row ``i mod R'`` of
``uncond``. ``unet_feeds(start, n)`` gives the UNet's conditioning inputs for images ``start .. start+n-1`` — the
unconditional rows first, then the conditional ones, as diffusers' pipelines stack them — so the rows always agree
with the batch of images they are fed with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserError

#: The UNet input that carries the text embeddings (diffusers' name).
HIDDEN_STATES = "encoder_hidden_states"


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning: ``cond`` R×L×D float32 (``encoder_hidden_states``); ``uncond`` R'×L×D for guidance, or None.

    ``added`` / ``added_uncond``: further per-image UNet inputs by name (SDXL's ``text_embeds`` R×1280 and
    ``time_ids`` R×6), rows cycled like ``cond``. ``guidance_scale``: diffusers' w (1.0 or no ``uncond``: no
    guidance, one UNet row per image)."""

    cond: np.ndarray
    uncond: np.ndarray | None = None
    guidance_scale: float = 7.5
    added: Mapping[str, np.ndarray] = field(default_factory=dict)
    added_uncond: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cond.ndim != 3 or self.cond.shape[0] < 1:
            raise ValueError(f"cond must be R×L×D with R >= 1, got shape {self.cond.shape}")
        if self.uncond is not None and (self.uncond.ndim != 3 or self.uncond.shape[1:] != self.cond.shape[1:]):
            raise ValueError(f"uncond shape {self.uncond.shape} does not match cond {self.cond.shape}")
        if self.guided and set(self.added) != set(self.added_uncond):
            raise ValueError(f"added conditions {sorted(self.added)} and their unconditional twins "
                             f"{sorted(self.added_uncond)} differ")

    @property
    def guided(self) -> bool:
        """Classifier-free guidance: two UNet rows (unconditional, conditional) per image."""
        return self.uncond is not None and self.guidance_scale != 1.0

    @property
    def rows(self) -> int:
        """R, the number of distinct conditional rows."""
        return int(self.cond.shape[0])

    def unet_rows(self, images: int) -> int:
        """UNet batch rows for ``images`` images: twice as many with guidance."""
        return 2 * images if self.guided else images

    def subset(self, start: int, n: int) -> Conditioning:
        """The conditioning of images ``start .. start+n-1`` as a conditioning of ``n`` images of its own."""
        return Conditioning(_cycle(self.cond, start, n),
                            None if self.uncond is None else _cycle(self.uncond, start, n), self.guidance_scale,
                            {k: _cycle(v, start, n) for k, v in self.added.items()},
                            {k: _cycle(v, start, n) for k, v in self.added_uncond.items()})

    def unet_feeds(self, start: int, n: int) -> dict[str, np.ndarray]:
        """Conditioning inputs of the UNet for images ``start .. start+n-1``: ``unet_rows(n)`` rows each."""
        feeds = {HIDDEN_STATES: _cycle(self.cond, start, n)}
        feeds.update({k: _cycle(v, start, n) for k, v in self.added.items()})
        if self.guided:
            assert self.uncond is not None
            feeds[HIDDEN_STATES] = np.concatenate([_cycle(self.uncond, start, n), feeds[HIDDEN_STATES]])
            for k, v in self.added_uncond.items():
                feeds[k] = np.concatenate([_cycle(v, start, n), feeds[k]])
        return feeds

    def guide(self, eps: np.ndarray) -> np.ndarray:
        """The guided prediction from the UNet output of ``unet_feeds`` rows: uncond + w·(cond − uncond)."""
        if not self.guided:
            return eps
        n = eps.shape[0] // 2
        uncond_eps, cond_eps = eps[:n], eps[n:]
        return uncond_eps + self.guidance_scale * (cond_eps - uncond_eps)

    def check_rows(self, images: int, what: str) -> None:
        """UserError naming ``what`` (a flag or file) unless it has 1 row or one row per image."""
        if self.rows not in (1, images):
            raise UserError(f"{what} has {self.rows} conditioning rows for {images} images; give 1 row or {images}")


def _cycle(a: np.ndarray, start: int, n: int) -> np.ndarray:
    """Rows ``start .. start+n-1`` of ``a``, indices taken modulo its row count; float32, contiguous."""
    index = np.arange(start, start + n) % a.shape[0]
    return np.ascontiguousarray(a[index], dtype=np.float32)


RANDOM_ROWS = 8  # distinct random "prompts" of a conditional model without given embeddings


def conditioning_for(inputs: Mapping[str, dict], cond: np.ndarray | None = None, uncond: np.ndarray | None = None,
                     guidance_scale: float = 7.5, seed: int = 0) -> Conditioning | None:
    """The conditioning of a model whose export inputs (``export.json`` ``inputs``) are ``inputs``: None for an
    unconditional UNet; the given embeddings (``cond`` R×L×D, ``uncond`` R'×L×D or zeros); without ``cond``,
    ``RANDOM_ROWS`` seeded N(0, 1) rows, as for a random-weight model. The one rule every command uses; whether raw
    embeddings can drive the model at all is its family's to say (``conditioning_inputs.raw_conditioning``)."""
    spec = inputs.get(HIDDEN_STATES)
    if spec is None:
        if cond is not None or uncond is not None:
            raise UserError(f"conditioning given but the model has no {HIDDEN_STATES} input (an unconditional UNet)")
        return None
    _, length, dim = spec["shape"]
    if cond is None:
        cond = np.random.default_rng(seed).standard_normal((RANDOM_ROWS, length, dim)).astype(np.float32)
    if uncond is None:
        uncond = np.zeros((1, length, dim), np.float32)
    return Conditioning(cond.astype(np.float32), uncond.astype(np.float32), guidance_scale)
