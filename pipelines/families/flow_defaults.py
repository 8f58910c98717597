"""Shared defaults of the transformer families: the flow-matching scheduler a bare model samples with, and the rule
that their denoisers take only what their text encoders give (no ``--cond`` embeddings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.families.ddpm import DDPM_SCHEDULER


def flow_scheduler_config(denoiser_class: str) -> dict[str, Any]:
    """SD3's FlowMatchEulerDiscreteScheduler (shift 3) for a folder without ``scheduler/``."""
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}


def ddpm_scheduler_config(denoiser_class: str) -> dict[str, Any]:
    """The linear-beta DDPM schedule PixArt and DiT were trained with, for a folder without ``scheduler/``."""
    return {"_class_name": "DDIMScheduler", **{k: v for k, v in DDPM_SCHEDULER.items() if k != "variance_type"},
            "clip_sample": False}


def needs_text_encoders(inputs: Mapping[str, dict]) -> str:
    """``--cond`` embeddings cannot drive a transformer denoiser: pooled and T5 inputs come from its encoders."""
    return ("a transformer denoiser takes what its text encoders give (pooled projections, T5 states, masks): "
            "export the whole pipeline folder and give --prompt/--prompts")
