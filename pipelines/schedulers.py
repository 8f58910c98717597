"""Build diffusers schedulers by short name from the scheduler config captured in export.json."""

from __future__ import annotations

from typing import Any

from common.errors import UserError
from common.lazy import lazy_import

SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "flow": "FlowMatchEulerDiscreteScheduler",  # SD3, FLUX (set up by the family: pipelines/flow_matching.py)
}


def make_scheduler(name: str, config: dict[str, Any]) -> Any:
    """A diffusers scheduler ``name`` (ddim, ddpm, dpm, euler, pndm) built ``from_config(config)``, unchanged."""
    if name not in SCHEDULERS:
        raise UserError(f"unknown --scheduler '{name}'; known: {', '.join(SCHEDULERS)}")
    diffusers = lazy_import("diffusers")
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def set_timesteps(scheduler: Any, num_steps: int) -> None:
    """``scheduler.set_timesteps(num_steps)``, with a scheduler's refusal of that step count (e.g. PNDM's Runge-Kutta
    warm-up needs more steps than 2) as one UserError naming ``--steps`` instead of a traceback."""
    if num_steps < 1:
        raise UserError(f"--steps must be >= 1, got {num_steps}")
    try:
        scheduler.set_timesteps(num_steps)
    except (ValueError, IndexError) as e:
        raise UserError(f"--steps {num_steps}: {type(scheduler).__name__} cannot run {num_steps} steps ({e}); "
                        "use more steps or another --scheduler") from e


def unet_calls(scheduler: Any, num_steps: int) -> int:
    """How many UNet calls ``num_steps`` scheduler steps make (PNDM's PLMS repeats its first time step: 2 steps make
    3 calls), from the scheduler's own ``timesteps`` after ``set_timesteps``."""
    set_timesteps(scheduler, num_steps)
    return len(scheduler.timesteps)
