"""Layer-input rows: im2col rows reproduce the convolution, linear rows are input vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantization.layer_inputs import conv_rows, layer_rng, linear_rows
from quantization.weight_layers import ConvGeometry


@pytest.mark.parametrize("strides,pads", [((1, 1), (1, 1, 1, 1)), ((2, 2), (0, 0, 1, 1))])
def test_conv_rows_times_weight_are_conv_outputs(strides: tuple[int, int], pads: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    geometry = ConvGeometry((3, 3), strides, (1, 1), pads)
    rows = conv_rows(x, geometry, 10_000, layer_rng(0, "conv"))  # all positions, in a random order
    top, left, bottom, right = pads
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom)),
                                     torch.from_numpy(w), stride=strides).numpy()
    got = rows @ w.reshape(5, -1).T
    per_item = ref.shape[2] * ref.shape[3]
    assert rows.shape == (2 * per_item, 27)
    for b in range(2):
        expect = np.sort(ref[b].reshape(5, -1), axis=1)
        assert np.allclose(np.sort(got[b * per_item:(b + 1) * per_item].T, axis=1), expect, atol=1e-4)


def test_conv_rows_subsample_and_are_reproducible() -> None:
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6)).astype(np.float32)
    geometry = ConvGeometry((1, 1), (1, 1), (1, 1), (0, 0, 0, 0))
    a = conv_rows(x, geometry, 4, layer_rng(7, "n"))
    b = conv_rows(x, geometry, 4, layer_rng(7, "n"))
    assert a.shape == (12, 2) and np.array_equal(a, b)
    assert not np.array_equal(a, conv_rows(x, geometry, 4, layer_rng(7, "other")))


def test_linear_rows_are_input_vectors() -> None:
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    rows = linear_rows(x, 2, layer_rng(0, "mm"))
    assert rows.shape == (4, 3)
    vectors = {tuple(v) for v in x.reshape(-1, 3)}
    assert all(tuple(r) in vectors for r in rows)
    assert linear_rows(np.ones((4, 8), np.float32), 16, layer_rng(0, "g")).shape == (4, 8)  # Gemm: one row per item
