"""Train the bundled transformer text-to-image model: a tiny Stable-Diffusion-3-structured pipeline on the digits.

Usage: ``python -m tools train-reference-mmdit OUT_DIR [--steps N] [--seed 0] [--threads 1] [--force]``
(the defaults are the bundled model's one-run recipe, models/digits-mmdit/README.md).
Writes a diffusers ``StableDiffusion3Pipeline`` folder (``tokenizer/``, ``tokenizer_2/``, ``text_encoder/`` (CLIP-L-like),
``text_encoder_2/`` (CLIP-G-like), no T5 (``text_encoder_3``/``tokenizer_3`` None, as diffusers allows),
``transformer/`` (``SD3Transformer2DModel``, MMDiT), ``vae/``, ``scheduler/`` (``FlowMatchEulerDiscreteScheduler``
with its shift), ``model_index.json``), ``prompts.txt``, ``training.json``, a sample grid and a model card.
Stages: (1) one CLIP tokenizer built from the prompt vocabulary (both CLIP slots), (2) the VAE of
``train-reference-t2i`` (tools/t2i_training.py), its ``shift_factor`` = the latents' measured mean and
``scaling_factor`` = 1 / their std, (3) the transformer and both text encoders trained jointly by rectified flow as
diffusers' SD3 training script (``examples/dreambooth/train_dreambooth_sd3.py``), with 10% empty prompts for
classifier-free guidance and EMA, (4) prompt following measured through diffusers' own ``StableDiffusion3Pipeline``.
"""

from __future__ import annotations

import json
import math
import os
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
from common.machine import machine
from tools.cli_parser import CliParser
from tools.t2i_tokenizer import build_tokenizer, save_tokenizer
from tools.t2i_training import (add_training_arguments, build_vae, checked_classifier, digits_rgb, encode_dataset,
                                loss_curve, measure_prompt_following, prompt_table, recon_psnr_db, sample_batch,
                                train_vae, train_with_ema)
from validation.digit_prompts import TEMPLATES, VOCABULARY, all_prompts

WEIGHTINGS = ("logit_normal", "uniform")


@dataclass(frozen=True)
class MMDiTConfig:
    """Sizes and training settings of the MMDiT reference model (defaults: the bundled model)."""

    vae_channels: tuple[int, ...] = (16, 32, 32)  # len 3: 32×32 images -> 8×8 latents (vae_scale_factor 4)
    vae_groups: int = 8
    latent_channels: int = 4
    clip_l_hidden: int = 64  # text_encoder (CLIP-L-like); its projection has the same width
    clip_l_heads: int = 4
    clip_g_hidden: int = 96  # text_encoder_2 (CLIP-G-like)
    clip_g_heads: int = 6
    text_layers: int = 2
    layers: int = 3  # joint transformer blocks
    heads: int = 4
    head_dim: int = 32  # % 16 == 0: TensorRT's fused (FP8) attention
    patch_size: int = 2
    max_length: int = 16  # CLIP tokens, BOS and EOS included
    t5_tokens: int = 256  # zero tokens StableDiffusion3Pipeline appends without T5 (its max_sequence_length default)
    image_size: int = 32
    shift: float = 3.0  # FlowMatchEulerDiscreteScheduler's shift (SD3's)
    weighting: str = "logit_normal"  # sigma sampling of train_dreambooth_sd3.py: logit_normal or uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    vae_steps: int = 300
    steps: int = 4500  # transformer + text encoder steps
    batch: int = 32
    lr: float = 1e-3
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4  # per latent element, against the per-pixel MSE
    uncond_prob: float = 0.1
    ema_decay: float = 0.995
    seed: int = 0
    threads: int = 1


def build_models(cfg: MMDiTConfig, vocab_size: int, bos: int, eos: int) -> tuple[Any, Any, Any, Any]:
    """Untrained (vae, text_encoder, text_encoder_2, transformer) with the sizes of ``cfg``.

    SD3 concatenates both CLIPs' penultimate hidden states (width clip_l + clip_g) and their pooled projections
    (``StableDiffusion3Pipeline.encode_prompt``); without T5 it pads nothing when ``joint_attention_dim`` is that sum.
    """
    diffusers = lazy_import("diffusers")
    transformers = lazy_import("transformers")

    def clip(hidden: int, heads: int) -> Any:
        return transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=cfg.text_layers,
            num_attention_heads=heads, projection_dim=hidden, max_position_embeddings=cfg.max_length,
            bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))

    latent = cfg.image_size // 2 ** (len(cfg.vae_channels) - 1)
    width = cfg.clip_l_hidden + cfg.clip_g_hidden
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=latent, patch_size=cfg.patch_size, in_channels=cfg.latent_channels, num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.heads, joint_attention_dim=width,
        caption_projection_dim=cfg.heads * cfg.head_dim, pooled_projection_dim=width,
        out_channels=cfg.latent_channels, pos_embed_max_size=latent // cfg.patch_size)
    return (build_vae(cfg), clip(cfg.clip_l_hidden, cfg.clip_l_heads),
            clip(cfg.clip_g_hidden, cfg.clip_g_heads), transformer)


