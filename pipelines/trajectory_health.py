"""Whether a denoising trajectory stays where the UNet was trained: the largest |value| of each image's model input.

A training input is x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps with x0 in [-1, 1] (pixels; latents scaled to
about unit variance) and eps ~ N(0, 1), so |x_t| stays below |x0| + 5 or so: a 5-sigma noise value turns up about once
in 2 million (schedulers with sigma > 1, such as Euler, divide x back in ``scale_model_input``, which is what the UNet
sees). A trajectory whose input goes far beyond feeds the UNet values it never saw: its output there is
extrapolation, in FP32 as in INT8, and a quantized model's activations saturate at their calibrated ranges. Measured
on the reference model: diffusers' DDIM with ``clip_sample`` true and ``use_clipped_model_output`` unset clips x0
but steps with the UNet's eps, which breaks the self-correction of x_t; at 100 steps half of the FP32 trajectories
reach |x_t| above 8 (up to 32) in a few pixels (the RMS stays near 1), and their images show blotches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# |model input| above which a trajectory is reported as off the training distribution (in-distribution: below ~6).
ABS_LIMIT = 8.0


@dataclass
class TrajectoryHealth:
    """Per image: the largest |value| of its model input over the steps seen, and the first step (index, time step)
    where it exceeded ``limit``. Fed by ``record`` once per scheduler step with the N×C×H×W model input."""

    limit: float = ABS_LIMIT
    peak_abs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    first_off: list[tuple[int, int] | None] = field(default_factory=list)

    def record(self, step: int, t: int, model_in: np.ndarray) -> None:
        """Take the model input of one step (N×C×H×W; with guidance the runner passes the N images once)."""
        peak = np.abs(model_in.reshape(model_in.shape[0], -1)).max(axis=1).astype(np.float64)
        if self.peak_abs.shape != peak.shape:
            self.peak_abs = np.zeros_like(peak)
            self.first_off = [None] * len(peak)
        self.peak_abs = np.maximum(self.peak_abs, peak)
        for i in np.flatnonzero(peak > self.limit):
            if self.first_off[i] is None:
                self.first_off[i] = (step, t)

    @property
    def off_images(self) -> list[int]:
        """Indices of the images whose model input exceeded ``limit`` at some step."""
        return [i for i, f in enumerate(self.first_off) if f is not None]

    def summary(self) -> dict[str, object]:
        """JSON-ready: images, how many left the training range, the worst RMS and where the first one left."""
        off = self.off_images
        first = min((f for f in self.first_off if f is not None), default=None)
        return {
            "images": int(self.peak_abs.size), "abs_limit": self.limit,
            "images_off_distribution": len(off), "peak_abs": round(float(self.peak_abs.max(initial=0.0)), 3),
            "first_off_step": None if first is None else {"step": first[0], "t": first[1]},
        }

    def warning(self, hint: str = "") -> str | None:
        """One line for the user when some image left the training range, else None."""
        off = self.off_images
        if not off:
            return None
        s = self.summary()
        first = s["first_off_step"]
        assert isinstance(first, dict)
        return (f"warning: {len(off)}/{self.peak_abs.size} trajectories left the UNet's training range (model-input "
                f"|x_t| up to {s['peak_abs']:.1f}, limit {self.limit:g}; first at step {first['step']}, t={first['t']}): "
                "the model extrapolates there, at any precision" + (f"; {hint}" if hint else ""))
