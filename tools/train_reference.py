"""Train the bundled reference model: a small DDPM (diffusers UNet2DModel) on scikit-learn's digits.

Usage: ``python -m tools train-reference OUT_DIR [--steps 4000] [--batch 64] [--seed 0]``.
Writes a diffusers DDPMPipeline folder (``unet/``, ``scheduler/``, ``model_index.json``), a sample grid and a card.
Deterministic from the seed on one machine (CPU kernels, bf16 autocast for speed, fp32 master weights).
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_dir
from common.errors import UserError
from common.images import save_grid
from common.lazy import lazy_import
from exporter.architectures import ARCHITECTURES
from common.digits_data import digits_dataset
from tools.cli_parser import CliParser, check_at_least_one


def train(out: Path, steps: int, batch: int, seed: int, lr: float, command: str) -> dict[str, Any]:
    """Train and write the pipeline folder to ``out`` atomically; return the training record."""
    torch = lazy_import("torch")
    diffusers = lazy_import("diffusers")
    from tqdm import tqdm

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    arch = ARCHITECTURES["digits-ddpm"]
    unet = diffusers.UNet2DModel(**arch.unet_config).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    scheduler = diffusers.DDPMScheduler(**arch.scheduler_config)
    data = torch.from_numpy(digits_dataset(arch.unet_config["sample_size"]))
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(200, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * s / steps)) * 0.95 + 0.05)
    )
    gen = torch.Generator().manual_seed(seed)
    alphas = scheduler.alphas_cumprod
    losses: list[float] = []
    start = time.time()
    bar = tqdm(range(steps), desc="train", file=sys.stderr, mininterval=5)
    for step in bar:
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = unet(xt, t).sample
        loss = (pred.float() - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        losses.append(loss.item())
        if step % 100 == 99:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
    wall = time.time() - start
    record = {
        "command": command,
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "lr": lr,
        "train_wall_seconds": round(wall, 1),
        "final_loss_mean_last_100": round(float(np.mean(losses[-100:])), 5),
        "loss_curve_every_100": [round(float(np.mean(losses[i : i + 100])), 5) for i in range(0, steps, 100)],
        "machine": f"{platform.machine()} {platform.processor()} threads={torch.get_num_threads()}",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    with atomic_dir(out) as tmp:
        pipe = diffusers.DDPMPipeline(unet=ema, scheduler=scheduler)
        pipe.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        samples = sample_ddim(ema, scheduler, n=64, steps=50, seed=seed)
        save_grid(samples / 2 + 0.5, tmp / "samples_ddim50.png")
        save_grid(data[:64].numpy() / 2 + 0.5, tmp / "training_data.png")
        (tmp / "README.md").write_text(model_card(record))
    return record


def sample_ddim(unet: Any, ddpm_scheduler: Any, n: int, steps: int, seed: int) -> np.ndarray:
    """DDIM (eta 0) samples from ``unet`` in PyTorch, clipped to [-1, 1]; N×C×H×W float32."""
    torch = lazy_import("torch")
    diffusers = lazy_import("diffusers")
    ddim = diffusers.DDIMScheduler.from_config(ddpm_scheduler.config)
    ddim.set_timesteps(steps)
    cfg = unet.config
    x = torch.randn((n, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for t in ddim.timesteps:
            x = ddim.step(unet(x, t).sample, t, x).prev_sample
    return x.clamp(-1, 1).numpy()


def model_card(record: dict[str, Any]) -> str:
    """The model card (Markdown) for the trained reference model."""
    return f"""# digits-ddpm: the bundled reference model

A small unconditional DDPM trained by this repository on scikit-learn's bundled digits (1,797 8×8 images,
bilinearly upsampled to 32×32, one channel, scaled to [-1, 1]). No download is involved.

- Architecture: diffusers `UNet2DModel` with the DDPM-CIFAR10 structure scaled down
  (block channels 32/64/64/64, one resnet per down block, self-attention at 16×16, GroupNorm with 8 groups,
  skip concatenations in the up blocks feeding 1×1 `conv_shortcut` convolutions). See `unet/config.json`.
- Scheduler: `DDPMScheduler`, 1000 steps, linear betas 1e-4..0.02 (the DDPM-CIFAR10 schedule). See `scheduler/`.
- Weights: exponential moving average (decay 0.999) of the trained weights, safetensors.
- Training: {record['steps']} steps, batch {record['batch']}, AdamW lr {record['lr']} (warm-up, cosine decay),
  bf16 autocast on the CPU, seed {record['seed']}.
- Command: `{record['command']}`
- Wall time: {record['train_wall_seconds']} s on {record['machine']}
- Final loss (mean ε-MSE over the last 100 steps): {record['final_loss_mean_last_100']}
- Versions: torch {record['torch']}, diffusers {record['diffusers']}

`samples_ddim50.png`: 64 samples, DDIM 50 steps (eta 0), seed {record['seed']}, PyTorch FP32.
`training_data.png`: the first 64 training images, for comparison. `training.json`: the full record and loss curve.
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools train-reference``."""
    p = CliParser(prog="python -m tools train-reference", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output pipeline folder (e.g. models/digits-ddpm)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = p.parse_args(argv)
    check_at_least_one(args, "steps", "batch")
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        raise UserError(f"output folder '{args.out}' is not empty (use --force to replace it)")
    if args.out.exists() and args.force:
        shutil.rmtree(args.out)
    command = "python -m tools train-reference " + " ".join(sys.argv[2:] if argv is None else argv)
    record = train(args.out, args.steps, args.batch, args.seed, args.lr, command)
    print(f"trained in {record['train_wall_seconds']} s, final loss {record['final_loss_mean_last_100']}: {args.out}")
    return 0
