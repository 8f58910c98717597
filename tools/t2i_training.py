"""The stages the digits text-to-image reference models share (``train-reference-t2i``, ``train-reference-mmdit``).

The VAE stage (3×32×32 <-> C×8×8 ``AutoencoderKL`` trained on the digits, latents measured for the scale), the batch
sampling (posterior sample, a random phrasing of each image's digit, the empty prompt for classifier-free guidance),
the optimisation loop with warm-up/cosine learning rate and EMA weights, and the prompt-following measurement through
diffusers' own pipeline. Each model's command keeps its denoiser and its loss.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.digits_data import digits_dataset, digits_labels
from common.errors import UserError
from common.lazy import lazy_import
from validation.digit_prompts import TEMPLATES, prompt_following, prompts_for_digit


class VaeSettings(Protocol):
    """The config fields the VAE stage reads (both commands' frozen config dataclasses have them)."""

    vae_channels: tuple[int, ...]
    vae_groups: int
    latent_channels: int
    image_size: int
    vae_steps: int
    batch: int
    lr: float
    kl_weight: float


def cosine(steps: int) -> Callable[[int], float]:
    """Warm-up then cosine decay to 5% of the learning rate, as a LambdaLR factor."""
    warmup = max(1, min(200, steps // 10))
    return lambda s: min(1.0, (s + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * s / steps)) * 0.95 + 0.05)


def loss_curve(values: list[float]) -> list[float]:
    """Mean of every 100 consecutive values (the curves of ``training.json``)."""
    return [round(float(np.mean(values[i : i + 100])), 5) for i in range(0, len(values), 100)]


def digits_rgb(size: int) -> tuple[Any, Any]:
    """The training images as a torch tensor N×3×size×size in [-1, 1] (grey copied to 3 channels, as Stable
    Diffusion's VAE takes) and their digits, N int64."""
    torch = lazy_import("torch")
    gray = torch.from_numpy(digits_dataset(size))
    return gray.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(digits_labels())


def build_vae(cfg: VaeSettings) -> Any:
    """Untrained ``AutoencoderKL`` 3×size×size <-> latent_channels×(size / 2^(len(vae_channels) - 1))², no attention."""
    diffusers = lazy_import("diffusers")
    n = len(cfg.vae_channels)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels, layers_per_block=1,
        latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_groups, sample_size=cfg.image_size,
        mid_block_add_attention=False)


def train_vae(vae: Any, images: Any, cfg: VaeSettings, gen: Any, lr: float | None = None) -> list[float]:
    """Train ``vae`` in place on N×3×H×W images in [-1, 1]: per-pixel MSE + kl_weight × per-element KL, learning rate
    ``lr`` (default ``cfg.lr``); returns the losses."""
    torch = lazy_import("torch")
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr if lr is None else lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(cfg.vae_steps))
    latent_elems = cfg.latent_channels * (cfg.image_size // 2 ** (len(cfg.vae_channels) - 1)) ** 2
    losses: list[float] = []
    vae.train()
    from tqdm import tqdm

    for _ in tqdm(range(cfg.vae_steps), desc="vae", file=sys.stderr, mininterval=10):
        x = images[torch.randint(0, len(images), (cfg.batch,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        loss = (recon - x).pow(2).mean() + cfg.kl_weight * posterior.kl().mean() / latent_elems
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    vae.eval().requires_grad_(False)
    return losses


def encode_dataset(vae: Any, images: Any) -> tuple[Any, Any, Any]:
    """Posterior mean and std of every image (N×C×h×w each) and one sample of the latents (same shape, seed 0): its
    std is what SD's ``scaling_factor`` divides by, its mean SD3's ``shift_factor``."""
    torch = lazy_import("torch")
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        mean, std = posterior.mean, posterior.std
        sampled = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    return mean, std, sampled


def recon_psnr_db(vae: Any, mean: Any, images: Any, count: int = 256) -> float:
    """Reconstruction PSNR (dB, on [-1, 1]) of the first ``count`` images decoded from their posterior mean."""
    torch = lazy_import("torch")
    with torch.no_grad():
        recon = vae.decode(mean[:count]).sample.clamp(-1, 1)
    mse = float((recon - images[:count]).pow(2).mean())
    return round(10 * math.log10(4.0 / max(mse, 1e-12)), 2)


def prompt_table(tokenizer: Any) -> tuple[Any, Any]:
    """Token ids of every phrasing, 10×len(TEMPLATES)×L, and of the empty prompt, L."""
    torch = lazy_import("torch")

    def ids(texts: list[str]) -> Any:
        return tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                         return_tensors="pt").input_ids

    table = torch.stack([ids(prompts_for_digit(d)) for d in range(10)])
    return table, ids([""])[0]


def sample_batch(latents: tuple[Any, Any], labels: Any, prompts: tuple[Any, Any], batch: int, uncond_prob: float,
                 gen: Any) -> tuple[Any, Any]:
    """One training batch: latents x0 (batch×C×h×w, a posterior sample of random images) and their prompts' token
    ids (batch×L: a random phrasing of each image's digit, the empty prompt with probability ``uncond_prob``).

    ``latents``: posterior (mean, std), N×C×h×w each, already scaled; ``prompts``: :func:`prompt_table`'s pair.
    """
    torch = lazy_import("torch")
    mean, std = latents
    table, empty = prompts
    idx = torch.randint(0, len(mean), (batch,), generator=gen)
    x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
    phrasing = torch.randint(0, len(TEMPLATES), (batch,), generator=gen)
    drop = torch.rand(batch, generator=gen) < uncond_prob
    return x0, torch.where(drop[:, None], empty[None], table[labels[idx], phrasing])


def train_with_ema(modules: Any, loss_fn: Callable[[], Any], steps: int, lr: float, ema_decay: float,
                   desc: str) -> tuple[Any, list[float]]:
    """AdamW (``lr``, warm-up + cosine, grad-norm clip 1) on ``loss_fn()``, ``steps`` times; returns an EMA copy of
    ``modules`` (decay min(``ema_decay``, (1 + step) / (10 + step))) and the losses."""
    torch = lazy_import("torch")
    modules.train()
    ema = copy.deepcopy(modules).eval().requires_grad_(False)
    opt = torch.optim.AdamW(modules.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(steps))
    losses: list[float] = []
    from tqdm import tqdm

    bar = tqdm(range(steps), desc=desc, file=sys.stderr, mininterval=10)
    for step in bar:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), modules.parameters(), strict=True):
                pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        losses.append(loss.item())
        if step % 100 == 99:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
    return ema, losses


def load_pipeline(folder: Path) -> Any:
    """The diffusers pipeline a folder's ``model_index.json`` names, components it marks absent (``[null, null]``:
    e.g. SD3's ``text_encoder_3``/``tokenizer_3`` without T5, SD's ``safety_checker``) passed as None, as diffusers'
    documentation loads SD3 without T5."""
    diffusers = lazy_import("diffusers")
    index = json.loads((Path(folder) / "model_index.json").read_text())
    absent = {k: None for k, v in index.items() if isinstance(v, list) and v and v[0] is None}
    return diffusers.DiffusionPipeline.from_pretrained(str(folder), **absent)


def measure_prompt_following(folder: Path, classifier: Path, images_per_digit: int = 10, steps: int = 50,
                             guidance_scale: float = 5.0, seed: int = 0,
                             scheduler: str | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Prompt following of a digits pipeline folder in PyTorch through the diffusers pipeline its
    ``model_index.json`` names (``StableDiffusionPipeline``, ``StableDiffusion3Pipeline``, ...).

    Image i of digit d: prompt ``prompts_for_digit(d)[i % len(TEMPLATES)]``, initial latents from seed ``seed + i``
    (the same noise for every digit), ``steps`` steps of the folder's scheduler (or of the diffusers scheduler class
    named by ``scheduler``, built from the folder's config), classifier-free guidance ``guidance_scale`` against the
    empty prompt, every other pipeline argument at diffusers' default. Returns the share of images the in-repo digit
    classifier reads as the asked digit (overall and per digit) and the images, 10·images_per_digit × 3 × 32 × 32 in
    [0, 1], digit by digit.
    """
    torch = lazy_import("torch")
    diffusers = lazy_import("diffusers")
    from validation.digit_classifier import DigitFeatures

    reader = DigitFeatures(classifier)
    pipe = load_pipeline(folder)
    if scheduler is not None:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts = [prompts_for_digit(d)[i % len(TEMPLATES)] for d in range(10) for i in range(images_per_digit)]
    asked = np.repeat(np.arange(10), images_per_digit)
    images = []
    for d in range(10):  # one digit per call keeps the CFG batch (2 × images_per_digit) small
        chunk = prompts[d * images_per_digit : (d + 1) * images_per_digit]
        gens = [torch.Generator().manual_seed(seed + i) for i in range(images_per_digit)]
        with torch.no_grad():
            out = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance_scale, generator=gens,
                       output_type="np").images  # n×H×W×3 in [0, 1]
        images.append(out.transpose(0, 3, 1, 2))
    rgb = np.concatenate(images).astype(np.float32)
    predicted = reader.predict(rgb.mean(axis=1, keepdims=True))
    result: dict[str, Any] = prompt_following(predicted, asked)
    result.update(steps=steps, scheduler=type(pipe.scheduler).__name__, guidance_scale=guidance_scale,
                  images_per_digit=images_per_digit, seed=seed, predicted=predicted.tolist())
    return result, rgb


def add_training_arguments(p: argparse.ArgumentParser, cfg: Any, denoiser: str) -> None:
    """The flags both training commands take (defaults from their config ``cfg``): OUT, --steps, --vae-steps,
    --batch, --lr, --seed, --threads, --classifier, --no-measure, --guidance-scale, --force."""
    p.add_argument("out", type=Path, help="output pipeline folder (e.g. models/digits-t2i)")
    p.add_argument("--steps", type=int, default=cfg.steps, help=f"{denoiser} + text encoder steps")
    p.add_argument("--vae-steps", type=int, default=cfg.vae_steps)
    p.add_argument("--batch", type=int, default=cfg.batch)
    p.add_argument("--lr", type=float, default=cfg.lr)
    p.add_argument("--seed", type=int, default=cfg.seed)
    p.add_argument("--threads", type=int, default=cfg.threads,
                   help="torch threads (1 is much faster when the cores are shared with other work)")
    p.add_argument("--classifier", type=Path, default=Path("models/digit-classifier"),
                   help="digit-classifier folder for the prompt-following measurement")
    p.add_argument("--no-measure", action="store_true", help="skip the prompt-following measurement")
    p.add_argument("--guidance-scale", type=float, default=5.0, help="of the prompt-following measurement")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")


def checked_classifier(args: argparse.Namespace) -> Path | None:
    """The classifier folder to measure with (None with --no-measure), after checking that OUT may be written."""
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        raise UserError(f"output folder '{args.out}' is not empty (use --force to replace it)")
    classifier = None if args.no_measure else args.classifier
    if classifier is not None and not (classifier / "model.safetensors").is_file():
        raise UserError(f"--classifier: '{classifier}/model.safetensors' missing "
                        f"(python -m tools train-classifier {classifier}, or --no-measure)")
    return classifier
