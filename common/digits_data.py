"""The training images of the bundled digit models: scikit-learn's 8x8 digits (no download), upsampled."""

from __future__ import annotations

import numpy as np

from common.lazy import lazy_import


def digits_dataset(size: int = 32) -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (1797 images), bilinearly upsampled to ``size``; float32 N×1×size×size in [-1, 1]."""
    from sklearn.datasets import load_digits

    torch = lazy_import("torch")
    images = load_digits().images.astype(np.float32) / 16.0  # N×8×8 in [0, 1]
    x = torch.from_numpy(images)[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).numpy()


def digits_labels() -> np.ndarray:
    """The digit (0..9) of each image of :func:`digits_dataset`, same order; int64 array of length N."""
    from sklearn.datasets import load_digits

    return load_digits().target.astype(np.int64)
