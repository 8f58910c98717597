"""Recognise a local diffusers text-to-image pipeline folder and check that its components are there.

A text-to-image folder has a ``model_index.json`` naming its family's text encoders (pipelines/families/: SD's
``text_encoder``, SDXL's ``text_encoder`` and ``text_encoder_2``) beside the denoiser, ``vae`` and ``scheduler``;
each text encoder has its tokenizer (``tokenizer``, ``tokenizer_2``). A folder whose family has no text encoder (an
unconditional ``DDPMPipeline``) is not one: it exports as a bare denoiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.jsonfile import read_json
from common.lazy import lazy_import
from pipelines.families.family import Family
from pipelines.families.registry import family_for_pipeline

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


@dataclass(frozen=True)
class TextEncoderSource:
    """One text encoder: its folder and transformers class (from model_index.json), and its tokenizer folder."""

    name: str  # "text_encoder" or "text_encoder_2"
    folder: Path
    class_name: str  # e.g. "CLIPTextModel", "CLIPTextModelWithProjection"
    tokenizer_dir: Path
    hidden_output: str  # the hidden state the denoiser takes (pipelines.families.family.LAST_HIDDEN, ...)


@dataclass(frozen=True)
class PipelineSource:
    """A located text-to-image pipeline folder of ``family``. force_zeros_for_empty_prompt: model_index.json's flag,
    else the family's default (no negative prompt -> zero embeddings instead of the empty prompt's)."""

    root: Path
    class_name: str
    text_encoders: tuple[TextEncoderSource, ...]
    vae_dir: Path
    family: Family
    force_zeros_for_empty_prompt: bool


def _component(index: dict[str, Any], name: str) -> tuple[str, str] | None:
    """(library, class) of a component listed in model_index.json, or None when absent or null."""
    entry = index.get(name)
    if isinstance(entry, list) and len(entry) == 2 and entry[0] and entry[1]:
        return str(entry[0]), str(entry[1])
    return None


def locate_pipeline(model_dir: Path) -> PipelineSource | None:
    """The text-to-image pipeline in ``model_dir``, or None when it is not one (its family has no text encoder).

    A text encoder listed without its folder, tokenizer or the VAE is a UserError naming what is missing."""
    model_dir = Path(model_dir)
    index = read_json(model_dir / "model_index.json")
    if index is None:
        return None
    cls = str(index.get("_class_name", ""))
    family = family_for_pipeline(cls, [k for k in index if _component(index, k) is not None])
    listed = [slot for slot in family.text_encoders if _component(index, slot.encoder) is not None]
    if not listed:
        return None
    encoders = []
    for slot in listed:
        enc, tok = slot.encoder, slot.tokenizer
        lib_cls = _component(index, enc)
        assert lib_cls is not None
        folder, tok_dir = model_dir / enc, model_dir / tok
        if not (folder / "config.json").is_file():
            raise UserError(f"--model '{model_dir}': model_index.json lists {enc} but '{folder}' has no config.json")
        if _component(index, tok) is None or not any((tok_dir / f).is_file() for f in TOKENIZER_FILES):
            raise UserError(f"--model '{model_dir}': {enc} has no tokenizer ('{tok_dir}' with one of "
                            f"{', '.join(TOKENIZER_FILES)}); a text-to-image pipeline needs its tokenizer")
        encoders.append(TextEncoderSource(enc, folder, lib_cls[1], tok_dir, slot.hidden_output))
    vae_dir = model_dir / "vae"
    if _component(index, "vae") is None or not (vae_dir / "config.json").is_file():
        raise UserError(f"--model '{model_dir}': no VAE ('{vae_dir}' with config.json); a text-to-image pipeline "
                        "needs its VAE to decode latents into images")
    if _component(index, family.denoiser_folder) is None:
        raise UserError(f"--model '{model_dir}': model_index.json lists no {family.denoiser_folder} (transformer-based "
                        "pipelines are not supported)")
    force_zeros = bool(index.get("force_zeros_for_empty_prompt", family.force_zeros))
    return PipelineSource(model_dir, cls, tuple(encoders), vae_dir, family, force_zeros)


def load_text_encoder(source: TextEncoderSource) -> Any:
    """The transformers text encoder in FP32, eval mode, from local files only."""
    transformers = lazy_import("transformers")
    cls = getattr(transformers, source.class_name, None)
    if cls is None:
        raise UserError(f"'{source.folder}': unknown text encoder class {source.class_name} in model_index.json")
    try:
        model = cls.from_pretrained(source.folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot load the text encoder from '{source.folder}': {_first_line(exc)}") from exc
    return model.float().eval()


def load_vae(vae_dir: Path) -> Any:
    """The diffusers AutoencoderKL in FP32, eval mode, from local files only."""
    diffusers = lazy_import("diffusers")
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(vae_dir, local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot load the VAE from '{vae_dir}': {_first_line(exc)}") from exc
    return vae.float().eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
