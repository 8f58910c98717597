"""How a loop feeds the UNet, for numpy arrays and torch tensors alike: chunks, doubled rows, guidance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from pipelines.conditioning import HIDDEN_STATES, Conditioning
from pipelines.unet_batches import guided_rows, predict_in_chunks, unet_inputs


def _cond(guidance: float = 2.0) -> Conditioning:
    rows = np.arange(3, dtype=np.float32).reshape(3, 1, 1)
    return Conditioning(rows, np.full((1, 1, 1), -1.0, np.float32), guidance)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_inputs_double_the_sample_under_guidance(kind: str) -> None:
    x = np.arange(2 * 1 * 2 * 2, dtype=np.float64).reshape(2, 1, 2, 2)
    xs: Any = x if kind == "numpy" else torch.from_numpy(x)
    feeds = unet_inputs(xs, 7, _cond().unet_feeds(0, 2), guided=True)
    sample = np.asarray(feeds["sample"])
    assert sample.dtype == np.float32 and sample.shape == (4, 1, 2, 2)
    np.testing.assert_array_equal(sample, np.concatenate([x, x]))
    assert np.asarray(feeds["timestep"]).tolist() == [7.0] * 4
    assert np.asarray(feeds[HIDDEN_STATES])[:, 0, 0].tolist() == [-1, -1, 0, 1]
    assert guided_rows(xs, False) is xs


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_chunks_take_their_own_rows_and_are_guided(kind: str) -> None:
    """A fake UNet returns each row's conditioning value: image i's guided output is uncond + w (row i - uncond)."""
    calls: list[int] = []

    def run(feeds: dict[str, Any]) -> Any:
        calls.append(len(feeds["sample"]))
        hidden = feeds[HIDDEN_STATES]
        out = hidden[:, :1, :1].reshape(-1, 1, 1, 1) * (feeds["sample"] * 0 + 1)
        return out

    x = np.ones((5, 1, 2, 2), np.float32)
    xs: Any = x if kind == "numpy" else torch.from_numpy(x)
    cond = _cond(2.0)
    feeds = (None if kind == "numpy" else
             lambda i, n: {k: torch.from_numpy(v) for k, v in cond.unet_feeds(i, n).items()})
    out = np.asarray(predict_in_chunks(xs, 3, cond, 2, run, feeds))
    assert calls == [4, 4, 2]  # images 0-1, 2-3, 4: twice the rows each
    expected = [-1 + 2 * (r + 1) for r in (0, 1, 2, 0, 1)]  # rows cycle: image i takes row i mod 3
    assert out[:, 0, 0, 0].tolist() == expected
