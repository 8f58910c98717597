"""The one conditioning path: prompts files, rows for any batch, and what each kind of model accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.errors import UserError
from pipelines.conditioning_inputs import ConditioningInputs, read_prompts, resolve_conditioning
from pipelines.conditioning import Conditioning


def test_read_prompts_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a photo of 3\n\n  digit seven  \n")
    assert read_prompts(path) == ["a photo of 3", "digit seven"]


@pytest.mark.parametrize("content, words", [(b"", "holds no prompt"), (b"\n  \n", "holds no prompt"),
                                            (b"\xff\xfe\x00bad", "not readable"), (None, "does not exist")])
def test_bad_prompts_file_names_it(tmp_path: Path, content: bytes | None, words: str) -> None:
    path = tmp_path / "p.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=words) as err:
        read_prompts(path)
    assert str(path) in str(err.value) and "--prompts" in str(err.value)


def test_sdxl_added_conditions_follow_the_rows() -> None:
    ids = np.arange(6, dtype=np.float32)[None]
    c = Conditioning(np.zeros((2, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32), 5.0,
                     {"text_embeds": np.array([[1.0], [2.0]], np.float32), "time_ids": ids},
                     {"text_embeds": np.array([[9.0]], np.float32), "time_ids": ids})
    feeds = c.unet_feeds(1, 3)
    assert feeds["text_embeds"][:, 0].tolist() == [9, 9, 9, 2, 1, 2]
    assert feeds["time_ids"].shape == (6, 6) and (feeds["time_ids"] == np.arange(6)).all()


def _info(conditional: bool) -> dict[str, Any]:
    inputs: dict[str, Any] = {"sample": {"shape": ["batch", 4, 8, 8]}}
    if conditional:
        inputs["encoder_hidden_states"] = {"shape": ["batch", 5, 12]}
    return {"inputs": inputs}


def test_prompt_on_unconditional_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unconditional"):
        resolve_conditioning(tmp_path, _info(False), ConditioningInputs(prompts=("a photo of 3",)))


def test_prompt_on_bare_unet_needs_a_text_encoder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="need a text encoder"):
        resolve_conditioning(tmp_path, _info(True), ConditioningInputs(prompts=("a photo of 3",)))


def test_raw_cond_shape_is_checked_and_uncond_defaults_to_zeros(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--cond has shape"):
        resolve_conditioning(tmp_path, _info(True), ConditioningInputs(cond=np.zeros((2, 4, 12), np.float32)))
    c = resolve_conditioning(tmp_path, _info(True), ConditioningInputs(cond=np.ones((2, 5, 12), np.float32),
                                                                     guidance_scale=3.0))
    assert c is not None and c.guided and c.uncond is not None and not c.uncond.any()


def test_negative_prompt_needs_a_text_encoder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--negative-prompt needs a text encoder"):
        resolve_conditioning(tmp_path, _info(True), ConditioningInputs(cond=np.ones((1, 5, 12), np.float32),
                                                                     negative_prompt="blurry"))
