"""Per-channel symmetric weight quantization: scales (max or MSE search) and integer codes."""

from __future__ import annotations

import numpy as np

WEIGHT_SCALE_METHODS = ("max", "mse")


def _reduce_axes(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != axis)


def channel_amax(w: np.ndarray, axis: int) -> np.ndarray:
    """max |w| per channel along ``axis``; float32 vector of length w.shape[axis]."""
    return np.max(np.abs(w), axis=_reduce_axes(w.ndim, axis)).astype(np.float32)


def quantize_codes(w: np.ndarray, scale: np.ndarray, axis: int, qmax: int) -> np.ndarray:
    """Round-to-nearest codes ``clip(round(w / scale), -qmax, qmax)`` as int8; ``scale`` per channel along ``axis``."""
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scale.reshape(shape).astype(np.float64)
    return np.clip(np.rint(w / s), -qmax, qmax).astype(np.int8)


def channel_scales(w: np.ndarray, axis: int, qmax: int, method: str = "max", grid: int = 80,
                   p: float = 2.0) -> np.ndarray:
    """Per-channel scales (float32, > 0). ``max``: amax / qmax. ``mse``: per channel, the clipping ratio r in
    [0.2, 1] (``grid`` candidates) of amax minimising sum |w - dequant(quant(w))|^p, searched jointly for all
    channels (Q-Diffusion/PTQ4DM's weight search; p = 2.4 is their Lp option)."""
    if method not in WEIGHT_SCALE_METHODS:
        raise ValueError(f"weight scale method must be one of {WEIGHT_SCALE_METHODS}, got {method!r}")
    amax = channel_amax(w, axis)
    amax = np.where(amax > 0, amax, np.float32(1e-8))
    if method == "max":
        return (amax / qmax).astype(np.float32)
    wc = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    best_err = np.full(wc.shape[0], np.inf)
    best = amax.astype(np.float64).copy()
    for r in np.linspace(0.2, 1.0, grid):
        a = amax.astype(np.float64) * r
        s = (a / qmax)[:, None]
        deq = np.clip(np.rint(wc / s), -qmax, qmax) * s
        err = np.sum(np.abs(wc - deq) ** p, axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, a, best)
    return (best / qmax).astype(np.float32)


# int16 bound of oneDNN's AVX2 u8×s8 pair sums: u8 codes reach 255, so same-sign weight pairs must stay within
# 128 in magnitude (255·128 = 32640 <= 32767).
PAIR_SUM_QMAX = 128


def pair_sums(w: np.ndarray, reduce_axis: int = 1) -> np.ndarray:
    """Sums of neighbouring elements 2k and 2k+1 along ``reduce_axis`` (an odd last element stands alone), that
    axis moved last: for a Conv weight O×I×kh×kw, O×kh×kw×ceil(I/2) — the pairs oneDNN's AVX2 INT8 kernels add in
    int16 (input channels in blocks of 4, ``vpmaddubsw`` sums adjacent bytes)."""
    m = np.moveaxis(w.astype(np.int32) if w.dtype.kind in "iu" else w, reduce_axis, -1)
    if m.shape[-1] % 2:
        m = np.concatenate([m, np.zeros(m.shape[:-1] + (1,), m.dtype)], axis=-1)
    return m[..., 0::2] + m[..., 1::2]


def pair_safe_scales(w: np.ndarray, scale: np.ndarray, slack: int = 1) -> np.ndarray:
    """Per-output-channel ``scale`` (float32, axis 0 of a Conv weight O×I×kh×kw) raised where needed so the codes
    of every input-channel pair sum to at most ``PAIR_SUM_QMAX`` in magnitude: s >= max |w_2k + w_2k+1| /
    (PAIR_SUM_QMAX - slack). Rounding to nearest moves a pair sum by at most 1 (``slack`` 1); learned rounding
    (floor or ceil of each) by at most 2 (``slack`` 2). Channels already safe keep their scale."""
    worst = np.abs(pair_sums(w, 1)).reshape(w.shape[0], -1).max(axis=1)
    return np.maximum(scale.reshape(-1), worst / (PAIR_SUM_QMAX - slack)).astype(np.float32).reshape(scale.shape)


# INT4 blocks take amax scales whatever the rounding: in an ad-hoc run on 2026-11-22 (not a benchmark; reference
# model, INT8 convolutions + INT4 linear layers, 32 seeds, DDIM 50, PSNR against FP32 images), MSE-searched block
# scales gave 22.8 dB and amax
# scales 30.3 dB — clipping the largest of 32 values costs more than the finer grid gains.
BLOCK_SCALE_METHOD = "max"


def block_scales(w: np.ndarray, block_size: int, qmax: int, method: str = BLOCK_SCALE_METHOD) -> np.ndarray:
    """Scales of ``w`` (Cout×K, rows are output channels) in blocks of ``block_size`` along K: Cout×(K/block_size),
    each block searched like a channel (``channel_scales``). K must be a multiple of ``block_size``."""
    cout, k = w.shape
    if k % block_size:
        raise ValueError(f"K={k} is not a multiple of the block size {block_size}")
    blocks = w.reshape(cout * (k // block_size), block_size)
    return channel_scales(blocks, 0, qmax, method).reshape(cout, k // block_size)


def expand_scales(scale: np.ndarray, k: int) -> np.ndarray:
    """Cout×G scales (G = 1 per channel, or K/block blocks) -> Cout×K, one scale per weight (float32)."""
    scale = scale.reshape(scale.shape[0], -1)
    return np.repeat(scale, k // scale.shape[1], axis=1).astype(np.float32)


def nearest_codes(w: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """Round-to-nearest int8 codes of ``w`` (Cout×K) with Cout×G scales (per channel or per block)."""
    s = expand_scales(scale, w.shape[1]).astype(np.float64)
    return np.clip(np.rint(w / s), -qmax, qmax).astype(np.int8)
