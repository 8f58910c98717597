"""Prompts of the digits text-to-image model: phrasings, the digit a prompt asks for, prompt-following share."""

from __future__ import annotations

import numpy as np
import pytest

from validation.digit_prompts import TEMPLATES, all_prompts, digit_in_prompt, prompt_following, prompts_for_digit


def test_every_phrasing_names_its_digit() -> None:
    for d in range(10):
        phrasings = prompts_for_digit(d)
        assert len(phrasings) == len(TEMPLATES) == len(set(phrasings))
        assert all(digit_in_prompt(p) == d for p in phrasings)
    assert len(all_prompts()) == 10 * len(TEMPLATES)
    with pytest.raises(ValueError):
        prompts_for_digit(10)


@pytest.mark.parametrize(("prompt", "digit"), [("A handwritten SEVEN", 7), ("the number 3.", 3), ("", None),
                                               ("one or two", None), ("seven 7", 7), ("someone", None)])
def test_digit_in_prompt(prompt: str, digit: int | None) -> None:
    assert digit_in_prompt(prompt) == digit


def test_prompt_following_share_and_per_digit() -> None:
    result = prompt_following(np.array([1, 1, 2, 0]), np.array([1, 2, 2, 0]))
    assert result["share"] == 0.75 and result["images"] == 4
    assert result["per_digit"][:3] == [1.0, 1.0, 0.5] and result["per_digit"][3] is None
    with pytest.raises(ValueError):
        prompt_following(np.zeros(2), np.zeros(3))
