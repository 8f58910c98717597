"""Schedulers by short name; a step count a scheduler refuses is one UserError naming --steps."""

from __future__ import annotations

import pytest

from common.errors import UserError
from pipelines.schedulers import make_scheduler, set_timesteps, unet_calls
from exporter.architectures import SD15_SCHEDULER


def test_a_step_count_the_scheduler_refuses_is_one_user_error() -> None:
    prk = make_scheduler("pndm", {**SD15_SCHEDULER, "skip_prk_steps": False})
    with pytest.raises(UserError, match=r"--steps 2: PNDMScheduler cannot run 2 steps"):
        set_timesteps(prk, 2)
    plms = make_scheduler("pndm", SD15_SCHEDULER)  # Stable Diffusion 1.5's own config: PLMS only
    set_timesteps(plms, 2)
    assert len(plms.timesteps) >= 2
    with pytest.raises(UserError, match="--steps must be >= 1"):
        set_timesteps(plms, 0)


def test_unet_calls_counts_the_scheduler_s_time_steps() -> None:
    assert unet_calls(make_scheduler("pndm", SD15_SCHEDULER), 2) == 3  # PLMS repeats its first time step
    assert unet_calls(make_scheduler("ddim", SD15_SCHEDULER), 2) == 2
