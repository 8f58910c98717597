"""A Session that runs one of two UNets by diffusion time step: the float model at high noise, the quantized one
below. At the first (high-noise) steps a sampler that predicts x0 divides the UNet's error by sqrt(alpha_bar) (about
0.006 at t = 990 for the DDPM schedule). How much routing those steps to FP32 buys is measured by
``benchmarks.float_steps`` (on the reference model: 32.1 -> 33.8 dB at DDIM 50 with 10 FP32 steps; nothing at DDIM 100
with clip_sample, where the loss comes from trajectories leaving the training range: engines/trajectory_health.py)."""

from __future__ import annotations

import numpy as np

from engines.session import ManagedSession, Session


class TimestepRoutedSession(ManagedSession):
    """``high`` runs every call whose time step is >= ``threshold`` (diffusion time steps, 0 = clean), ``low`` the
    rest; both must share inputs and outputs. ``calls`` counts the calls each one ran ({"high": n, "low": m})."""

    def __init__(self, high: Session, low: Session, threshold: float) -> None:
        self.high = high
        self.low = low
        self.threshold = float(threshold)
        self.calls = {"high": 0, "low": 0}

    @property
    def input_names(self) -> list[str]:
        return self.low.input_names

    @property
    def output_names(self) -> list[str]:
        return self.low.output_names

    def activate(self) -> TimestepRoutedSession:
        self.high.__enter__()
        self.low.__enter__()
        if self.high.input_names != self.low.input_names or self.high.output_names != self.low.output_names:
            raise ValueError(f"routed sessions differ: inputs {self.high.input_names} vs {self.low.input_names}, "
                             f"outputs {self.high.output_names} vs {self.low.output_names}")
        return self

    def deactivate(self) -> None:
        self.high.__exit__(None, None, None)
        self.low.__exit__(None, None, None)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Route on the feed's time step (the runner feeds one time step per call, broadcast over the batch)."""
        t = np.asarray(feeds["timestep"], dtype=np.float64)
        if t.size and float(t.min()) != float(t.max()) and (t.min() < self.threshold <= t.max()):
            raise ValueError(f"one call mixes time steps on both sides of {self.threshold}: {np.unique(t)}")
        side = "high" if t.size and float(t.max()) >= self.threshold else "low"
        self.calls[side] += 1
        return (self.high if side == "high" else self.low).run(feeds)
