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
}


def make_scheduler(name: str, config: dict[str, Any]) -> Any:
    """A diffusers scheduler ``name`` (ddim, ddpm, dpm, euler, pndm) built ``from_config(config)``, unchanged."""
    if name not in SCHEDULERS:
        raise UserError(f"unknown --scheduler '{name}'; known: {', '.join(SCHEDULERS)}")
    diffusers = lazy_import("diffusers")
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
