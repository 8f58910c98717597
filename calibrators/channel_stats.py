"""Per-channel abs-max of chosen activations over calibration samples (SmoothQuant's activation statistic).

SmoothQuant (Xiao et al. 2023, and NVIDIA ModelOpt's ``smoothquant`` calibration in
``modelopt/torch/quantization/model_calib.py``) needs, for the activation input X of each linear layer, the abs-max
of every input channel j over all calibration data: ``max |X_j|``. The input channel of a MatMul/Gemm activation is
its last axis (the reduction axis K), so every axis but the last is reduced.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from calibrators.graph_taps import batch_samples, tapped_session
from calibrators.sample import CalibSample
from common.errors import UserError


def channel_absmax(model: onnx.ModelProto, scratch_dir: Path, samples: list[CalibSample], tensors: list[str],
                   batch_rows: int = 32, threads: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """Tensor name -> float64 (K,) abs-max of each last-axis channel over every sample (K: the tensor's last
    dimension), from one pass of ``model`` (tapped for ``tensors``) over ``samples``."""
    out: dict[str, np.ndarray] = {}
    if not tensors:
        return out
    if not samples:
        raise UserError("per-channel statistics need calibration samples; none were given")
    bar = tqdm(total=len(samples), desc="per-channel abs-max", file=sys.stderr, disable=not progress, mininterval=2)
    with tapped_session(model, tensors, scratch_dir, threads=threads) as sess:
        for feeds, _ in batch_samples(samples, batch_rows):
            outs = sess.run(feeds)
            for name in tensors:
                x = np.abs(np.asarray(outs[name], dtype=np.float64))
                amax = x.reshape(-1, x.shape[-1]).max(axis=0)
                out[name] = amax if name not in out else np.maximum(out[name], amax)
            bar.update(len(feeds["sample"]) // samples[0].x.shape[0])
    bar.close()
    return out
