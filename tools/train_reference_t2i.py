"""Train the bundled text-to-image reference model: a tiny Stable-Diffusion-structured pipeline on scikit-learn's digits.

Usage: ``python -m tools train-reference-t2i OUT_DIR [--steps 3100] [--vae-steps 300] [--seed 0] [--threads 1] [--force]``
(the defaults are the bundled model's one-run recipe: 24 minutes on 2 shared cores, models/digits-t2i/README.md).
Writes a diffusers ``StableDiffusionPipeline`` folder (``tokenizer/``, ``text_encoder/``, ``vae/``, ``unet/``,
``scheduler/``, ``model_index.json``), ``prompts.txt``, ``training.json``, a sample grid and a model card.
Stages: (1) a CLIP tokenizer built from the prompt vocabulary, (2) an ``AutoencoderKL`` (3×32×32 <-> 4×8×8) trained on
the digits, its ``scaling_factor`` set to 1 / the latents' measured std, (3) the ``UNet2DConditionModel`` and the
``CLIPTextModel`` trained jointly (ε-prediction) on the scaled latents with random phrasings of each image's digit and
the empty prompt 10% of the time (classifier-free guidance), EMA weights saved, (4) prompt following measured through
diffusers' own pipeline. Deterministic from the seed and thread count on one machine (FP32: this CPU has no bf16
units, where autocast to bf16 measured 5× slower).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_dir
from common.errors import UserError
from common.images import save_grid
from common.lazy import lazy_import
from tools.cli_parser import CliParser
from tools.t2i_tokenizer import build_tokenizer, save_tokenizer
from tools.t2i_training import (add_training_arguments, build_vae, checked_classifier, digits_rgb, encode_dataset,
                                loss_curve, prompt_table, recon_psnr_db, sample_batch, train_vae, train_with_ema)
from tools.t2i_training import measure_prompt_following as measure_with_pipeline
from validation.digit_prompts import TEMPLATES, VOCABULARY, all_prompts

# Stable Diffusion 1.x's noise schedule, with DDIM as the saved scheduler.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class T2IConfig:
    """Sizes and training settings of the text-to-image reference model (defaults: the bundled model)."""

    vae_channels: tuple[int, ...] = (16, 32, 32)  # len 3: 32×32 images -> 8×8 latents
    vae_groups: int = 8
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers: int = 1
    unet_groups: int = 8
    unet_head_dim: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 16  # tokens, BOS and EOS included
    image_size: int = 32
    vae_steps: int = 300
    steps: int = 3100  # UNet + text encoder steps
    batch: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-4  # per latent element, against the per-pixel MSE
    uncond_prob: float = 0.1
    ema_decay: float = 0.995
    seed: int = 0
    threads: int = 1  # two fell to 0.15-0.25 it/s on the shared 2-core machine, one kept 2.3-2.5 (model card)


def build_models(cfg: T2IConfig, vocab_size: int, bos: int, eos: int) -> tuple[Any, Any, Any]:
    """Untrained (vae, text_encoder, unet) with the sizes of ``cfg``."""
    diffusers = lazy_import("diffusers")
    transformers = lazy_import("transformers")
    n = len(cfg.vae_channels)
    vae = build_vae(cfg)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, projection_dim=cfg.text_hidden,
        max_position_embeddings=cfg.max_length, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))
    m = len(cfg.unet_channels)
    unet = diffusers.UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (n - 1), in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        block_out_channels=cfg.unet_channels, layers_per_block=cfg.unet_layers,
        down_block_types=("CrossAttnDownBlock2D",) * m, up_block_types=("CrossAttnUpBlock2D",) * m,
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.unet_head_dim, norm_num_groups=cfg.unet_groups)
    return vae, text_encoder, unet


def train_denoiser(unet: Any, text_encoder: Any, latents: tuple[Any, Any], labels: Any, tokenizer: Any,
                   scheduler: Any, cfg: T2IConfig, gen: Any) -> tuple[Any, Any, list[float]]:
    """Train UNet and text encoder jointly (ε-MSE); returns their EMA copies and the losses.

    ``latents``: posterior (mean, std), N×C×h×w each, already multiplied by the scaling factor; ``labels``: N digits.
    """
    torch = lazy_import("torch")
    prompts = prompt_table(tokenizer)
    alphas = scheduler.alphas_cumprod

    def loss_fn() -> Any:
        x0, ids = sample_batch(latents, labels, prompts, cfg.batch, cfg.uncond_prob, gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = text_encoder(ids).last_hidden_state
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        return (pred - noise).pow(2).mean()

    ema, losses = train_with_ema(torch.nn.ModuleList([unet, text_encoder]), loss_fn, cfg.steps, cfg.lr,
                                 cfg.ema_decay, "unet+text")
    return ema[0], ema[1], losses


def train(out: Path, cfg: T2IConfig, command: str, classifier: Path | None = None, guidance_scale: float = 5.0,
          images_per_digit: int = 10, init: Path | None = None) -> dict[str, Any]:
    """Train every component and write the pipeline folder to ``out`` atomically; return the training record.

    With ``init`` (a folder this function wrote), training continues from its weights (VAE trained further only if
    ``cfg.vae_steps`` > 0); its record is kept under ``"init"`` so the whole history stays in ``training.json``.

    With ``classifier`` (the digit-classifier folder), prompt following is measured on the written folder
    (:func:`measure_prompt_following`, DDIM 50 steps, ``guidance_scale``) and recorded.
    """
    torch = lazy_import("torch")
    diffusers = lazy_import("diffusers")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokenizer = build_tokenizer(VOCABULARY, cfg.max_length)
    vae, text_encoder, unet = build_models(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    previous = None
    if init is not None:
        transformers = lazy_import("transformers")
        vae = diffusers.AutoencoderKL.from_pretrained(str(init), subfolder="vae")
        text_encoder = transformers.CLIPTextModel.from_pretrained(str(init), subfolder="text_encoder")
        unet = diffusers.UNet2DConditionModel.from_pretrained(str(init), subfolder="unet")
        previous = json.loads((Path(init) / "training.json").read_text())
    images, labels = digits_rgb(cfg.image_size)

    start = time.time()
    vae_losses = train_vae(vae, images, cfg, gen) if cfg.vae_steps > 0 else []
    vae.eval().requires_grad_(False)
    vae_seconds = time.time() - start
    mean, std, sampled = encode_dataset(vae, images)
    latent_std = float(sampled.std())
    scaling = 1.0 / latent_std
    vae.register_to_config(scaling_factor=scaling)

    scheduler = diffusers.DDIMScheduler(**SCHEDULER_CONFIG)
    start = time.time()
    unet_ema, text_ema, losses = train_denoiser(unet, text_encoder, (mean * scaling, std * scaling), labels, tokenizer,
                                                scheduler, cfg, gen)
    denoiser_seconds = time.time() - start

    record: dict[str, Any] = {
        "command": command,
        "init": None if init is None else {"folder": str(init), "record": previous},
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "config": asdict(cfg),
        "vae_train_seconds": round(vae_seconds, 1),
        "unet_text_train_seconds": round(denoiser_seconds, 1),
        "train_wall_seconds": round(vae_seconds + denoiser_seconds, 1),
        "vae_final_loss_mean_last_100": round(float(np.mean(vae_losses[-100:])), 5) if vae_losses else None,
        "vae_recon_psnr_db_first_256": recon_psnr_db(vae, mean, images),
        "latent_std": round(latent_std, 5),
        "scaling_factor": scaling,
        "final_loss_mean_last_100": round(float(np.mean(losses[-100:])), 5),
        "vae_loss_curve_every_100": loss_curve(vae_losses),
        "loss_curve_every_100": loss_curve(losses),
        "parameters": {name: sum(p.numel() for p in m.parameters())
                       for name, m in (("vae", vae), ("text_encoder", text_ema), ("unet", unet_ema))},
        "machine": f"{platform.machine()} {platform.processor()} threads={torch.get_num_threads()}",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": lazy_import("transformers").__version__,
    }
    with atomic_dir(out) as tmp:
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae, text_encoder=text_ema, tokenizer=tokenizer, unet=unet_ema, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(tmp)
        save_tokenizer(tokenizer, VOCABULARY, tmp / "tokenizer")
        (tmp / "prompts.txt").write_text("\n".join(all_prompts()) + "\n")
        save_grid(images[:64].numpy() / 2 + 0.5, tmp / "training_data.png")
        if classifier is not None:
            start = time.time()
            result, samples = measure_prompt_following(tmp, classifier, images_per_digit=images_per_digit,
                                                       guidance_scale=guidance_scale, seed=cfg.seed)
            result["seconds"] = round(time.time() - start, 1)
            record["prompt_following"] = result
            save_grid(samples, tmp / "samples_ddim50.png", nrow=images_per_digit)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def measure_prompt_following(folder: Path, classifier: Path, images_per_digit: int = 10, steps: int = 50,
                             guidance_scale: float = 5.0, seed: int = 0) -> tuple[dict[str, Any], np.ndarray]:
    """Prompt following of a digits pipeline folder in PyTorch through diffusers' ``StableDiffusionPipeline``.

    Image i of digit d: prompt ``prompts_for_digit(d)[i % len(TEMPLATES)]``, initial latents from seed ``seed + i``
    (the same noise for every digit), DDIM ``steps`` steps, classifier-free guidance ``guidance_scale`` against the
    empty prompt. Returns the share of images the in-repo digit classifier reads as the asked digit (overall and per
    digit) and the images, 10·images_per_digit × 3 × 32 × 32 in [0, 1], digit by digit.
    """
    return measure_with_pipeline(folder, classifier, images_per_digit, steps, guidance_scale, seed, "DDIMScheduler")


def model_card(record: dict[str, Any]) -> str:
    """The model card (Markdown) for the trained text-to-image reference model."""
    cfg = record["config"]
    params = record["parameters"]
    pf = record.get("prompt_following")
    stages = [record]
    while stages[0].get("init"):
        stages.insert(0, stages[0]["init"]["record"])
    vae_stage = next((r for r in stages if r["config"]["vae_steps"] > 0), stages[0])
    history = "\n".join(
        f"  {i + 1}. `{r['command']}`: "
        + (f"VAE {r['config']['vae_steps']} steps ({r['vae_train_seconds']} s), " if r["config"]["vae_steps"] else
           "VAE kept, ")
        + f"UNet + text encoder {r['config']['steps']} steps ({r['unet_text_train_seconds']} s), seed "
        f"{r['config']['seed']}, batch {r['config']['batch']}, on {r['machine']}, finished "
        f"{r.get('date_utc', '?')} UTC, 1-minute load average {r.get('load_average_1min_at_end', '?')}"
        + ("" if i == 0 else f" (continues stage {i}'s weights)")
        for i, r in enumerate(stages))
    total = sum(r["train_wall_seconds"] for r in stages)
    unet_steps = sum(r["config"]["steps"] for r in stages)
    following = "not measured (no --classifier)" if pf is None else (
        f"**{pf['share'] * 100:.0f}%** of {pf['images']} images (per digit 0..9: "
        + ", ".join(f"{v * 100:.0f}%" for v in pf["per_digit"]) + ")")
    return f"""# digits-t2i: the bundled text-to-image reference model

