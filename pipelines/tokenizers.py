"""The pipeline's own tokenizers (transformers), loaded from the source folder that export.json names."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError, first_line
from common.lazy import lazy_import


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer saved in ``folder`` (transformers ``AutoTokenizer``), from local files only."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"tokenizer folder '{folder}' does not exist (export.json names it: the pipeline folder "
                        "was moved or deleted; export again)")
    transformers = lazy_import("transformers")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"cannot load the tokenizer from '{folder}': {first_line(exc)}") from exc


def tokenize(tokenizer: Any, prompts: list[str], length: int, warn: bool = True) -> np.ndarray:
    """Token ids N×``length`` int64, padded to ``length`` and truncated as diffusers' pipelines do
    (``padding="max_length", truncation=True``); a truncated prompt is reported on stderr with the removed text."""
    ids = tokenizer(prompts, padding="max_length", max_length=length, truncation=True).input_ids
    out = np.asarray(ids, dtype=np.int64)
    if warn:
        full = tokenizer(prompts, padding=False, truncation=False, verbose=False).input_ids
        for prompt, f in zip(prompts, full, strict=True):
            if len(f) > length:
                removed = tokenizer.decode(f[length - 1 : -1])
                print(f"warning: prompt {prompt[:40]!r}... truncated to {length} tokens (the text encoder's "
                      f"maximum); removed: {removed!r}", file=sys.stderr)
    return out
