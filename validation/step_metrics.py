"""Output-quality metrics of a quantized UNet against FP32, per denoising step (numpy arrays of any shape)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class StepMetrics:
    """Quantized UNet output ``q`` against FP32 output ``r`` at one time step.

    cosine: cosine similarity of the flattened outputs; psnr_db: 20·log10(max|r|) − 10·log10(MSE);
    snr_db: 10·log10(Σr² / Σ(r−q)²); mean_abs / max_abs: absolute error in output units (ε units for ε-models).
    """

    t: int
    cosine: float
    psnr_db: float
    snr_db: float
    mean_abs: float
    max_abs: float

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def _db(num: float, den: float) -> float:
    if den == 0:
        return float("inf")
    return float(10 * np.log10(num / den)) if num > 0 else float("-inf")


def step_metrics(reference: np.ndarray, output: np.ndarray, t: int) -> StepMetrics:
    """Metrics of ``output`` against ``reference`` (same shape) at time step ``t``."""
    r = reference.astype(np.float64).ravel()
    q = output.astype(np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs output {output.shape}")
    err = r - q
    denom = float(np.linalg.norm(r) * np.linalg.norm(q))
    cosine = float(r @ q / denom) if denom > 0 else (1.0 if not err.any() else 0.0)
    mse = float(np.mean(err**2))
    peak = float(np.max(np.abs(r)))
    return StepMetrics(
        t=int(t), cosine=cosine, psnr_db=_db(peak**2, mse), snr_db=_db(float(r @ r), float(err @ err)),
        mean_abs=float(np.mean(np.abs(err))), max_abs=float(np.max(np.abs(err))),
    )
