"""The denoising loop over any Session with any diffusers scheduler, written out as the diffusers pipelines do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.lazy import lazy_import
from pipelines.conditioning import Conditioning
from pipelines.loop_setup import start_loop, takes_clipped_model_output
from pipelines.unet_batches import predict_in_chunks
from engines.session import Session
from pipelines.trajectory_health import TrajectoryHealth

# (step index, time step, model input x_t as fed to the UNet: B×C×H×W float32) -> None
StepCallback = Callable[[int, int, np.ndarray], None]


class DenoiseRunner:
    """Loop a diffusers scheduler over a UNet Session.

    The scheduler is used as it is: ``set_timesteps``, ``init_noise_sigma``, ``scale_model_input``, ``step``.
    The UNet runs in chunks of ``batch_size`` images (twice that many rows with guidance); the scheduler steps
    over the whole batch at once, so a stochastic scheduler draws the same noise as diffusers' pipelines.
    """

    def __init__(self, unet: Session, scheduler: Any, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.unet = unet
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.health = TrajectoryHealth()  # of the last ``sample`` call

    def initial_noise(self, shape: tuple[int, ...], seed: int) -> np.ndarray:
        """x_T as diffusers' pipelines draw it on the CPU: ``torch.randn(shape, generator=manual_seed(seed))``."""
        return initial_noise(shape, seed)

    def predict_noise(self, x: np.ndarray, t: Any, cond: Conditioning | None) -> np.ndarray:
        """The UNet output for model input ``x`` (N×C×H×W) at time step ``t``, with classifier-free guidance;
        image ``i`` of ``x`` takes the conditioning rows of image ``i`` (``Conditioning.unet_feeds``)."""
        return predict_in_chunks(x, t, cond, self.batch_size, lambda feeds: self.unet.run(feeds)["out"])

    def sample(
        self,
        noise: np.ndarray,
        num_steps: int,
        seed: int = 0,
        cond: Conditioning | None = None,
        callback: StepCallback | None = None,
        stop_at_step: int | None = None,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
    ) -> np.ndarray:
        """Denoise ``noise`` (x_T, N×C×H×W float32, unit variance) in ``num_steps`` scheduler steps.

        Returns the final sample in model space, before any clipping. ``seed`` seeds the generator of stochastic
        schedulers, advanced past x_T as diffusers' pipelines do. ``callback`` sees every UNet input with its step index and time step. With ``stop_at_step=k``
        the loop returns the model input of step k (the state x_t the UNet sees at ``scheduler.timesteps[k]``)
        without running that step. ``eta`` and ``use_clipped_model_output`` go to ``scheduler.step`` as diffusers'
        pipelines pass them (None: not passed, the scheduler's default). ``self.health`` records every model input.
        """
        torch = lazy_import("torch")
        sched = self.scheduler
        start = start_loop(sched, noise, num_steps, seed, eta=eta, use_clipped_model_output=use_clipped_model_output)
        x = start.x
        self.health = TrajectoryHealth()
        for i, t in enumerate(sched.timesteps):
            model_in = sched.scale_model_input(x, t).numpy().astype(np.float32, copy=False)
            if stop_at_step is not None and i == stop_at_step:
                return model_in
            self.health.record(i, int(t), model_in)
            if callback is not None:
                callback(i, int(t), model_in)
            eps = torch.from_numpy(self.predict_noise(model_in, t, cond))
            x = sched.step(eps, t, x, **start.step_kwargs).prev_sample
        return x.numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class SampledImages:
    """The result of one denoising run: ``samples`` N×C×H×W float32 in model space (before clipping) and the
    trajectory health of the run; ``images`` post-processed as diffusers does (N×C×H×W in [0, 1])."""

    samples: np.ndarray
    health: TrajectoryHealth

    @property
    def images(self) -> np.ndarray:
        return to_images(self.samples)


def sample_images(session: Session, scheduler: Any, noise: np.ndarray, steps: int, *, seed: int = 0,
                  cond: Conditioning | None = None, batch_size: int | None = None,
                  use_clipped_model_output: bool | None = None, callback: StepCallback | None = None,
                  ) -> SampledImages:
    """Final images from ``noise`` (x_T, N×C×H×W) after ``steps`` steps of ``scheduler`` on the active UNet
    ``session``: the one library call behind ``sample``, ``validate``, sensitivity and the benchmarks.
    ``batch_size``: images per UNet call (default all of them)."""
    runner = DenoiseRunner(session, scheduler, batch_size=batch_size or len(noise))
    samples = runner.sample(noise, steps, seed=seed, cond=cond, callback=callback,
                            use_clipped_model_output=use_clipped_model_output)
    return SampledImages(samples, runner.health)


def clipped_output_hint(scheduler: Any, use_clipped_model_output: bool | None = None) -> str:
    """What to try when trajectories leave the training range under a scheduler that clips x0 but keeps the UNet's
    eps (diffusers' DDIM default); "" when the option was already set or does not apply."""
    if use_clipped_model_output:
        return ""
    clips = bool(getattr(scheduler, "config", {}).get("clip_sample", False))
    if clips and takes_clipped_model_output(scheduler):
        return ("the scheduler clips x0 (clip_sample) but steps with the UNet's eps; --use-clipped-model-output "
                "re-derives eps from the clipped x0 and keeps x_t consistent")
    return ""


def initial_noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """x_T as diffusers' pipelines draw it on the CPU: ``torch.randn(shape, generator=manual_seed(seed))``."""
    torch = lazy_import("torch")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float32).numpy()


def seeded_noise(image_shape: tuple[int, int, int], seeds: range | list[int]) -> np.ndarray:
    """One x_T per seed, N×C×H×W: image i is what ``python -m tools sample --seed seeds[i] --num 1`` starts from."""
    return np.concatenate([initial_noise((1, *image_shape), seed) for seed in seeds])


def to_images(samples: np.ndarray) -> np.ndarray:
    """Post-process as diffusers' pipelines do: ``(x / 2 + 0.5).clamp(0, 1)``; N×C×H×W float32 in [0, 1]."""
    return np.clip(samples / 2 + 0.5, 0.0, 1.0).astype(np.float32)
