"""Text to image on Sessions: tokenize, encode prompt and negative prompt, denoise with classifier-free guidance
(the DenoiseRunner's loop, any diffusers scheduler), ``latents / scaling_factor`` through the VAE decoder.

What it does is what diffusers' ``StableDiffusionPipeline`` and ``StableDiffusionXLPipeline`` do, step for step:
- SD: the text encoder's ``last_hidden_state`` for the prompt and for the negative prompt (the empty prompt
  by default), both padded to the tokenizer's length.
- SDXL: the penultimate hidden states of both encoders concatenated; the second encoder's pooled projection and
  the size ids ``(H, W, 0, 0, H, W)`` as the UNet's added conditions; with ``force_zeros_for_empty_prompt`` and no
  negative prompt, zero embeddings for the unconditional half.
The component layout comes from export.json (``text_to_image`` and ``components``, written by export).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from engines.ort_session import OrtSession
from pipelines.conditioning import Conditioning
from pipelines.runner import DenoiseRunner, StepCallback, to_images
from engines.session import Session
from pipelines.tokenizers import load_tokenizer, tokenize


@dataclass(frozen=True)
class TextEncoderSpec:
    """One exported text encoder: ONNX file, tokenizer folder, sequence length, which outputs the UNet takes."""

    name: str
    file: str
    tokenizer_dir: Path
    sequence_length: int
    hidden_output: str
    pooled_output: str | None


@dataclass(frozen=True)
class TextToImageSpec:
    """How a work folder's components fit together (from export.json)."""

    text_encoders: tuple[TextEncoderSpec, ...]
    vae_file: str
    scaling_factor: float
    shift_factor: float | None
    image_size: tuple[int, int]
    sdxl: bool
    force_zeros_for_empty_prompt: bool

    @staticmethod
    def from_export_info(info: dict[str, Any], work_root: Path) -> TextToImageSpec:
        """The spec of a text-to-image work folder; a UserError when the folder holds only a UNet."""
        t2i = info.get("text_to_image")
        if t2i is None:
            raise UserError(f"work folder '{work_root}' has no text encoder: it was exported from a UNet, not a "
                            "text-to-image pipeline folder (use --cond, or export the pipeline folder)")
        comps = info["components"]
        encoders = tuple(
            TextEncoderSpec(name, comps[name]["file"], Path(comps[name]["tokenizer_dir"]),
                            int(comps[name]["sequence_length"]), comps[name]["hidden_output"],
                            comps[name]["pooled_output"])
            for name in t2i["text_encoders"])
        vae = comps[t2i["vae_decoder"]]
        return TextToImageSpec(encoders, vae["file"], float(vae["scaling_factor"]), vae.get("shift_factor"),
                               (int(t2i["image_size"][0]), int(t2i["image_size"][1])), bool(t2i["sdxl"]),
                               bool(t2i["force_zeros_for_empty_prompt"]))


def is_text_to_image(info: dict[str, Any]) -> bool:
    """True when export.json describes a text-to-image pipeline (text encoder(s) and VAE exported)."""
    return info.get("text_to_image") is not None


@dataclass(frozen=True)
class PromptEmbeddings:
    """Encoded prompts: ``hidden`` N×L×D (what the UNet cross-attends to); ``pooled`` N×P (SDXL) or None."""

    hidden: np.ndarray
    pooled: np.ndarray | None


class PromptEncoder:
    """Tokenizers and text-encoder Sessions (active) of one work folder."""

    def __init__(self, specs: tuple[TextEncoderSpec, ...], sessions: list[Session], tokenizers: list[Any]) -> None:
        self.specs = specs
        self.sessions = sessions
        self.tokenizers = tokenizers

    def encode(self, prompts: list[str], warn: bool = True) -> PromptEmbeddings:
        """Embeddings of ``prompts``; a prompt longer than the tokenizer's length is truncated with a warning."""
        hidden, pooled = [], None
        for spec, sess, tok in zip(self.specs, self.sessions, self.tokenizers, strict=True):
            ids = tokenize(tok, prompts, spec.sequence_length, warn=warn)
            out = sess.run({"input_ids": ids})
            hidden.append(out[spec.hidden_output].astype(np.float32, copy=False))
            if spec.pooled_output is not None and pooled is None:  # diffusers: the first pooled output
                pooled = out[spec.pooled_output].astype(np.float32, copy=False)
        return PromptEmbeddings(np.concatenate(hidden, axis=-1), pooled)


