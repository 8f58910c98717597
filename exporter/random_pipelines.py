"""Text-to-image pipeline structures with random weights (``export --arch sd15``), saved as local pipeline folders.

Nothing is downloaded: the tokenizer is a CLIP tokenizer over a character vocabulary built here (no merges: one token
per character), padded to the real model's 77 tokens; the text encoder keeps CLIP ViT-L/14's vocabulary size, so its
embedding table, and every other layer, has the real size. Good for export, memory and speed measurements, not for
images.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.lazy import lazy_import
from exporter.architectures import SD15_SCHEDULER, SD15_UNET

# openai/clip-vit-large-patch14's text tower (Stable Diffusion 1.x) and SD 1.5's VAE.
SD15_TEXT_ENCODER: dict[str, Any] = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
                                     "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
                                     "hidden_act": "quick_gelu", "projection_dim": 768}
SD15_VAE: dict[str, Any] = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
                            "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
                            "up_block_types": ["UpDecoderBlock2D"] * 4, "norm_num_groups": 32, "sample_size": 512,
                            "scaling_factor": 0.18215}


@dataclass(frozen=True)
class PipelineArchitecture:
    """A named text-to-image structure: text encoder, UNet and VAE configs, scheduler, tokenizer length."""

    name: str
    text_encoder: dict[str, Any]
    unet: dict[str, Any]
    vae: dict[str, Any]
    scheduler: dict[str, Any]
    max_length: int = 77


PIPELINE_ARCHITECTURES: dict[str, PipelineArchitecture] = {
    "sd15": PipelineArchitecture("sd15", SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE, SD15_SCHEDULER),
}


def build_char_tokenizer(folder: Path, max_length: int) -> Any:
    """A character-level CLIPTokenizer (lower-case letters, digits, punctuation) saved to ``folder``."""
    transformers = lazy_import("transformers")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,!?-'":
        for token in (c, c + "</w>"):
            vocab.setdefault(token, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                     model_max_length=max_length)
    tok.save_pretrained(str(folder))
    return tok


def build_random_pipeline(name: str, folder: Path, seed: int = 0) -> Path:
    """Save a StableDiffusionPipeline of structure ``name`` with random weights (seeded) to ``folder``."""
    if name not in PIPELINE_ARCHITECTURES:
        raise UserError(f"unknown pipeline --arch '{name}'; known: {', '.join(PIPELINE_ARCHITECTURES)}")
    arch = PIPELINE_ARCHITECTURES[name]
    torch = lazy_import("torch")
    diffusers = lazy_import("diffusers")
    transformers = lazy_import("transformers")
    tok = build_char_tokenizer(folder / "tokenizer", arch.max_length)
    torch.manual_seed(seed)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                                                  **arch.text_encoder)).eval()
    unet = diffusers.UNet2DConditionModel(**arch.unet).eval()
    vae = diffusers.AutoencoderKL(**arch.vae).eval()
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                             scheduler=diffusers.PNDMScheduler.from_config(arch.scheduler), safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
