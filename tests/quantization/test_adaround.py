"""AdaRound on single random layers: it must beat round-to-nearest, stay in range, and be deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from quantization.adaround import AdaRoundConfig, adaround, fake_quantize, output_mse
from quantization.weight_quant import block_scales, channel_scales, expand_scales, nearest_codes


def _layer(seed: int = 0, cout: int = 24, k: int = 64, rows: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((cout, k)) * 0.1).astype(np.float32)
    # correlated inputs (as real activations are): rounding errors of different weights interact
    mix = rng.standard_normal((k, k)).astype(np.float32) / np.sqrt(k)
    x = (rng.standard_normal((rows, k)).astype(np.float32) @ mix + 0.3).astype(np.float32)
    return w, x


@pytest.mark.parametrize("qmax", [7, 127])
def test_adaround_reduces_output_error_against_nearest(qmax: int) -> None:
    w, x = _layer()
    scale = channel_scales(w, 0, qmax, "mse")[:, None]
    result = adaround(x, None, w, scale, qmax, AdaRoundConfig(iters=400, seed=0))
    assert not result.kept_nearest
    assert result.mse_learned < 0.8 * result.mse_nearest  # an optimiser that does nothing returns nearest (ratio 1)
    nearest = nearest_codes(w, scale, qmax)
    assert np.abs(result.codes).max() <= qmax
    # every learned code is the floor or the ceiling of w/s: rounding changes, the grid does not
    assert np.all(np.abs(result.codes.astype(np.int32) - nearest) <= 1) and np.any(result.codes != nearest)
    assert result.mse_learned == pytest.approx(output_mse(x, x @ w.T, result.codes * expand_scales(scale, 64)),
                                               rel=1e-6)


def test_adaround_with_blocks_and_quantized_inputs() -> None:
    w, x = _layer(1, cout=16, k=64)
    scale = block_scales(w, 32, 7, "mse")
    amax = float(np.abs(x).max())
    result = adaround(x, amax, w, scale, 7, AdaRoundConfig(iters=300))
    assert result.mse_learned < result.mse_nearest
    assert result.mse_nearest == pytest.approx(
        output_mse(fake_quantize(x, amax), x.astype(np.float64) @ w.T, nearest_codes(w, scale, 7) *
                   expand_scales(scale, 64)), rel=1e-6)


def test_adaround_is_deterministic() -> None:
    w, x = _layer(2, cout=8, k=32, rows=512)
    scale = channel_scales(w, 0, 7, "mse")[:, None]
    cfg = AdaRoundConfig(iters=150, seed=3)
    a = adaround(x, None, w, scale, 7, cfg)
    b = adaround(x, None, w, scale, 7, cfg)
    assert np.array_equal(a.codes, b.codes) and a.mse_learned == b.mse_learned


def test_fake_quantize_is_the_int8_grid() -> None:
    x = np.array([-3.0, -1.0, 0.004, 0.5, 2.0], np.float32)
    out = fake_quantize(x, 1.27)
    assert np.allclose(out, [-1.28, -1.0, 0.0, 0.5, 1.27], atol=1e-6)  # clipped to [-128, 127] steps of 0.01
    assert fake_quantize(x, None) is x
