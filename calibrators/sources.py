"""Calibration inputs drawn along the real denoising trajectory of the FP32 model.

- ``ndtc`` (PTQ4DM): per sample, t ~ N(mu, sigma) over diffusion time steps (0 = clean, T-1 = noise), floored and
  clamped to [0, T-1], then snapped to the sampler step whose time step is nearest; x_t is the state the UNet sees at
  that step when denoising from pure noise. The sample is labelled with the time step and the step index it was
  really produced at (PTQ4DM's released code labels x taken at a loop index counted from the noise end with t counted
  from the clean end; here both come from the same scheduler step).
- ``uniform`` (Q-Diffusion): whole trajectories, keeping the state at every k-th sampler step.
- ``noise``: N(0, 1) inputs with t drawn uniformly from the sampler's time steps (the naive PTQ baseline; drawing
  from the schedule keeps the per-step statistics bounded to ``steps`` distinct time steps).
- ``single-step``: trajectory states at one sampler step only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from calibrators.sample import CalibSample
from common.errors import UserError
from pipelines.conditioning import HIDDEN_STATES, Conditioning
from pipelines.runner import DenoiseRunner
from pipelines.schedulers import set_timesteps
from pipelines.unet_batches import guided_rows

METHODS = ("ndtc", "uniform", "noise", "single-step")


@dataclass(frozen=True)
class SourceConfig:
    """Every parameter that decides the calibration inputs (the cache key of ``calib/``).

    samples: number of CalibSamples (x_t states; with guidance each holds the cond/uncond pair).
    steps: sampler steps of the trajectories; scheduler: sampler name (pipelines.schedulers).
    mu_frac/sigma_frac: NDTC's N(mu, sigma) as fractions of T (PTQ4DM's released script: 0.4 and 0.4; paper: 0.5 sigma).
    every: ``uniform`` keeps every k-th sampler step (default: steps // 10, i.e. 10 states per trajectory).
    single_step: sampler step index for ``single-step`` (default: the middle of the schedule).
    clipped_model_output: passed to ``scheduler.step`` as ``use_clipped_model_output`` unless None (calibrate along
    the trajectory you will sample: see pipelines/trajectory_health.py for why it matters with clip_sample).
    """

    method: str = "ndtc"
    samples: int = 256
    steps: int = 50
    scheduler: str = "ddim"
    seed: int = 0
    mu_frac: float = 0.4
    sigma_frac: float = 0.4
    every: int = 0
    single_step: int = -1
    guidance_scale: float = 7.5
    clipped_model_output: bool | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown --method '{self.method}'; known: {', '.join(METHODS)}")
        if self.samples < 1:
            raise UserError(f"--samples must be >= 1, got {self.samples}")
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if self.sigma_frac <= 0:
            raise UserError(f"--ndtc-sigma must be > 0, got {self.sigma_frac}")
        if self.every < 0 or self.every > self.steps:
            raise UserError(f"--every must be in 1..--steps ({self.steps}), got {self.every}")
        if self.single_step >= self.steps:
            raise UserError(f"--single-step must be < --steps ({self.steps}), got {self.single_step}")

    @property
    def keep_every(self) -> int:
        return self.every or max(1, self.steps // 10)

    def to_json(self) -> dict[str, Any]:
        """All fields; an unset ``clipped_model_output`` is left out, so settings (and cache keys) written before it
        existed still match."""
        d = asdict(self)
        if d["clipped_model_output"] is None:
            del d["clipped_model_output"]
        return d


def ndtc_timesteps(num: int, num_train_timesteps: int, mu_frac: float, sigma_frac: float,
                   rng: np.random.Generator) -> np.ndarray:
    """PTQ4DM's NDTC draw: t ~ N(mu, sigma) with mu, sigma as fractions of T, floored and clamped to [0, T-1]."""
    t_max = num_train_timesteps
    raw = rng.normal(mu_frac * t_max, sigma_frac * t_max, size=num)
    return np.clip(np.floor(raw), 0, t_max - 1).astype(np.int64)


def nearest_steps(timesteps: np.ndarray, schedule: np.ndarray) -> np.ndarray:
    """For each diffusion time step, the index of the sampler step whose time step is nearest (ties: later step)."""
    schedule = np.asarray(schedule, dtype=np.float64)
    dist = np.abs(schedule[None, :] - timesteps[:, None].astype(np.float64))
    # argmin returns the first minimum; reverse so ties go to the later (cleaner) step.
    rev = dist[:, ::-1].argmin(axis=1)
    return (len(schedule) - 1 - rev).astype(np.int64)


class TrajectorySource:
    """Yields CalibSamples from batched FP32 trajectories. One trajectory per ``ndtc`` sample; ``uniform`` and
    ``single-step`` keep several or one state per trajectory; ``noise`` runs no trajectory."""

    def __init__(self, runner: DenoiseRunner, config: SourceConfig, sample_shape: tuple[int, int, int],
                 num_train_timesteps: int, cond: Conditioning | None = None, batch: int = 32) -> None:
        self.runner = runner
        self.config = config
        self.sample_shape = sample_shape
        self.num_train_timesteps = num_train_timesteps
        self.cond = cond
        self.batch = batch

    def schedule(self) -> np.ndarray:
        """The sampler's time steps for ``config.steps`` (descending: noise first)."""
        set_timesteps(self.runner.scheduler, self.config.steps)
        return np.asarray(self.runner.scheduler.timesteps, dtype=np.float64)

    def __len__(self) -> int:
        return self.config.samples

    def __iter__(self) -> Iterator[CalibSample]:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        schedule = self.schedule()
        if cfg.method == "noise":
            yield from self._noise(rng, schedule)
            return
        if cfg.method == "ndtc":
            t = ndtc_timesteps(cfg.samples, self.num_train_timesteps, cfg.mu_frac, cfg.sigma_frac, rng)
            targets = [[int(k)] for k in nearest_steps(t, schedule)]
        elif cfg.method == "uniform":
            kept = list(range(cfg.keep_every - 1, cfg.steps, cfg.keep_every))
            per_traj = len(kept)
            n_traj = math.ceil(cfg.samples / per_traj)
            targets = [kept[: cfg.samples - i * per_traj] for i in range(n_traj)]
        else:  # single-step
            k = cfg.single_step if cfg.single_step >= 0 else cfg.steps // 2
            targets = [[k] for _ in range(cfg.samples)]
        yield from self._trajectories(targets, schedule)

    def _noise(self, rng: np.random.Generator, schedule: np.ndarray) -> Iterator[CalibSample]:
        for i in range(self.config.samples):
            x = rng.standard_normal((1, *self.sample_shape)).astype(np.float32)
            k = int(rng.integers(0, len(schedule)))
            yield self._with_cond(x, int(round(schedule[k])), -1, i)

    def _trajectories(self, targets: list[list[int]], schedule: np.ndarray) -> Iterator[CalibSample]:
        """Run trajectories in batches; ``targets[i]`` lists the sampler steps whose states trajectory i keeps."""
        cfg = self.config
        for start in range(0, len(targets), self.batch):
            chunk = targets[start : start + self.batch]
            last = max(max(ks) for ks in chunk)
            noise = self.trajectory_noise(start, len(chunk))
            kept: list[tuple[int, int, int, np.ndarray]] = []  # (trajectory, step, t, x)

            def grab(i: int, t: int, x: np.ndarray, chunk: list[list[int]] = chunk) -> None:
                for j, ks in enumerate(chunk):
                    if i in ks:
                        kept.append((j, i, t, x[j : j + 1].copy()))

            cond = self._cond_rows(start, len(chunk))
            self.runner.sample(noise, cfg.steps, seed=cfg.seed + start, cond=cond, callback=grab,
                               stop_at_step=last + 1 if last + 1 < cfg.steps else None,
                               use_clipped_model_output=cfg.clipped_model_output)
            kept.sort(key=lambda r: (r[0], r[1]))
            for j, i, t, x in kept:
                if int(schedule[i]) != t:  # the runner's callback truncates (flow matching: fractional t)
                    raise RuntimeError(f"step {i} ran at t={t} but the schedule says {schedule[i]}")
                yield self._with_cond(x, t, i, start + j)

    def trajectory_noise(self, start: int, n: int) -> np.ndarray:
        """x_T of trajectories ``start .. start+n-1`` (one draw per batch of trajectories, seeded by its start)."""
        return self.runner.initial_noise((n, *self.sample_shape), seed=self.config.seed * 1_000_003 + start)

    def _cond_rows(self, start: int, n: int) -> Conditioning | None:
        return None if self.cond is None else self.cond.subset(start, n)

    def _with_cond(self, x: np.ndarray, t: int, step: int, row: int) -> CalibSample:
        """Attach conditioning: with guidance the sample is the (uncond, cond) pair the UNet really sees."""
        if self.cond is None:
            return CalibSample(x, t, step, None)
        feeds = self.cond.unet_feeds(row, 1)  # every conditioning input of the UNet, rows as the runner feeds them
        hidden = feeds.pop(HIDDEN_STATES)
        return CalibSample(guided_rows(x, self.cond.guided), t, step, hidden, feeds)
