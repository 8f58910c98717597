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


# --- transformer denoisers (SD3, FLUX, PixArt, DiT) ------------------------------------------------------------------

T5_LEN = 16  # T5 tokens of the tiny pipelines (diffusers' max_sequence_length for them)
T5_DIM = 32  # T5 d_model of the tiny pipelines
FLOW_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}  # SD3's FlowMatchEulerDiscreteScheduler
FLUX_DEV_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
                                      "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                                      "max_image_seq_len": 4096}
FLUX_SCHNELL_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def build_t5_tokenizer(folder: Path, max_length: int = T5_LEN) -> Any:
    """A T5TokenizerFast over a Unigram model (``tokenizers``) of single characters and "▁"-prefixed characters,
    saved to ``folder``: <pad>=0, </s>=1, <unk>=2, no extra ids, as T5's own layout (nothing downloaded)."""
    import string

    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for c in string.ascii_lowercase + string.digits + ".,!?-'":
        pieces += [("▁" + c, -3.0), (c, -4.0)]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)
    tok.save_pretrained(str(folder))
    return tok


def _t5(vocab: int, seed: int) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab, d_model=T5_DIM, d_kv=8, d_ff=2 * T5_DIM, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(cfg).eval()


def _flow_vae(seed: int, shift: float | None) -> Any:
    """The tiny VAE with SD3/FLUX-style ``shift_factor`` (and a scaling factor other than SD's)."""
    vae = _vae(seed)
    vae.register_to_config(scaling_factor=1.5, shift_factor=shift)
    return vae


def build_sd3_pipeline(folder: Path, seed: int = 0, t5: bool = True) -> Path:
    """A tiny StableDiffusion3Pipeline folder: CLIP-L and CLIP-G with projections (hidden 16 each, padded to T5's
    width 32), T5 (or ``text_encoder_3=None`` with ``t5=False``), an MMDiT on 4×8×8 latents (head_dim 16), VAE with
    shift factor, FlowMatchEulerDiscreteScheduler with shift 3."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tok = build_tokenizer(folder / "tokenizer")
    t5_tok = build_t5_tokenizer(folder / "tokenizer_3") if t5 else None
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=IMAGE_SIZE // 2, patch_size=2, in_channels=4, num_layers=2,
                                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_DIM,
                                        caption_projection_dim=32, pooled_projection_dim=32, out_channels=4,
                                        pos_embed_max_size=16).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=_perturb(transformer), scheduler=FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULER),
        vae=_flow_vae(seed + 1, 0.1), text_encoder=_text_encoder(len(tok), 16, True, seed + 2), tokenizer=tok,
        text_encoder_2=_text_encoder(len(tok), 16, True, seed + 3), tokenizer_2=tok,
        text_encoder_3=_t5(len(t5_tok), seed + 4) if t5_tok is not None else None, tokenizer_3=t5_tok)
    pipe.save_pretrained(folder)
    return folder


def build_flux_pipeline(folder: Path, seed: int = 0, guidance: bool = True) -> Path:
    """A tiny FluxPipeline folder: CLIP (pooled, hidden 16) + T5, a FLUX transformer on 2×2-packed 4×8×8 latents
    (16 tokens × 16 channels, head_dim 16 = RoPE axes 4+6+6); ``guidance`` True: dev-type (guidance embedding,
    dynamic shifting), False: schnell-type (no guidance embedding, shift 1)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tok = build_tokenizer(folder / "tokenizer")
    t5_tok = build_t5_tokenizer(folder / "tokenizer_2")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_DIM,
                                         pooled_projection_dim=16, guidance_embeds=guidance,
                                         axes_dims_rope=(4, 6, 6)).eval()
    sched = FLUX_DEV_SCHEDULER if guidance else FLUX_SCHNELL_SCHEDULER
    pipe = FluxPipeline(transformer=_perturb(transformer), scheduler=FlowMatchEulerDiscreteScheduler(**sched),
                        vae=_flow_vae(seed + 1, 0.1), text_encoder=_text_encoder(len(tok), 16, False, seed + 2),
                        tokenizer=tok, text_encoder_2=_t5(len(t5_tok), seed + 3), tokenizer_2=t5_tok)
    pipe.save_pretrained(folder)
    return folder


def build_pixart_pipeline(folder: Path, seed: int = 0, sigma: bool = False) -> Path:
    """A tiny PixArtAlphaPipeline folder (``sigma``: PixArtSigmaPipeline): T5, a PixArt transformer with adaLN-single
    and learned sigma (8 output channels for 4 latent channels; width 24, divisible by 3 for the size embedder), VAE, DPM-Solver. The α one has ``sample_size`` 128,
    which is what makes diffusers feed the resolution and aspect-ratio conditions; it is run on 8×8 latents."""
    import torch
    from diffusers import (DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline,
                           PixArtTransformer2DModel)

    t5_tok = build_t5_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=8,
                                           num_layers=2, cross_attention_dim=24, caption_channels=T5_DIM,
                                           sample_size=IMAGE_SIZE // 2 if sigma else 128, patch_size=2,
                                           norm_type="ada_norm_single", norm_elementwise_affine=False,
                                           norm_eps=1e-6, use_additional_conditions=not sigma).eval()
    cls = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                                        beta_schedule="linear")
    pipe = cls(tokenizer=t5_tok, text_encoder=_t5(len(t5_tok), seed + 2), vae=_vae(seed + 1),
               transformer=_perturb(transformer), scheduler=sched)
    pipe.save_pretrained(folder)
    return folder


def build_dit_pipeline(folder: Path, seed: int = 0) -> Path:
    """A tiny DiTPipeline folder: class-conditional DiT (1000 classes + the null class, learned sigma) on 4×8×8
    latents, VAE, DDIM; labels "zero".."nine" for classes 0..9."""
    import torch
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=2, sample_size=IMAGE_SIZE // 2, patch_size=2,
                                        num_embeds_ada_norm=1000).eval()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    pipe = DiTPipeline(transformer=_perturb(transformer), vae=_vae(seed + 1), scheduler=sched,
                       id2label={i: n for i, n in enumerate(names)})
    pipe.save_pretrained(folder)
    return folder
