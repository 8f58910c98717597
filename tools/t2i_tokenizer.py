"""A CLIP tokenizer built here from a word list (no download): byte-level BPE whose merges spell each word as one token.

The base vocabulary is CLIP's: the 256 byte-level symbols, each also with the end-of-word suffix ``</w>``; then one
merge chain per word (``s e`` -> ``se``, ``se v`` -> ``sev``, ...), then ``<|startoftext|>`` and ``<|endoftext|>``
(which also pads, as in Stable Diffusion's tokenizer). Any other text still tokenizes, spelled in smaller pieces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.lazy import lazy_import

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def bpe_vocab(words: tuple[str, ...] | list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-style vocabulary (token -> id) and merge list (in rank order) spelling every word in ``words``."""
    from tokenizers.pre_tokenizers import ByteLevel

    base = sorted(ByteLevel.alphabet())
    tokens = base + [c + "</w>" for c in base]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    for word in words:
        if not word or word != word.lower() or not word.isascii() or " " in word:
            raise ValueError(f"vocabulary words must be lower-case ASCII without spaces, got {word!r}")
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            joined = pair[0] + pair[1]
            if pair not in merges:
                merges.append(pair)
            if joined not in known:
                tokens.append(joined)
                known.add(joined)
            symbols = [joined, *symbols[2:]]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tokenizer(words: tuple[str, ...] | list[str], max_length: int) -> Any:
    """A ``transformers.CLIPTokenizer`` over ``words`` with ``model_max_length`` = ``max_length`` tokens."""
    transformers = lazy_import("transformers")
    vocab, merges = bpe_vocab(words)
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length,
                                      bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def save_tokenizer(tokenizer: Any, words: tuple[str, ...] | list[str], folder: Path) -> None:
    """``save_pretrained`` (tokenizer.json, tokenizer_config.json) plus CLIP's ``vocab.json`` and ``merges.txt``."""
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    vocab, merges = bpe_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