A tiny Stable-Diffusion-structured pipeline (diffusers `StableDiffusionPipeline` folder) trained by this repository
on scikit-learn's bundled digits (1,797 8×8 images, bilinearly upsampled to 32×32, grey copied to 3 channels, [-1, 1])
with short prompts (`prompts.txt`: {len(TEMPLATES)} phrasings per digit). No download is involved.

- Tokenizer: `CLIPTokenizer` (byte-level BPE) whose vocabulary and merges are built here from the prompt words
  (`tools/t2i_tokenizer.py`); `model_max_length` {cfg['max_length']}; `<|endoftext|>` pads.
- Text encoder: `CLIPTextModel`, hidden {cfg['text_hidden']}, {cfg['text_layers']} layers, {cfg['text_heads']} heads
  ({params['text_encoder']:,} parameters), **trained jointly with the UNet** from scratch; the UNet attends to its
  `last_hidden_state`.
- VAE: `AutoencoderKL`, 3×32×32 ↔ {cfg['latent_channels']}×8×8, channels {tuple(cfg['vae_channels'])}, no attention
  ({params['vae']:,} parameters), trained first ({vae_stage['config']['vae_steps']} steps, MSE + {cfg['kl_weight']} × KL per element);
  `scaling_factor` = 1 / measured latent std = {record['scaling_factor']:.4f}; reconstruction PSNR
  {record['vae_recon_psnr_db_first_256']} dB (first 256 images, on [-1, 1]).