class RepeatedLastToken:
    """``JointAttnProcessor2_0`` where the last context token stands for ``copies`` identical tokens (training only).

    Without T5, StableDiffusion3Pipeline appends ``max_sequence_length`` all-zero tokens to the CLIP tokens. They
    enter every block identically, so they stay identical, and n identical keys weigh as one key with log(n) added to
    its attention logit; the last block drops the context. One zero token with that bias computes the same thing
    (tests/tools/test_train_reference_mmdit.py compares it with 256 real tokens) in a fraction of the time.
    """

    def __init__(self, copies: int) -> None:
        self.log_copies = math.log(copies) if copies > 0 else -math.inf

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None, attention_mask: Any = None,
                 *args: Any, **kwargs: Any) -> Any:
        """Same arithmetic as diffusers' ``JointAttnProcessor2_0`` (no qk norm) plus the log-count bias."""
        torch = lazy_import("torch")
        if attn.norm_q is not None or attn.norm_added_q is not None or encoder_hidden_states is None:
            raise ValueError("RepeatedLastToken: joint attention without qk norm only")
        b, n = hidden_states.shape[:2]

        def heads(x: Any) -> Any:
            return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q = torch.cat([heads(attn.to_q(hidden_states)), heads(attn.add_q_proj(encoder_hidden_states))], dim=2)
        k = torch.cat([heads(attn.to_k(hidden_states)), heads(attn.add_k_proj(encoder_hidden_states))], dim=2)
        v = torch.cat([heads(attn.to_v(hidden_states)), heads(attn.add_v_proj(encoder_hidden_states))], dim=2)
        bias = torch.zeros(1, 1, 1, k.shape[2], dtype=q.dtype)
        bias[..., -1] = self.log_copies
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1])
        image, context = out[:, :n], out[:, n:]
        if not attn.context_pre_only:
            context = attn.to_add_out(context)
        return attn.to_out[1](attn.to_out[0](image)), context


def encode_prompts(text_encoders: tuple[Any, Any], ids: Any, t5_tokens: int) -> tuple[Any, Any]:
    """(prompt_embeds, pooled_prompt_embeds) as ``StableDiffusion3Pipeline.encode_prompt`` builds them without T5,
    except that its ``t5_tokens`` zero tokens are one (see :class:`RepeatedLastToken`) when ``t5_tokens`` > 0.

    ``ids``: B×L token ids (both CLIP tokenizers are the same); returns B×(L + min(t5_tokens, 1))×(hidden_l + hidden_g)
    (penultimate hidden states, concatenated on the last axis) and B×(proj_l + proj_g).
    """
    torch = lazy_import("torch")
    outs = [enc(ids, output_hidden_states=True) for enc in text_encoders]
    hidden = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
    pooled = torch.cat([o.text_embeds for o in outs], dim=-1)
    if t5_tokens > 0:
        hidden = torch.cat([hidden, hidden.new_zeros(hidden.shape[0], 1, hidden.shape[-1])], dim=1)
    return hidden, pooled


