"""The prompts of the digits text-to-image reference model: phrasings per digit, and the digit a prompt asks for.

The training command draws from :func:`prompts_for_digit`; prompt following is measured by reading the asked digit
back with :func:`digit_in_prompt` and comparing it with the in-repo digit classifier's prediction.
"""

from __future__ import annotations

import re

import numpy as np

DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {word}: the digit's English word; {numeral}: the character 0..9.
TEMPLATES: tuple[str, ...] = (
    "a handwritten digit {word}",
    "the digit {word}",
    "a handwritten {word}",
    "number {word}",
    "the number {numeral}",
    "digit {numeral}",
)
# Words of the prompt vocabulary (the tokenizer keeps each as one token); anything else is spelled in bytes.
VOCABULARY: tuple[str, ...] = (*DIGIT_WORDS, *(str(d) for d in range(10)), "a", "an", "the", "digit", "number",
                               "handwritten", "of", "image", "picture", "drawing", "written", "by", "hand")


def prompts_for_digit(digit: int) -> list[str]:
    """Every phrasing of ``digit`` (0..9), in template order."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    return [t.format(word=DIGIT_WORDS[digit], numeral=digit) for t in TEMPLATES]


def all_prompts() -> list[str]:
    """All phrasings of all digits, digit by digit (the lines of ``prompts.txt``)."""
    return [p for d in range(10) for p in prompts_for_digit(d)]


def digit_in_prompt(prompt: str) -> int | None:
    """The one digit a prompt names (as a word or a numeral), or None if it names none or several."""
    found = set()
    for token in re.findall(r"[a-z]+|\d", prompt.lower()):
        if token in DIGIT_WORDS:
            found.add(DIGIT_WORDS.index(token))
        elif token.isdigit():
            found.add(int(token))
    return found.pop() if len(found) == 1 else None


def prompt_following(predicted: np.ndarray, asked: np.ndarray) -> dict[str, object]:
    """Share of images whose predicted digit is the asked one: overall and per asked digit (0..1; None if absent)."""
    predicted, asked = np.asarray(predicted), np.asarray(asked)
    if predicted.shape != asked.shape:
        raise ValueError(f"predicted {predicted.shape} and asked {asked.shape} differ in shape")
    hit = predicted == asked
    per_digit = [round(float(hit[asked == d].mean()), 4) if (asked == d).any() else None for d in range(10)]
    return {"share": round(float(hit.mean()), 4), "per_digit": per_digit, "images": int(hit.size)}