class TextToImage:
    """Prompt in, image out, over active Sessions: text encoder(s), the UNet (in ``runner``) and the VAE decoder."""

    def __init__(self, spec: TextToImageSpec, encoder: PromptEncoder, runner: DenoiseRunner, vae: Session) -> None:
        self.spec = spec
        self.encoder = encoder
        self.runner = runner
        self.vae = vae

    def conditioning(self, prompts: list[str], negative_prompt: str | None = None,
                     guidance_scale: float = 7.5) -> Conditioning:
        """Conditioning for ``prompts`` (one row each): the negative prompt (None: the empty prompt, or zeros where
        the pipeline's ``force_zeros_for_empty_prompt`` says so) is the unconditional row; no guidance at scale <= 1
        (as diffusers)."""
        return prompt_conditioning(self.spec, self.encoder, prompts, negative_prompt, guidance_scale)

    def decode(self, latents: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Final latents N×C×h×w -> images N×3×H×W in [0, 1] (see ``decode_latents``)."""
        return decode_latents(self.spec, self.vae, latents, batch_size or self.runner.batch_size)

    def generate(self, cond: Conditioning, noise: np.ndarray, num_steps: int, seed: int = 0,
                 callback: StepCallback | None = None, **step_options: Any) -> tuple[np.ndarray, np.ndarray]:
        """Images N×3×H×W in [0, 1] and final latents from ``noise`` (x_T latents, N×C×h×w) under ``cond``."""
        latents = self.runner.sample(noise, num_steps, seed=seed, cond=cond, callback=callback, **step_options)
        return self.decode(latents), latents


def decode_latents(spec: TextToImageSpec, vae: Session, latents: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Final latents N×C×h×w -> images N×3×H×W in [0, 1]: ``latents / scaling_factor (+ shift_factor)`` through the
    VAE decoder, then ``x / 2 + 0.5`` clamped, as diffusers' image processor does."""
    z = latents / spec.scaling_factor
    if spec.shift_factor is not None:
        z = z + spec.shift_factor
    out = [vae.run({"latents": np.ascontiguousarray(z[i : i + batch_size], dtype=np.float32)})["images"]
           for i in range(0, len(z), batch_size)]
    return to_images(np.concatenate(out))


def latent_decoder(work_root: Path, info: dict[str, Any], threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Final UNet samples -> images in [0, 1]: through the work folder's VAE decoder for a text-to-image folder
    (a session opened per call), ``to_images`` for a pixel model."""
    if not is_text_to_image(info):
        return to_images
    spec = TextToImageSpec.from_export_info(info, Path(work_root))

    def decode(latents: np.ndarray) -> np.ndarray:
        with OrtSession(Path(work_root) / spec.vae_file, threads=threads) as vae:
            return decode_latents(spec, vae, latents)

    return decode


def prompt_conditioning(spec: TextToImageSpec, encoder: PromptEncoder, prompts: list[str],
                        negative_prompt: str | None, guidance_scale: float) -> Conditioning:
    """See ``TextToImage.conditioning``."""
    if not prompts:
        raise UserError("no prompt given")
    pos = encoder.encode(prompts)
    guided = guidance_scale > 1.0
    time_ids = None
    if spec.sdxl:
        h, w = spec.image_size
        time_ids = np.asarray([[h, w, 0, 0, h, w]], dtype=np.float32)
    uncond, uncond_pooled = None, None
    if guided:
        if negative_prompt is None and spec.force_zeros_for_empty_prompt:
            uncond = np.zeros_like(pos.hidden[:1])
            uncond_pooled = None if pos.pooled is None else np.zeros_like(pos.pooled[:1])
        else:
            neg = encoder.encode([negative_prompt or ""])
            uncond, uncond_pooled = neg.hidden, neg.pooled
    added: dict[str, np.ndarray] = {}
    added_uncond: dict[str, np.ndarray] = {}
    if spec.sdxl:  # SDXL's added conditions: pooled prompt embedding and size ids (the same ids for both halves)
        assert pos.pooled is not None and time_ids is not None
        added = {"text_embeds": pos.pooled, "time_ids": time_ids}
        if guided:
            assert uncond_pooled is not None
            added_uncond = {"text_embeds": uncond_pooled, "time_ids": time_ids}
    return Conditioning(pos.hidden, uncond, guidance_scale, added, added_uncond)


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
def open_prompt_encoder(work_root: Path, spec: TextToImageSpec, threads: int = 0,
                        backend: str = "ort") -> Iterator[PromptEncoder]:
    """The tokenizers (from the source folder export.json names) and the float text encoder(s)."""
    tokenizers = [load_tokenizer(s.tokenizer_dir) for s in spec.text_encoders]
    with contextlib.ExitStack() as stack:
        sessions: list[Session] = [stack.enter_context(component_session(work_root, s.file, backend, threads))
                                   for s in spec.text_encoders]
        yield PromptEncoder(spec.text_encoders, sessions, tokenizers)


@contextlib.contextmanager
def open_text_to_image(work_root: Path, info: dict[str, Any], unet: Session, scheduler: Any, batch_size: int = 16,
                       threads: int = 0, backend: str = "ort") -> Iterator[TextToImage]:
    """A TextToImage over ``unet`` (activated here) and the work folder's float text encoder(s) and VAE decoder
    (they stay float, only the UNet is quantized: ONNX Runtime FP32, or their FP16 engines with backend "trt")."""
    spec = TextToImageSpec.from_export_info(info, Path(work_root))
    with contextlib.ExitStack() as stack:
        encoder = stack.enter_context(open_prompt_encoder(work_root, spec, threads, backend))
        vae = stack.enter_context(component_session(work_root, spec.vae_file, backend, threads))
        stack.enter_context(unet)
        yield TextToImage(spec, encoder, DenoiseRunner(unet, scheduler, batch_size=batch_size), vae)
