"""Independent images denoised in lockstep: each image keeps its own scheduler and generator, the UNet runs batched.

This is what a server needs when requests from different clients share one UNet batch: image i comes out exactly as
``python -m tools sample --seed seeds[i] --num 1`` would make it alone (same x_T, same stochastic-scheduler noise),
while every step is one batched UNet call over all images. All images share the number of steps (their time steps
must coincide for one UNet call) and, for conditional models, the guidance scale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from common.lazy import lazy_import
from pipelines.conditioning import Conditioning
from pipelines.loop_setup import start_loop
from pipelines.runner import DenoiseRunner, initial_noise
from engines.session import Session

# () -> a fresh diffusers scheduler (one per image: multistep schedulers keep per-trajectory state)
SchedulerFactory = Callable[[], Any]


def sample_lockstep(
    unet: Session,
    make_scheduler: SchedulerFactory,
    image_shape: tuple[int, int, int],
    seeds: list[int],
    num_steps: int,
    cond: Conditioning | None = None,
    batch_size: int = 16,
    use_clipped_model_output: bool | None = None,
) -> np.ndarray:
    """Denoise one image per seed in ``num_steps`` steps; returns N×C×H×W float32 samples before clipping.

    Image i starts from ``initial_noise((1, *image_shape), seeds[i])`` and steps with its own scheduler whose
    generator is seeded with ``seeds[i]`` and advanced past x_T, as ``DenoiseRunner.sample`` does for one image
    (``start_loop``; ``use_clipped_model_output`` is refused, not dropped, by a scheduler that does not take it).
    ``cond`` holds one row per image (or one row for all). The UNet sees all images at once, in chunks of
    ``batch_size`` images.
    """
    if not seeds:
        raise ValueError("sample_lockstep needs at least one seed")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    torch = lazy_import("torch")
    schedulers = [make_scheduler() for _ in seeds]
    starts = [start_loop(sched, initial_noise((1, *image_shape), int(seed)), num_steps, int(seed),
                         use_clipped_model_output=use_clipped_model_output)
              for sched, seed in zip(schedulers, seeds, strict=True)]
    xs = [start.x for start in starts]
    runner = DenoiseRunner(unet, schedulers[0], batch_size=batch_size)
    for t in schedulers[0].timesteps:
        model_in = np.concatenate([s.scale_model_input(x, t).numpy() for s, x in zip(schedulers, xs, strict=True)])
        eps = runner.predict_noise(model_in.astype(np.float32, copy=False), t, cond)
        for i, (sched, start) in enumerate(zip(schedulers, starts, strict=True)):
            xs[i] = sched.step(torch.from_numpy(eps[i : i + 1]), t, xs[i], **start.step_kwargs).prev_sample
    return np.concatenate([x.numpy() for x in xs]).astype(np.float32, copy=False)


def to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """N×C×H×W images in [0, 1] -> N×H×W×C uint8, rounded as the PNG grids (common/images.py) are."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
