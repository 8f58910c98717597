"""Flow-matching schedules as SD3 and FLUX set them up, behind the scheduler contract the DenoiseRunner uses.

``FlowMatchEulerDiscreteScheduler`` has no ``scale_model_input`` or ``init_noise_sigma`` (x_T is the noise itself)
and its ``set_timesteps`` wants what the pipeline computes:
- SD3 (StableDiffusion3Pipeline): the scheduler's own sigmas (linear in t, shifted by ``shift``); ``mu`` only when
  the config sets ``use_dynamic_shifting`` (SD3.5 variants), from the image's token count.
- FLUX (FluxPipeline): ``sigmas = linspace(1, 1/n, n)`` (unless ``use_flow_sigmas``), and always
  ``mu = calculate_shift(tokens)``: the resolution-dependent shift, ``exp(mu)`` applied as
  ``sigma' = e^mu / (e^mu + (1/sigma - 1))``.
The time step fed to the denoiser is ``sigma' · num_train_timesteps`` (``scheduler.timesteps``): calibration's NDTC
and uniform time steps are drawn on this, the scheduler's own time (docs/transformers.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.schedulers import set_timesteps as set_checked_timesteps

FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"


def calculate_shift(image_seq_len: int, config: dict[str, Any]) -> float:
    """FLUX's ``mu`` for ``image_seq_len`` latent tokens: linear from ``base_shift`` at ``base_image_seq_len`` to
    ``max_shift`` at ``max_image_seq_len`` (diffusers' defaults 0.5 at 256, 1.15 at 4096)."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base_shift = config.get("base_shift", 0.5)
    max_shift = config.get("max_shift", 1.15)
    m = (max_shift - base_shift) / (max_len - base_len)
    return float(image_seq_len * m + base_shift - m * base_len)


@dataclass(frozen=True)
class FlowSchedule:
    """How a family sets up a flow-matching scheduler: FLUX's explicit sigmas or the scheduler's own; ``mu`` for
    ``image_seq_len`` tokens always (FLUX) or only under ``use_dynamic_shifting`` (SD3). SD3.5's default max_shift
    is 1.16 where FLUX's is 1.15 (each pipeline's own default)."""

    flux_sigmas: bool
    always_mu: bool
    image_seq_len: int
    default_max_shift: float = 1.15

    def kwargs(self, scheduler: Any, num_steps: int) -> dict[str, Any]:
        """The keyword arguments of ``scheduler.set_timesteps`` (``num_inference_steps`` included)."""
        cfg = dict(scheduler.config)
        out: dict[str, Any] = {"num_inference_steps": num_steps}
        if self.flux_sigmas and not cfg.get("use_flow_sigmas", False):
            out["sigmas"] = np.linspace(1.0, 1 / num_steps, num_steps)
        if self.always_mu or cfg.get("use_dynamic_shifting", False):
            out["mu"] = calculate_shift(self.image_seq_len, {"max_shift": self.default_max_shift, **cfg})
        return out


class FlowMatchingScheduler:
    """A flow-matching scheduler with the contract of the others: ``set_timesteps(n)`` as the family's pipeline
    calls it, ``init_noise_sigma`` 1, ``scale_model_input`` the identity; everything else is the wrapped one's."""

    init_noise_sigma = 1.0

    def __init__(self, inner: Any, schedule: FlowSchedule) -> None:
        self.inner = inner
        self.schedule = schedule

    def set_timesteps(self, num_steps: int) -> None:
        kwargs = self.schedule.kwargs(self.inner, num_steps)
        self.inner.set_timesteps(**kwargs)

    def scale_model_input(self, sample: Any, timestep: Any) -> Any:
        return sample

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def flow_scheduler(scheduler: Any, schedule: FlowSchedule, num_steps: int | None = None) -> Any:
    """``scheduler`` ready for the DenoiseRunner: a flow-matching one wrapped (``FlowMatchingScheduler``), any other
    unchanged; with ``num_steps``, its time steps set (a refused step count is one UserError)."""
    wrapped = FlowMatchingScheduler(scheduler, schedule) if type(scheduler).__name__ == FLOW_SCHEDULER else scheduler
    if num_steps is not None:
        set_checked_timesteps(wrapped, num_steps)
    return wrapped
