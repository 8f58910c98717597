"""Tiny random text-to-image pipelines built in code (SD and SDXL structure), saved as diffusers pipeline folders.

The tokenizer is a CLIP tokenizer with a character vocabulary built here (no merges: one token per character), so
nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SEQ_LEN = 24
IMAGE_SIZE = 16  # pixels; latents 4×8×8 (VAE scale factor 2)
SD_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                                "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                                "steps_offset": 1, "prediction_type": "epsilon"}


def build_tokenizer(folder: Path, max_length: int = SEQ_LEN) -> Any:
    """A character-level CLIPTokenizer saved to ``folder`` (the library's, as ``export --arch sd15`` uses)."""
    from exporter.random_pipelines import build_char_tokenizer

    return build_char_tokenizer(folder, max_length)


def _text_encoder(vocab: int, hidden: int, projection: bool, seed: int) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=SEQ_LEN + 8, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, projection_dim=hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _vae(seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], latent_channels=4,
                         norm_num_groups=4, sample_size=IMAGE_SIZE, scaling_factor=0.18215).eval()


def _perturb(module: Any) -> Any:
    """Zero-initialised output layers get small random weights, so every path of the random model matters."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return module


def build_sd_pipeline(folder: Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionPipeline folder: CLIP text encoder (hidden 16), UNet on 4×8×8 latents, VAE, DDIM."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tok = build_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=[8, 16], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=16,
                                attention_head_dim=2, norm_num_groups=4).eval()
    pipe = StableDiffusionPipeline(vae=_vae(seed + 1), text_encoder=_text_encoder(len(tok), 16, False, seed + 2),
                                   tokenizer=tok, unet=_perturb(unet), scheduler=DDIMScheduler(**SD_SCHEDULER),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def build_sdxl_pipeline(folder: Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionXLPipeline folder: two CLIP encoders (hidden 16 + 16, the second with a projection),
    a UNet with the text_time added conditions, VAE, Euler (SDXL's default scheduler)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tok = build_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=[8, 16], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                                up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=4, use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=4,
                                projection_class_embeddings_input_dim=6 * 4 + 16).eval()
    pipe = StableDiffusionXLPipeline(
        vae=_vae(seed + 1), text_encoder=_text_encoder(len(tok), 16, False, seed + 2),
        text_encoder_2=_text_encoder(len(tok), 16, True, seed + 3), tokenizer=tok, tokenizer_2=tok,
        unet=_perturb(unet), scheduler=EulerDiscreteScheduler(**{k: v for k, v in SD_SCHEDULER.items()
                                                                  if k not in ("clip_sample", "set_alpha_to_one")}),
        add_watermarker=False)
    pipe.save_pretrained(folder)
    return folder
