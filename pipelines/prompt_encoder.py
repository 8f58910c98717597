"""Prompts through a pipeline's text encoders: its own tokenizers, one Session per encoder.

What the encoders give is family-neutral (``EncodedPrompts``: one hidden-state array and optional pooled embedding
per encoder, in the pipeline's order); how they become denoiser inputs is the family's (pipelines/families/).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.ort_session import OrtSession
from engines.session import Session
from pipelines.tokenizers import load_tokenizer, tokenize


@dataclass(frozen=True)
class TextEncoderSpec:
    """One exported text encoder: ONNX file, tokenizer folder, sequence length, which outputs the denoiser takes."""

    name: str
    file: str
    tokenizer_dir: Path
    sequence_length: int
    hidden_output: str
    pooled_output: str | None


@dataclass(frozen=True)
class PromptEmbeddings:
    """Encoded prompts: ``hidden`` N×L×D (what the denoiser cross-attends to); ``pooled`` N×P or None."""

    hidden: np.ndarray
    pooled: np.ndarray | None


class PromptEncoder:
    """Tokenizers and text-encoder Sessions (active) of one work folder."""

    def __init__(self, specs: tuple[TextEncoderSpec, ...], sessions: list[Session], tokenizers: list[Any]) -> None:
        self.specs = specs
        self.sessions = sessions
        self.tokenizers = tokenizers

    def encode_each(self, prompts: list[str], warn: bool = True) -> list[PromptEmbeddings]:
        """One ``PromptEmbeddings`` per encoder, in the pipeline's order; a prompt longer than a tokenizer's length
        is truncated with a warning."""
        result = []
        for spec, sess, tok in zip(self.specs, self.sessions, self.tokenizers, strict=True):
            out = sess.run({"input_ids": tokenize(tok, prompts, spec.sequence_length, warn=warn)})
            pooled = None if spec.pooled_output is None else out[spec.pooled_output].astype(np.float32, copy=False)
            result.append(PromptEmbeddings(out[spec.hidden_output].astype(np.float32, copy=False), pooled))
        return result


def component_session(work_root: Path, file: str, backend: str = "ort", threads: int = 0) -> Session:
    """An inactive Session of one float component (``text_encoder.onnx``, ``vae_decoder.onnx``): its FP16 TensorRT
    engine (``<name>.fp16.plan``, from ``build``) with ``backend`` "trt" when built, else ONNX Runtime FP32."""
    root = Path(work_root)
    if backend == "trt":
        from engines.tensorrt.components import component_plan_path

        plan = component_plan_path(root, Path(file).stem)
        if plan.is_file():
            from engines.tensorrt.session import TrtSession

            return TrtSession(plan)
    return OrtSession(root / file, threads=threads)


@contextlib.contextmanager
def open_prompt_encoder(work_root: Path, specs: tuple[TextEncoderSpec, ...], threads: int = 0,
                        backend: str = "ort") -> Iterator[PromptEncoder]:
    """The tokenizers (from the source folder export.json names) and the float text encoder(s)."""
    tokenizers = [load_tokenizer(s.tokenizer_dir) for s in specs]
    with contextlib.ExitStack() as stack:
        sessions: list[Session] = [stack.enter_context(component_session(work_root, s.file, backend, threads))
                                   for s in specs]
        yield PromptEncoder(specs, sessions, tokenizers)
