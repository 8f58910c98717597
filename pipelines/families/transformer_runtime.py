"""A transformer family's denoiser Session and scheduler as the DenoiseRunner takes them.

``adapt_denoiser`` wraps the Session with the family's fixed feeds and learned-sigma trimming
(pipelines/denoiser_adapter.py) and a flow-matching scheduler with the family's set-up (pipelines/flow_matching.py:
SD3's shift, FLUX's sigmas and resolution-dependent ``mu`` for the exported token count). UNet families pass through
unchanged.
"""

from __future__ import annotations

from typing import Any

from engines.session import Session
from pipelines.denoiser_adapter import AdaptedDenoiser
from pipelines.families.family import Family
from pipelines.flow_matching import FlowSchedule, flow_scheduler


def image_tokens(info: dict[str, Any]) -> int:
    """Latent tokens of the exported image: FLUX's packed tokens, else (h / patch)·(w / patch)."""
    shape = info["inputs"]["sample"]["shape"]
    if len(shape) == 3:
        return int(shape[1])
    patch = int(info.get("unet_config", {}).get("patch_size", 2))
    return (int(shape[2]) // patch) * (int(shape[3]) // patch)


def adapt_denoiser(family: Family, info: dict[str, Any], session: Session, scheduler: Any) -> tuple[Session, Any]:
    """(Session, scheduler) for the runner: adapted for a transformer family, as they are for a UNet family."""
    parts = family.transformer
    if parts is None:
        return session, scheduler
    adapted = AdaptedDenoiser(session, parts.feeds(info["inputs"]))
    if parts.flow is None:
        return adapted, scheduler
    flux_sigmas, always_mu, max_shift = parts.flow
    return adapted, flow_scheduler(scheduler, FlowSchedule(flux_sigmas, always_mu, image_tokens(info), max_shift))
