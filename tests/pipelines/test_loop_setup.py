"""The set-up every denoising loop shares: x_T scaled, the generator advanced past x_T, step arguments checked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from common.errors import UserError
from pipelines.loop_setup import accepted_step_kwargs, check_step_flags, start_loop, takes_clipped_model_output
from pipelines.schedulers import make_scheduler

CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "beta_schedule": "linear", "clip_sample": True}


def test_start_scales_x_t_and_continues_the_generator_past_it() -> None:
    """As diffusers' pipelines: x_T drawn first from the seeded generator, the scheduler's noise drawn after it."""
    sched = make_scheduler("euler", CONFIG)  # init_noise_sigma > 1 after set_timesteps
    noise = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    start = start_loop(sched, noise, 5, seed=9)
    sigma = float(sched.init_noise_sigma)
    assert len(sched.timesteps) == 5 and sigma > 1
    np.testing.assert_allclose(start.x.numpy(), noise * sigma, rtol=1e-6)
    gen = torch.Generator().manual_seed(9)
    torch.randn((2, 1, 4, 4), generator=gen)
    expected_next = torch.randn(3, generator=gen)
    assert torch.equal(torch.randn(3, generator=start.step_kwargs["generator"]), expected_next)


def test_step_arguments_are_passed_only_where_the_scheduler_takes_them() -> None:
    ddim, euler = make_scheduler("ddim", CONFIG), make_scheduler("euler", CONFIG)
    noise = np.zeros((1, 1, 2, 2), np.float32)
    kwargs = start_loop(ddim, noise, 3, 0, eta=0.5, use_clipped_model_output=True).step_kwargs
    assert set(kwargs) == {"generator", "eta", "use_clipped_model_output"} and kwargs["eta"] == 0.5
    assert set(start_loop(ddim, noise, 3, 0).step_kwargs) == {"generator"}  # unset: the scheduler's default
    assert set(start_loop(euler, noise, 3, 0, eta=0.5).step_kwargs) == {"generator"}  # Euler takes no eta
    assert accepted_step_kwargs(euler, {"s_churn": 1.0, "eta": 0.0}) == {"s_churn": 1.0}
    assert takes_clipped_model_output(ddim) and not takes_clipped_model_output(euler)


def test_a_flag_the_scheduler_does_not_take_is_refused() -> None:
    euler = make_scheduler("euler", CONFIG)
    check_step_flags(euler, None)
    with pytest.raises(UserError, match=r"^--use-clipped-model-output: EulerDiscreteScheduler\.step does not take "
                                        r"it \(DDIM-type schedulers do\)$"):
        start_loop(euler, np.zeros((1, 1, 2, 2), np.float32), 3, 0, use_clipped_model_output=False)
