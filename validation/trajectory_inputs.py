"""UNet inputs drawn from the real FP32 denoising trajectory at chosen steps, as Polygraphy feed dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engines.ort_session import OrtSession
from pipelines.conditioning import Conditioning
from pipelines.runner import DenoiseRunner
from pipelines.schedulers import make_scheduler
from pipelines.unet_batches import unet_inputs


def spread_steps(num_steps: int, count: int) -> list[int]:
    """``count`` sampler step indices spread evenly over ``0..num_steps-1`` (first and last included)."""
    count = max(1, min(count, num_steps))
    return sorted({int(round(x)) for x in np.linspace(0, num_steps - 1, count)})


def trajectory_feeds(model: Path, info: dict[str, Any], steps: int, at: list[int], num: int, seed: int,
                     cond: Conditioning | None = None, scheduler: str = "ddim",
                     clipped_model_output: bool | None = None) -> list[dict[str, np.ndarray]]:
    """One feed dict per step in ``at``: the batch of ``num`` states the FP32 UNet sees there (with guidance, the
    (uncond, cond) rows as the runner feeds them), seeded like ``python -m tools sample --seed``."""
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    feeds: dict[int, dict[str, np.ndarray]] = {}
    with OrtSession(model) as sess:
        runner = DenoiseRunner(sess, make_scheduler(scheduler, info["scheduler"]), batch_size=num)

        def grab(i: int, t: int, x: np.ndarray) -> None:
            if i in at:
                feeds[i] = unet_inputs(x.copy(), t, cond.unet_feeds(0, len(x)) if cond is not None else {},
                                       cond is not None and cond.guided)

        noise = runner.initial_noise((num, c, h, w), seed)
        runner.sample(noise, steps, seed=seed, cond=cond, callback=grab, stop_at_step=max(at) + 1
                      if max(at) + 1 < steps else None, use_clipped_model_output=clipped_model_output)
    return [feeds[i] for i in sorted(feeds)]
