"""One calibration sample: the UNet input at a known diffusion time step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from pipelines.conditioning import HIDDEN_STATES


@dataclass(frozen=True)
class CalibSample:
    """A UNet input as the FP32 model saw it along a real trajectory.

    x: model-space latent/sample, float32, B×C×H×W (already scaled with ``scheduler.scale_model_input``).
    t: the diffusion time step fed to the UNet (0 = clean, T-1 = noise), an integer of the training schedule.
    step: index of the sampler step that produced ``x`` (0 = first step, from pure noise).
    cond: ``encoder_hidden_states`` B×L×D for conditional models, else None.
    added: the UNet's further conditioning inputs by name, B rows each (SDXL: ``text_embeds`` B×P, the pooled
    text embedding, and ``time_ids`` B×6, the size ids); empty for other models. With guidance, ``cond`` and every
    ``added`` array hold the (unconditional, conditional) rows in the order of ``x`` (Conditioning.unet_feeds).
    """

    x: np.ndarray
    t: int
    step: int
    cond: np.ndarray | None = None
    added: Mapping[str, np.ndarray] = field(default_factory=dict)

    def conditioning_feeds(self) -> dict[str, np.ndarray]:
        """The UNet's conditioning inputs of this sample by ONNX input name (empty for an unconditional UNet)."""
        feeds = {} if self.cond is None else {HIDDEN_STATES: self.cond}
        feeds.update(self.added)
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
