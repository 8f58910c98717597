"""One calibration sample: the UNet input at a known diffusion time step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CalibSample:
    """A UNet input as the FP32 model saw it along a real trajectory.

    x: model-space latent/sample, float32, B×C×H×W (already scaled with ``scheduler.scale_model_input``).
    t: the diffusion time step fed to the UNet (0 = clean, T-1 = noise), an integer of the training schedule.
    step: index of the sampler step that produced ``x`` (0 = first step, from pure noise).
    cond: ``encoder_hidden_states`` B×L×D for conditional models, else None.
    """

    x: np.ndarray
    t: int
    step: int
    cond: np.ndarray | None = None
