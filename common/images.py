"""Image grids: N×C×H×W arrays in [0, 1] to one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from common.atomic import atomic_path


def grid_uint8(images: np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile N×C×H×W images in [0, 1] into an H'×W'(×3) uint8 array; C=1 gives grey, C>=3 shows the first three."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    ch = 1 if c < 3 else 3
    grid = np.zeros((nrows * (h + pad) + pad, ncol * (w + pad) + pad, ch), dtype=np.uint8)
    u8 = (np.clip(images[:, :ch], 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = u8[i]
    return grid[..., 0] if ch == 1 else grid


def save_grid(images: np.ndarray, path: Path, nrow: int = 8) -> None:
    """Write N×C×H×W images in [0, 1] as one PNG grid (atomically)."""
    from PIL import Image

    with atomic_path(Path(path)) as tmp:
        Image.fromarray(grid_uint8(images, nrow)).save(tmp, format="PNG")
