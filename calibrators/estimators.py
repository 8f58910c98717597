"""Range estimators for symmetric signed-integer quantization (INT8 / INT4), working on |x| histograms.

Every estimator takes an ``AbsHistogram`` (int64 counts over ``[0, R)``, bin width ``R / B``, exact abs-max) and an
``EstimatorConfig`` and returns ``amax > 0`` (a float in the tensor's units); the quantizer is then
``q = clip(round(x / s), -qmax, qmax)`` with ``s = amax / qmax`` and ``qmax = 2**(bits - 1) - 1`` (127 or 7).

Within-bin model: ``percentile`` and ``mse`` treat the values of a bin as uniformly spread over the bin (the top
non-empty bin is cut at the exact abs-max), and integrate over it exactly; ``entropy`` works on bin counts as
TensorRT does; ``max`` uses the exact abs-max. A tensor that was all zeros gets ``ZERO_TENSOR_AMAX``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from calibrators.histogram import AbsHistogram
from calibrators.settings import (  # noqa: F401  (re-exported: the estimator settings)
    ESTIMATOR_METHODS,
    SUPPORTED_BITS,
    EstimatorConfig,
    config_kwargs,
    qmax_for,
)

#: amax given to a tensor whose every value was 0 (any positive scale represents it exactly).
ZERO_TENSOR_AMAX = 1.0

# --------------------------------------------------------------------------------------------------------- max


def amax_max(hist: AbsHistogram, config: EstimatorConfig) -> float:
    """The exact abs-max of the data."""
    if hist.absmax == 0.0:
        return ZERO_TENSOR_AMAX
    return float(hist.absmax)


# -------------------------------------------------------------------------------------------------- percentile


def amax_percentile(hist: AbsHistogram, config: EstimatorConfig) -> float:
    """The ``config.percentile``-th percentile of |x|, interpolated linearly inside its bin (uniform model).

    Within one bin width of ``np.percentile(np.abs(x), percentile)``; 100 gives the exact abs-max.
    """
    if hist.absmax == 0.0:
        return ZERO_TENSOR_AMAX
    counts = hist.counts.astype(np.float64)
    cum = np.cumsum(counts)
    target = cum[-1] * config.percentile / 100.0
    idx = int(np.searchsorted(cum, target, side="left"))
    idx = min(idx, counts.size - 1)
    before = cum[idx] - counts[idx]
    frac = (target - before) / counts[idx] if counts[idx] > 0 else 1.0
    amax = (idx + frac) * hist.bin_width
    return _positive(min(amax, hist.absmax), hist)


# --------------------------------------------------------------------------------------------------------- mse


def _error_integral(x: np.ndarray, step: np.ndarray, amax: np.ndarray, p: float) -> np.ndarray:
    """``G(x) = integral_0^x |u - Q(u)|^p du`` for x >= 0 (arrays broadcast; units: data units ** (p + 1)).

    Q rounds to the nearest multiple of ``step`` and clips at ``amax = qmax * step``: the error is a sawtooth of
    height ``step / 2`` below ``amax`` and ``u - amax`` above it.
    """
    half = step / 2.0
    tooth = half ** (p + 1.0) / (p + 1.0)  # integral of u^p over one half tooth
    inside = np.minimum(x, amax)
    k = np.floor(inside / step)
    r = np.clip(inside - k * step, 0.0, step)
    rising = r ** (p + 1.0) / (p + 1.0)
    falling = 2.0 * tooth - np.maximum(step - r, 0.0) ** (p + 1.0) / (p + 1.0)
    partial = np.where(r <= half, rising, falling)
    over = np.maximum(x - amax, 0.0)
    return k * 2.0 * tooth + partial + over ** (p + 1.0) / (p + 1.0)


def _point_error(x: np.ndarray, step: np.ndarray, amax: np.ndarray, p: float) -> np.ndarray:
    """``|x - Q(x)|^p`` for x >= 0 (arrays broadcast)."""
    inside = np.minimum(x, amax)
    err = np.where(x > amax, x - amax, np.abs(inside - step * np.round(inside / step)))
    return err**p


def expected_errors(hist: AbsHistogram, amaxes: np.ndarray, bits: int, p: float) -> np.ndarray:
    """Mean ``|x - Q(x)|^p`` per element for each candidate amax, float64 (len(amaxes),).

    Values are uniform inside each bin; the top non-empty bin ends at the exact abs-max.
    """
    amaxes = np.asarray(amaxes, dtype=np.float64)
    nz = np.flatnonzero(hist.counts)
    n = hist.counts[nz].astype(np.float64)
    lo = nz * hist.bin_width
    hi = np.minimum((nz + 1) * hist.bin_width, hist.absmax)
    amax = amaxes[:, None]
    step = amax / qmax_for(bits)
    width = hi - lo
    wide = width > 0.0
    safe_width = np.where(wide, width, 1.0)
    mean_in_bin = np.where(
        wide,
        (_error_integral(hi, step, amax, p) - _error_integral(lo, step, amax, p)) / safe_width,
        _point_error(lo, step, amax, p),
    )
    return (mean_in_bin * n).sum(axis=1) / n.sum()


def amax_mse(hist: AbsHistogram, config: EstimatorConfig) -> float:
    """The clip ``absmax * k / N`` (k = 1..N, N = ``config.mse_candidates``) minimising the expected Lp error.

    The error counts both clipping (values beyond amax) and rounding (values inside), exactly under the uniform
    within-bin model; ``config.p`` is the exponent (2 = MSE, 2.4 as in PTQ4DM / Q-Diffusion).
    """
    if hist.absmax == 0.0:
        return ZERO_TENSOR_AMAX
    candidates = hist.absmax * np.arange(1, config.mse_candidates + 1, dtype=np.float64) / config.mse_candidates
    errors = expected_errors(hist, candidates, config.bits, config.p)
    return _positive(float(candidates[int(np.argmin(errors))]), hist)


# ----------------------------------------------------------------------------------------------------- entropy


def entropy_divergences(counts: np.ndarray, bits: int, start_bin: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """KL divergence of TensorRT's legacy entropy calibration for each candidate clip.

    Follows ``_compute_amax_entropy`` of TensorRT's pytorch-quantization (``calib/histogram.py``; the algorithm of
    the legacy IInt8EntropyCalibrator2, GTC 2017 "8-bit inference with TensorRT"), vectorised with prefix sums:
    the histogram is cut after its last non-empty bin, bin 0 is replaced by bin 1 (so a spike of zeros does not
    dominate), and for every ``i`` in ``[start_bin, n]`` the reference P is the first ``i`` bins with the
    outliers added to bin ``i - 1``, Q is P's first ``i`` bins merged into ``2**(bits-1)`` levels and spread
    back uniformly over the non-empty bins of each level; the divergence is KL(P || Q) (inf where Q = 0 < P).

    counts: (B,) bin counts. Returns (i: int64 (M,), kl: float64 (M,)); clipping at bin edge ``i`` keeps bins
    ``0 .. i-1``. Empty arrays if the data spans at most ``start_bin`` bins.
    """
    b = np.asarray(counts, dtype=np.float64).copy()
    nz = np.flatnonzero(b)
    if nz.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    n = int(nz[-1]) + 1
    b = b[:n]
    if n > start_bin:
        b[0] = b[1]
    if n <= start_bin or b.sum() == 0.0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    levels = 1 << (bits - 1)
    total = b.sum()
    cum = np.concatenate([[0.0], np.cumsum(b)])
    cum_nz = np.concatenate([[0], np.cumsum(b > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(b > 0, b / total * np.log(b / total), 0.0)
    cum_plogp = np.concatenate([[0.0], np.cumsum(plogp)])

    i = np.arange(start_bin, n + 1, dtype=np.int64)
    kept = cum[i]  # sum of the kept bins (Q's total)
    outliers = total - kept
    last = b[i - 1] + outliers  # P's last bin
    with np.errstate(divide="ignore", invalid="ignore"):
        p_entropy = cum_plogp[i - 1] + np.where(last > 0, last / total * np.log(last / total), 0.0)
        k = np.arange(levels + 1, dtype=np.int64)
        # level k holds bins [ceil(k i / L), ceil((k + 1) i / L)), exactly as linspace/digitize in the reference
        bounds = (k[None, :] * i[:, None] + levels - 1) // levels
        level_sum = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
        level_nz = cum_nz[bounds[:, 1:]] - cum_nz[bounds[:, :-1]]
        q_level = level_sum / np.maximum(level_nz, 1) / kept[:, None]  # Q's value on each non-empty bin
        cross = np.where(level_sum > 0, level_sum / total * np.log(q_level), 0.0).sum(axis=1)
        q_last = q_level[:, -1]
        cross = cross + np.where(outliers > 0, outliers / total * np.log(q_last), 0.0)
        kl = p_entropy - cross
    kl = np.where((outliers > 0) & (b[i - 1] == 0), np.inf, kl)
    kl = np.where((kept > 0) & np.isfinite(kl), kl, np.inf)
    return i, kl


def amax_entropy(hist: AbsHistogram, config: EstimatorConfig) -> float:
    """TensorRT's classic KL-divergence calibration: the clip whose quantized distribution loses least information.

    Ties go to the largest clip (as TensorRT's ``last_argmin``); the result is at most the exact abs-max.
    """
    if hist.absmax == 0.0:
        return ZERO_TENSOR_AMAX
    i, kl = entropy_divergences(hist.counts, config.bits, config.entropy_start_bin)
    if i.size == 0:
        return float(hist.absmax)  # too few bins to clip anything
    best = int(i[kl.size - 1 - int(np.argmin(kl[::-1]))])
    return _positive(min(best * hist.bin_width, hist.absmax), hist)


def _positive(amax: float, hist: AbsHistogram) -> float:
    """Guard: a non-zero tensor always gets a positive, finite amax (at least a tenth of one bin)."""
    if not math.isfinite(amax) or amax <= 0.0:
        return float(min(hist.absmax, hist.bin_width / 10.0))
    return float(amax)


Estimator = Callable[[AbsHistogram, EstimatorConfig], float]

#: Estimator name -> function; ``EstimatorConfig.method`` must be one of these keys.
ESTIMATORS: dict[str, Estimator] = {
    "max": amax_max,
    "percentile": amax_percentile,
    "mse": amax_mse,
    "entropy": amax_entropy,
}


def estimate_amax(hist: AbsHistogram, config: EstimatorConfig) -> float:
    """Run the estimator ``config.method`` on ``hist``; returns amax > 0."""
    return ESTIMATORS[config.method](hist, config)


assert tuple(ESTIMATORS) == ESTIMATOR_METHODS, "calibrators/settings.py ESTIMATOR_METHODS must name every estimator"
