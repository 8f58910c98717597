"""FLUX's latent layout: 2×2 latent patches packed into tokens, and the position ids its RoPE reads.

The same arithmetic as FluxPipeline's ``_pack_latents``, ``_unpack_latents``, ``_prepare_latent_image_ids`` and the
``text_ids`` of ``encode_prompt``, on numpy arrays:
- packed: N×(h/2·w/2)×(C·4), token (i, j) row-major, channels ordered (c, dy, dx);
- ``img_ids``: (h/2·w/2)×3 float32, (0, i, j) per token; ``txt_ids``: L×3 zeros.
The scheduler steps on the packed latents (what FluxPipeline's ``latents=`` takes and ``output_type="latent"``
returns); the VAE decoder gets them unpacked.
"""

from __future__ import annotations

import numpy as np


def pack_latents(latents: np.ndarray) -> np.ndarray:
    """N×C×h×w -> N×(h/2·w/2)×(C·4) (h and w even)."""
    n, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"FLUX packs 2×2 patches: latent height and width must be even, got {h}×{w}")
    x = latents.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(x.reshape(n, (h // 2) * (w // 2), c * 4))


def unpack_latents(packed: np.ndarray, latent_hw: tuple[int, int]) -> np.ndarray:
    """N×(h/2·w/2)×(C·4) -> N×C×h×w, the inverse of ``pack_latents``."""
    n, tokens, channels = packed.shape
    h, w = latent_hw
    if tokens != (h // 2) * (w // 2) or channels % 4:
        raise ValueError(f"packed latents {packed.shape} do not fit {h}×{w} latents")
    x = packed.reshape(n, h // 2, w // 2, channels // 4, 2, 2).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(x.reshape(n, channels // 4, h, w))


def latent_image_ids(rows: int, cols: int) -> np.ndarray:
    """``img_ids`` of a rows×cols token grid (rows = h/2): (rows·cols)×3 float32, (0, i, j) row-major."""
    ids = np.zeros((rows, cols, 3), np.float32)
    ids[..., 1] = np.arange(rows, dtype=np.float32)[:, None]
    ids[..., 2] = np.arange(cols, dtype=np.float32)[None, :]
    return ids.reshape(rows * cols, 3)


def text_ids(length: int) -> np.ndarray:
    """``txt_ids`` of ``length`` text tokens: zeros, length×3 float32."""
    return np.zeros((length, 3), np.float32)
