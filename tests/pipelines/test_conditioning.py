"""``Conditioning``: the rows each image of a batch takes, guidance stacking, and the one construction rule."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from pipelines.conditioning import HIDDEN_STATES, RANDOM_ROWS, Conditioning, conditioning_for
from pipelines.conditioning_inputs import raw_conditioning


def _cond(rows: int, guided: bool = True) -> Conditioning:
    cond = np.arange(rows, dtype=np.float32).reshape(rows, 1, 1) * np.ones((1, 2, 3), np.float32)
    return Conditioning(cond, -np.ones((1, 2, 3), np.float32) if guided else None, 3.0)


def test_image_i_takes_row_i_mod_r_for_any_batch() -> None:
    c = _cond(3)
    feeds = c.unet_feeds(2, 4)[HIDDEN_STATES]  # images 2..5: rows 2, 0, 1, 2 after the 4 unconditional rows
    assert feeds.shape == (8, 2, 3) and feeds.dtype == np.float32
    assert feeds[:4, 0, 0].tolist() == [-1, -1, -1, -1] and feeds[4:, 0, 0].tolist() == [2, 0, 1, 2]
    assert np.array_equal(c.subset(2, 4).unet_feeds(0, 4)[HIDDEN_STATES], feeds)
    assert c.unet_rows(4) == 8 and _cond(3, guided=False).unet_rows(4) == 4


def test_guide_combines_the_two_halves() -> None:
    c = _cond(1)
    eps = np.concatenate([np.zeros((2, 1)), np.ones((2, 1))]).astype(np.float32)  # uncond 0, cond 1
    assert c.guide(eps).tolist() == [[3.0], [3.0]]
    assert np.array_equal(_cond(1, guided=False).guide(eps), eps)


def test_row_count_check_names_the_input() -> None:
    _cond(1).check_rows(16, "--cond")
    _cond(16).check_rows(16, "--cond")
    with pytest.raises(UserError, match="--cond file 'c.npy' has 3 conditioning rows for 16 images"):
        _cond(3).check_rows(16, "--cond file 'c.npy'")


def test_conditioning_for_follows_the_model_inputs() -> None:
    spec = {"sample": {"shape": ["batch", 4, 8, 8]}, HIDDEN_STATES: {"shape": ["batch", 5, 12]}}
    c = conditioning_for(spec, seed=3)
    assert c is not None and c.cond.shape == (RANDOM_ROWS, 5, 12) and c.guided
    assert c.uncond is not None and not c.uncond.any()
    assert np.array_equal(conditioning_for(spec, seed=3).cond, c.cond)  # seeded
    assert conditioning_for({"sample": {"shape": ["batch", 1, 8, 8]}}) is None
    with pytest.raises(UserError, match="unconditional UNet"):
        conditioning_for({"sample": {"shape": ["batch", 1, 8, 8]}}, cond=c.cond)


def test_conditioning_for_refuses_sdxl_added_inputs() -> None:
    """Random rows cannot stand in for SDXL's pooled embedding and size ids: those come from the text encoders."""
    spec = {"sample": {"shape": ["batch", 4, 8, 8]}, HIDDEN_STATES: {"shape": ["batch", 5, 12]},
            "text_embeds": {"shape": ["batch", 16]}, "time_ids": {"shape": ["batch", 6]}}
    with pytest.raises(UserError, match="text_embeds and time_ids .*--prompt"):
        raw_conditioning({"inputs": spec}, seed=3)