- UNet: `UNet2DConditionModel` on 4×8×8 latents, channels {tuple(cfg['unet_channels'])}, {cfg['unet_layers']} layer(s)
  per block, cross-attention in every block (head dim {cfg['unet_head_dim']}) ({params['unet']:,} parameters).
- Scheduler: `DDIMScheduler` with Stable Diffusion 1.x's schedule (1000 steps, scaled-linear betas 0.00085..0.012,
  ε-prediction, no clipping).
- Training: UNet + text encoder {unet_steps} steps in all, batch {cfg['batch']}, AdamW lr {cfg['lr']} (warm-up, cosine
  decay), FP32 on the CPU, each image's prompt a random phrasing of its digit, the empty prompt
  {cfg['uncond_prob'] * 100:.0f}% of the time (classifier-free guidance); EMA ({cfg['ema_decay']}) weights saved.
- Commands, in order ({total:.0f} s of training in all):
{history}
- Final loss (mean ε-MSE over the last 100 steps): {record['final_loss_mean_last_100']}
- Versions: torch {record['torch']}, diffusers {record['diffusers']}, transformers {record['transformers']}

## Prompt following (PyTorch FP32, diffusers' own `StableDiffusionPipeline`)
{following}. Settings: DDIM {pf['steps'] if pf else 50} steps, guidance scale {pf['guidance_scale'] if pf else '-'},
{pf['images_per_digit'] if pf else 10} images per digit (image i: phrasing i mod {len(TEMPLATES)}, seed {pf['seed'] if pf else 0}+i, the same
noise for every digit); the digit read by the in-repo classifier (`models/digit-classifier`) on the grey mean of the
3 channels. `samples_ddim50.png`: those images, one row per digit 0..9. `training_data.png`: the first 64 training
images. `training.json`: the full record and loss curves.
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools train-reference-t2i``."""
    p = CliParser(prog="python -m tools train-reference-t2i", description=__doc__.splitlines()[0])
    add_training_arguments(p, T2IConfig(), "UNet")
    p.add_argument("--init", type=Path, help="continue from the weights of a folder this command wrote "
                   "(--vae-steps 0 keeps its VAE); may be OUT itself with --force")
    args = p.parse_args(argv)
    if min(args.steps, args.batch, args.threads) < 1 or args.vae_steps < (0 if args.init else 1):
        raise UserError("--steps, --vae-steps, --batch and --threads must be positive (--vae-steps 0 needs --init)")
    if args.init is not None and not (args.init / "training.json").is_file():
        raise UserError(f"--init: '{args.init}' is not a folder written by train-reference-t2i (no training.json)")
    classifier = checked_classifier(args)
    cfg = T2IConfig(steps=args.steps, vae_steps=args.vae_steps, batch=args.batch, lr=args.lr, seed=args.seed,
                    threads=args.threads)
    command = "python -m tools train-reference-t2i " + " ".join(sys.argv[2:] if argv is None else argv)
    record = train(args.out, cfg, command, classifier, args.guidance_scale, init=args.init)  # replaces OUT atomically
    (args.out / "README.md").write_text(model_card(record))
    share = record.get("prompt_following", {}).get("share")
    print(f"trained in {record['train_wall_seconds']} s, final loss {record['final_loss_mean_last_100']}, "
          f"prompt following {share}: {args.out}")
    return 0