def train_denoiser(transformer: Any, text_encoders: tuple[Any, Any], latents: tuple[Any, Any], labels: Any,
                   tokenizer: Any, scheduler: Any, cfg: MMDiTConfig, gen: Any) -> tuple[Any, list[float]]:
    """Train the transformer and both text encoders jointly by rectified flow; returns their EMA copies (a
    ModuleList: transformer, text_encoder, text_encoder_2) and the losses.

    As ``train_dreambooth_sd3.py``: u from ``compute_density_for_timestep_sampling`` (logit-normal or uniform),
    index = int(u × num_train_timesteps) into the scheduler's shifted ``timesteps``/``sigmas``,
    noisy = (1 - σ) x0 + σ noise, target = noise - x0, loss = mean(weighting × (pred - target)²) with
    ``compute_loss_weighting_for_sd3`` (1 for both schemes). ``latents``: posterior (mean, std), already shifted and
    scaled.
    """
    torch = lazy_import("torch")
    training_utils = lazy_import("diffusers.training_utils")
    prompts = prompt_table(tokenizer)
    modules = torch.nn.ModuleList([transformer, *text_encoders])
    transformer.set_attn_processor(RepeatedLastToken(cfg.t5_tokens))
    n_train = scheduler.config.num_train_timesteps

    def loss_fn() -> Any:
        x0, ids = sample_batch(latents, labels, prompts, cfg.batch, cfg.uncond_prob, gen)
        noise = torch.randn(x0.shape, generator=gen)
        u = training_utils.compute_density_for_timestep_sampling(
            cfg.weighting, cfg.batch, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std, generator=gen)
        index = (u * n_train).long().clamp(max=n_train - 1)
        sigma = scheduler.sigmas[index].view(-1, 1, 1, 1)
        noisy = (1.0 - sigma) * x0 + sigma * noise
        context, pooled = encode_prompts(text_encoders, ids, cfg.t5_tokens)
        pred = transformer(hidden_states=noisy, encoder_hidden_states=context, pooled_projections=pooled,
                           timestep=scheduler.timesteps[index]).sample
        weighting = training_utils.compute_loss_weighting_for_sd3(cfg.weighting, sigmas=sigma)
        return (weighting * (pred - (noise - x0)).pow(2)).mean()

    ema, losses = train_with_ema(modules, loss_fn, cfg.steps, cfg.lr, cfg.ema_decay, "transformer+text")
    diffusers = lazy_import("diffusers")
    for m in (transformer, ema[0]):
        m.set_attn_processor(diffusers.models.attention_processor.JointAttnProcessor2_0())
    return ema, losses


