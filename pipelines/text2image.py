"""Text to image on Sessions: tokenize, encode prompt and negative prompt, denoise with classifier-free guidance
(the DenoiseRunner's loop, any diffusers scheduler), ``latents / scaling_factor`` through the VAE decoder.

What differs between pipelines (which hidden states, the unconditional row, added conditions such as SDXL's, the
latent layout) is the work folder's family's (pipelines/families/); this module puts the components together.
The component layout comes from export.json (``family``, ``text_to_image`` and ``components``, written by export).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from engines.ort_session import OrtSession
from engines.session import Session
from pipelines.conditioning import Conditioning
from pipelines.families.family import Family, PromptRequest
from pipelines.families.registry import family_of
from pipelines.families.transformer_runtime import adapt_denoiser
from pipelines.prompt_encoder import PromptEncoder, TextEncoderSpec, component_session, open_prompt_encoder
from pipelines.runner import DenoiseRunner, StepCallback, to_images


@dataclass(frozen=True)
class TextToImageSpec:
    """How a work folder's components fit together (from export.json)."""

    text_encoders: tuple[TextEncoderSpec, ...]
    vae_file: str
    scaling_factor: float
    shift_factor: float | None
    image_size: tuple[int, int]
    family: Family
    force_zeros_for_empty_prompt: bool
    denoiser_inputs: Mapping[str, Any] = field(default_factory=dict)  # export.json ``inputs``

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
                               (int(t2i["image_size"][0]), int(t2i["image_size"][1])), family_of(info),
                               bool(t2i["force_zeros_for_empty_prompt"]), info.get("inputs", {}))


def is_text_to_image(info: dict[str, Any]) -> bool:
    """True when export.json describes a text-to-image pipeline (its family has text encoders, exported with the
    VAE decoder)."""
    return family_of(info).text_to_image and info.get("text_to_image") is not None


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
        """Final latents (the scheduler's layout) -> images N×3×H×W in [0, 1] (see ``decode_latents``)."""
        return decode_latents(self.spec, self.vae, latents, batch_size or self.runner.batch_size)

    def generate(self, cond: Conditioning, noise: np.ndarray, num_steps: int, seed: int = 0,
                 callback: StepCallback | None = None, **step_options: Any) -> tuple[np.ndarray, np.ndarray]:
        """Images N×3×H×W in [0, 1] and final latents from ``noise`` (x_T latents, N×C×h×w) under ``cond``."""
        latents = self.runner.sample(noise, num_steps, seed=seed, cond=cond, callback=callback, **step_options)
        return self.decode(latents), latents


def decode_latents(spec: TextToImageSpec, vae: Session, latents: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Final latents (the scheduler's layout, unpacked by the family to N×C×h×w) -> images N×3×H×W in [0, 1]:
    ``latents / scaling_factor (+ shift_factor)`` through the VAE decoder, then ``x / 2 + 0.5`` clamped, as
    diffusers' image processor does."""
    z = spec.family.unpack_latents(latents) / spec.scaling_factor
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
    """See ``TextToImage.conditioning``: the family's rule, with the folder's image size and empty-prompt flag."""
    request = PromptRequest(tuple(prompts), negative_prompt, guidance_scale, spec.image_size,
                            spec.force_zeros_for_empty_prompt, spec.denoiser_inputs)
    return spec.family.prompt_conditioning(encoder, request)


@contextlib.contextmanager
def open_text_to_image(work_root: Path, info: dict[str, Any], unet: Session, scheduler: Any, batch_size: int = 16,
                       threads: int = 0, backend: str = "ort") -> Iterator[TextToImage]:
    """A TextToImage over ``unet`` (activated here) and the work folder's float text encoder(s) and VAE decoder
    (they stay float, only the UNet is quantized: ONNX Runtime FP32, or their FP16 engines with backend "trt")."""
    spec = TextToImageSpec.from_export_info(info, Path(work_root))
    with contextlib.ExitStack() as stack:
        encoder = stack.enter_context(open_prompt_encoder(work_root, spec.text_encoders, threads, backend))
        vae = stack.enter_context(component_session(work_root, spec.vae_file, backend, threads))
        denoiser, scheduler = adapt_denoiser(spec.family, info, unet, scheduler)  # transformer families
        stack.enter_context(denoiser)
        yield TextToImage(spec, encoder, DenoiseRunner(denoiser, scheduler, batch_size=batch_size), vae)
