"""The set-up every denoising loop shares, written once: the scheduler's time steps, x_T scaled by
``init_noise_sigma``, the seeded generator advanced past x_T, and the keyword arguments of ``scheduler.step``.

Used by ``DenoiseRunner`` (numpy in and out of a Session), ``TensorDenoiseRunner`` (torch tensors on one device),
``sample_lockstep`` (one scheduler per image) and the serving bindings (which check the flag when they start).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import UserError
from common.lazy import lazy_import
from pipelines.schedulers import set_timesteps


@dataclass(frozen=True)
class LoopStart:
    """The state a loop starts from: ``x`` (x_T × ``init_noise_sigma``, a float32 torch tensor N×C×H×W on the
    loop's device) and ``step_kwargs`` (what ``scheduler.step`` takes besides eps, t and x: the generator,
    ``eta``, ``use_clipped_model_output``, each only if the scheduler accepts it)."""

    x: Any
    step_kwargs: dict[str, Any]


def start_loop(scheduler: Any, noise: np.ndarray, num_steps: int, seed: int, *, eta: float | None = None,
               use_clipped_model_output: bool | None = None, device: Any = None) -> LoopStart:
    """Set ``num_steps`` time steps on ``scheduler`` and start a loop from ``noise`` (x_T, N×C×H×W float32).

    diffusers' pipelines draw x_T first and then let stochastic schedulers continue the same generator: the
    generator, seeded with ``seed``, is advanced past an x_T-sized draw so the step noise matches theirs (whether or
    not x_T came from it). ``eta`` / ``use_clipped_model_output`` go to ``scheduler.step`` unless None (diffusers'
    pipelines leave them unset); a scheduler whose ``step`` does not take ``use_clipped_model_output`` refuses it
    (``check_step_flags``)."""
    torch = lazy_import("torch")
    check_step_flags(scheduler, use_clipped_model_output)
    set_timesteps(scheduler, num_steps)
    gen = torch.Generator().manual_seed(int(seed))
    torch.randn(noise.shape, generator=gen, dtype=torch.float32)
    x = torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32))
    if device is not None:
        x = x.to(device)
    extra: dict[str, Any] = {"generator": gen}
    if eta is not None:
        extra["eta"] = eta
    if use_clipped_model_output is not None:
        extra["use_clipped_model_output"] = use_clipped_model_output
    # flow-matching schedulers have no init_noise_sigma: x_T is the noise itself (as their pipelines use it)
    return LoopStart(x * getattr(scheduler, "init_noise_sigma", 1.0), accepted_step_kwargs(scheduler, extra))


def check_step_flags(scheduler: Any, use_clipped_model_output: bool | None) -> None:
    """UserError naming ``--use-clipped-model-output`` when it is set and ``scheduler.step`` does not take it."""
    if use_clipped_model_output is not None and not takes_clipped_model_output(scheduler):
        raise UserError(f"--use-clipped-model-output: {type(scheduler).__name__}.step does not take it "
                        "(DDIM-type schedulers do)")


def takes_clipped_model_output(scheduler: Any) -> bool:
    """Whether ``scheduler.step`` has a ``use_clipped_model_output`` argument (DDIM-type schedulers)."""
    return "use_clipped_model_output" in inspect.signature(scheduler.step).parameters


def accepted_step_kwargs(scheduler: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``kwargs`` that ``scheduler.step`` accepts (as diffusers' ``prepare_extra_step_kwargs``)."""
    params = inspect.signature(scheduler.step).parameters
    return {k: v for k, v in kwargs.items() if k in params}
