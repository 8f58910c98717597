"""Fréchet Inception distance features from a LOCAL ONNX Inception feature extractor (never downloaded).

The file must take ``N×3×H×W`` float32 images in [0, 1] (any size its graph accepts; images are resized to the
graph's input size when it is static) and return ``N×D`` features (D = 2048 for the usual pool3 layer). Export
your own from the reference FID network, e.g. with ``torch.onnx.export`` of the pool3 extractor. Running it
through ONNX Runtime keeps user files out of pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import UserError
from engines.ort_session import OrtSession


def inception_features(path: Path, images: np.ndarray) -> np.ndarray:
    """N×D float64 features of N×C×H×W images in [0, 1] (1-channel images are repeated to 3 channels)."""
    if not Path(path).is_file():
        raise UserError(f"--inception-onnx file '{path}' does not exist")
    x = images.astype(np.float32)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    with OrtSession(path) as sess:
        spec = sess.session.get_inputs()[0]
        size = spec.shape[2:]
        if all(isinstance(s, int) for s in size) and tuple(size) != x.shape[2:]:
            from scipy.ndimage import zoom

            x = zoom(x, (1, 1, size[0] / x.shape[2], size[1] / x.shape[3]), order=1).astype(np.float32)
        feats = [sess.session.run(None, {spec.name: x[i : i + 16]})[0] for i in range(0, len(x), 16)]
    out = np.concatenate(feats).reshape(len(x), -1).astype(np.float64)
    if out.shape[1] < 2:
        raise UserError(f"--inception-onnx '{path}' returns {out.shape[1]} feature(s); expected N×D features")
    return out