def _peak_rss_mib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def train(out: Path, cfg: MMDiTConfig, command: str, classifier: Path | None = None, guidance_scale: float = 5.0,
          images_per_digit: int = 10, steps: int = 28) -> dict[str, Any]:
    """Train every component and write the pipeline folder to ``out`` atomically; return the training record.

    With ``classifier`` (the digit-classifier folder), prompt following is measured on the written folder through
    ``StableDiffusion3Pipeline`` (its flow-matching scheduler, ``steps`` steps, ``guidance_scale``) and recorded.
    """
    torch = lazy_import("torch")
    diffusers = lazy_import("diffusers")
    transformers = lazy_import("transformers")
    if cfg.weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {cfg.weighting!r}")
    wall_start = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokenizer = build_tokenizer(VOCABULARY, cfg.max_length)
    vae, text_l, text_g, transformer = build_models(cfg, len(tokenizer), tokenizer.bos_token_id,
                                                    tokenizer.eos_token_id)
    images, labels = digits_rgb(cfg.image_size)

    start = time.time()
    vae_losses = train_vae(vae, images, cfg, gen, lr=cfg.vae_lr)
    vae_seconds = time.time() - start
    mean, std, sampled = encode_dataset(vae, images)
    shift, scaling = float(sampled.mean()), 1.0 / float(sampled.std())
    vae.register_to_config(scaling_factor=scaling, shift_factor=shift)

    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.shift)
    start = time.time()
    ema, losses = train_denoiser(transformer, (text_l, text_g), ((mean - shift) * scaling, std * scaling), labels,
                                 tokenizer, scheduler, cfg, gen)
    denoiser_seconds = time.time() - start

    record: dict[str, Any] = {
        "command": command,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "config": asdict(cfg),
        "vae_train_seconds": round(vae_seconds, 1),
        "transformer_text_train_seconds": round(denoiser_seconds, 1),
        "train_wall_seconds": round(vae_seconds + denoiser_seconds, 1),
        "vae_final_loss_mean_last_100": round(float(np.mean(vae_losses[-100:])), 5),
        "vae_recon_psnr_db_first_256": recon_psnr_db(vae, mean, images),
        "latent_mean": round(shift, 5),
        "latent_std": round(float(sampled.std()), 5),
        "shift_factor": shift,
        "scaling_factor": scaling,
        "final_loss_mean_last_100": round(float(np.mean(losses[-100:])), 5),
        "vae_loss_curve_every_100": loss_curve(vae_losses),
        "loss_curve_every_100": loss_curve(losses),
        "parameters": {name: sum(p.numel() for p in m.parameters())
                       for name, m in (("vae", vae), ("text_encoder", ema[1]), ("text_encoder_2", ema[2]),
                                       ("transformer", ema[0]))},
        "machine": f"{machine()}, threads={torch.get_num_threads()}",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    with atomic_dir(out) as tmp:
        pipe = diffusers.StableDiffusion3Pipeline(
            transformer=ema[0], scheduler=scheduler, vae=vae, text_encoder=ema[1], tokenizer=tokenizer,
            text_encoder_2=ema[2], tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None)
        pipe.save_pretrained(tmp)
        for sub in ("tokenizer", "tokenizer_2"):
            save_tokenizer(tokenizer, VOCABULARY, tmp / sub)
        (tmp / "prompts.txt").write_text("\n".join(all_prompts()) + "\n")
        if classifier is not None:
            start = time.time()
            result, samples = measure_prompt_following(tmp, classifier, images_per_digit=images_per_digit,
                                                       steps=steps, guidance_scale=guidance_scale, seed=cfg.seed)
            result["seconds"] = round(time.time() - start, 1)
            record["prompt_following"] = result
            save_grid(samples, tmp / f"samples_flow{steps}.png", nrow=images_per_digit)
        record["command_wall_seconds"] = round(time.time() - wall_start, 1)
        record["peak_rss_mib"] = _peak_rss_mib()
        record["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(record))
    return record


def model_card(record: dict[str, Any]) -> str:
    """The model card (Markdown) for the trained MMDiT reference model."""
    cfg = record["config"]
    params = record["parameters"]
    pf = record.get("prompt_following")
    following = "not measured (no --classifier)" if pf is None else (
        f"**{pf['share'] * 100:.0f}%** of {pf['images']} images (per digit 0..9: "
        + ", ".join(f"{v * 100:.0f}%" for v in pf["per_digit"]) + ")")
    latent = cfg["image_size"] // 2 ** (len(cfg["vae_channels"]) - 1)
    tokens = (latent // cfg["patch_size"]) ** 2
    inner = cfg["heads"] * cfg["head_dim"]
    width = cfg["clip_l_hidden"] + cfg["clip_g_hidden"]
    steps = pf["steps"] if pf else 28
    return f"""# digits-mmdit: the bundled transformer (MMDiT, flow matching) text-to-image model

A tiny Stable-Diffusion-3-structured pipeline (diffusers `StableDiffusion3Pipeline` folder) trained by this repository
from scratch on scikit-learn's bundled digits (1,797 8×8 images, bilinearly upsampled to 32×32, grey copied to 3
channels, [-1, 1]) with short prompts (`prompts.txt`: {len(TEMPLATES)} phrasings per digit, as `models/digits-t2i`).
No download is involved. Load it as diffusers loads SD3 without T5:
`StableDiffusion3Pipeline.from_pretrained("models/digits-mmdit", text_encoder_3=None, tokenizer_3=None)`.

- Tokenizers: `tokenizer/` and `tokenizer_2/` are the same `CLIPTokenizer` (byte-level BPE) built here from the prompt
  words (`tools/t2i_tokenizer.py`); `model_max_length` {cfg['max_length']}; `<|endoftext|>` pads.
- Text encoders: `text_encoder` (CLIP-L-like) `CLIPTextModelWithProjection`, hidden {cfg['clip_l_hidden']},
  {cfg['clip_l_heads']} heads ({params['text_encoder']:,} parameters); `text_encoder_2` (CLIP-G-like), hidden
  {cfg['clip_g_hidden']}, {cfg['clip_g_heads']} heads ({params['text_encoder_2']:,} parameters); {cfg['text_layers']} layer(s)
  each, projection width = hidden width; **trained jointly with the transformer** from scratch. No T5
  (`text_encoder_3`/`tokenizer_3` None): the pipeline appends `max_sequence_length` (default 256) zero tokens, and
  the model was trained for exactly that (`RepeatedLastToken` in `tools/train_reference_mmdit.py`).
- VAE: `AutoencoderKL`, 3×32×32 ↔ {cfg['latent_channels']}×{latent}×{latent}, channels {tuple(cfg['vae_channels'])}, no attention
  ({params['vae']:,} parameters), trained first ({cfg['vae_steps']} steps, MSE + {cfg['kl_weight']} × KL per element);
  `shift_factor` = measured latent mean = {record['shift_factor']:.4f}, `scaling_factor` = 1 / measured latent std =
  {record['scaling_factor']:.4f}; reconstruction PSNR {record['vae_recon_psnr_db_first_256']} dB (first 256 images, on [-1, 1]).
- Transformer: `SD3Transformer2DModel` (MMDiT), patch size {cfg['patch_size']} ({tokens} image tokens), {cfg['layers']} joint
  blocks, {cfg['heads']} heads × head dim {cfg['head_dim']} (width {inner}), `joint_attention_dim` {width}
  (= CLIP-L + CLIP-G hidden), `pooled_projection_dim` {width} ({params['transformer']:,} parameters).
- Scheduler: `FlowMatchEulerDiscreteScheduler`, 1000 training steps, shift {cfg['shift']}.
- Training: rectified flow as diffusers' `examples/dreambooth/train_dreambooth_sd3.py` (noisy = (1 - σ)·x0 + σ·noise,
  target = noise - x0, σ from the scheduler's shifted schedule at index ⌊u·1000⌋, u {cfg['weighting']}
  (mean {cfg['logit_mean']}, std {cfg['logit_std']} for logit-normal), loss weight 1); transformer + both text encoders
  {cfg['steps']} steps, batch {cfg['batch']}, AdamW lr {cfg['lr']} (warm-up, cosine decay), FP32 on the CPU, each
  image's prompt a random phrasing of its digit, the empty prompt {cfg['uncond_prob'] * 100:.0f}% of the time
  (classifier-free guidance); EMA ({cfg['ema_decay']}) weights saved.
- Command: `{record['command']}`: VAE {record['vae_train_seconds']} s, transformer + text encoders
  {record['transformer_text_train_seconds']} s, **{record.get('command_wall_seconds', '?')} s wall** for the whole
  command (measurement included), peak RSS {record.get('peak_rss_mib', '?')} MiB, on {record['machine']}, finished
  {record['date_utc']} UTC, 1-minute load average {record.get('load_average_1min_at_end', '?')}.
- Final loss (mean flow-matching MSE over the last 100 steps): {record['final_loss_mean_last_100']}
- Versions: torch {record['torch']}, diffusers {record['diffusers']}, transformers {record['transformers']}

## Prompt following (PyTorch FP32, diffusers' own `StableDiffusion3Pipeline`)
{following}. Settings: the folder's `FlowMatchEulerDiscreteScheduler`, {steps} steps, guidance scale
{pf['guidance_scale'] if pf else '-'}, every other argument at diffusers' default (`max_sequence_length` 256),
{pf['images_per_digit'] if pf else 10} images per digit (image i: phrasing i mod {len(TEMPLATES)}, seed {pf['seed'] if pf else 0}+i, the same
noise for every digit); the digit read by the in-repo classifier (`models/digit-classifier`) on the grey mean of the
3 channels. `samples_flow{steps}.png`: those images, one row per digit 0..9. `training.json`: the full record and
loss curves. Measure again: `python -m benchmarks.t2i_prompt_following --model models/digits-mmdit --steps {steps}`.
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools train-reference-mmdit``."""
    p = CliParser(prog="python -m tools train-reference-mmdit", description=__doc__.splitlines()[0])
    d = MMDiTConfig()
    add_training_arguments(p, d, "transformer")
    p.add_argument("--shift", type=float, default=d.shift, help="the flow-matching scheduler's shift")
    p.add_argument("--weighting", choices=WEIGHTINGS, default=d.weighting, help="sigma sampling")
    p.add_argument("--sample-steps", type=int, default=28, help="of the prompt-following measurement")
    args = p.parse_args(argv)
    if min(args.steps, args.vae_steps, args.batch, args.threads, args.sample_steps) < 1:
        raise UserError("--steps, --vae-steps, --batch, --threads and --sample-steps must be positive")
    if args.lr <= 0 or args.shift <= 0:
        raise UserError("--lr and --shift must be positive")
    classifier = checked_classifier(args)
    cfg = MMDiTConfig(steps=args.steps, vae_steps=args.vae_steps, batch=args.batch, lr=args.lr, shift=args.shift,
                      weighting=args.weighting, seed=args.seed, threads=args.threads)
    command = "python -m tools train-reference-mmdit " + " ".join(sys.argv[2:] if argv is None else argv)
    record = train(args.out, cfg, command, classifier, args.guidance_scale, steps=args.sample_steps)
    share = record.get("prompt_following", {}).get("share")
    print(f"trained in {record['train_wall_seconds']} s, final loss {record['final_loss_mean_last_100']}, "
          f"prompt following {share}: {args.out}")
    return 0
