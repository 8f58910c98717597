"""AdaRound (Nagel et al., 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization") for one layer in
matrix form: learn, per weight, whether to round down or up so the quantized layer's output on calibration inputs
matches the float layer's.

Weights W (Cout×K) with fixed scales s (per channel or per block) become s·clip(floor(W/s) + h(V), -qmax, qmax),
h(V) = clip(sigmoid(V)·(ζ-γ) + γ, 0, 1) (the rectified sigmoid, ζ = 1.1, γ = -0.1), V initialised so h(V) equals
the fractional part (the soft weights start at the float weights). Loss: ‖fq(X)·Wq^T - X·W^T‖² summed over outputs,
averaged over rows (X: inputs of the FP32 model; fq(X): the same rows through the layer's activation quantizer, so
the rounding also absorbs the activation error, as QDrop/BRECQ do), plus λ·Σ(1 - |2h - 1|^β) after a warm-up, β annealed from 20 to
2 (pushes every h to 0 or 1). The hard codes are floor(W/s) + [V ≥ 0].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from common.lazy import lazy_import
from quantization.weight_quant import expand_scales, nearest_codes

ZETA = 1.1
GAMMA = -0.1


@dataclass(frozen=True)
class AdaRoundConfig:
    """iters: Adam steps per layer; batch: rows per step; lr: Adam learning rate of V; reg_weight: λ;
    warmup: fraction of steps without the rounding regulariser; beta: (start, end) of the annealed exponent;
    seed: row-batch order."""

    iters: int = 1000
    batch: int = 256
    lr: float = 1e-2
    reg_weight: float = 0.01
    warmup: float = 0.2
    beta: tuple[float, float] = (20.0, 2.0)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RoundingResult:
    """Codes (int8, Cout×K, |q| ≤ qmax) and the output MSE of nearest and learned rounding on all rows."""

    codes: np.ndarray
    mse_nearest: float
    mse_learned: float
    kept_nearest: bool  # learned rounding was not better on the calibration rows: nearest kept


def fake_quantize(x: np.ndarray, amax: float | None) -> np.ndarray:
    """What Q -> DQ does to an activation with range ``amax`` (symmetric INT8, scale amax/127); identity if None."""
    if amax is None:
        return x
    s = np.float32(amax / 127.0)
    return (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)


def output_mse(x_in: np.ndarray, target: np.ndarray, w: np.ndarray) -> float:
    """mean over rows of Σ_out (x_in·w^T - target)²."""
    diff = x_in.astype(np.float64) @ w.T.astype(np.float64) - target
    return float(np.mean(np.sum(diff * diff, axis=1)))


def adaround(x: np.ndarray, amax: float | None, w: np.ndarray, scale: np.ndarray, qmax: int,
             cfg: AdaRoundConfig) -> RoundingResult:
    """Learned rounding of ``w`` (Cout×K float32) with scales ``scale`` (Cout×G) on inputs ``x`` (rows×K float32,
    read through activation range ``amax``; None = float input)."""
    torch = lazy_import("torch")
    x_in = fake_quantize(x, amax)
    target = x.astype(np.float64) @ w.T.astype(np.float64)
    nearest = nearest_codes(w, scale, qmax)
    s_full = expand_scales(scale, w.shape[1])
    mse_nearest = output_mse(x_in, target, nearest * s_full)

    gen = torch.Generator().manual_seed(cfg.seed)
    s_t = torch.from_numpy(s_full)
    w_div = torch.from_numpy(w.astype(np.float32)) / s_t
    floor = torch.floor(w_div)
    rest = (w_div - floor).clamp(1e-4, 1 - 1e-4)
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)
    xt = torch.from_numpy(np.ascontiguousarray(x_in))
    yt = torch.from_numpy(target.astype(np.float32))
    opt = torch.optim.Adam([v], lr=cfg.lr)
    warm = int(cfg.warmup * cfg.iters)
    rows = xt.shape[0]
    for it in range(cfg.iters):
        idx = torch.randint(0, rows, (min(cfg.batch, rows),), generator=gen)
        h = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
        wq = s_t * torch.clamp(floor + h, -qmax, qmax)
        diff = xt[idx] @ wq.T - yt[idx]
        loss = diff.pow(2).sum(1).mean()
        if it >= warm:
            frac = (it - warm) / max(1, cfg.iters - warm)
            beta = cfg.beta[1] + (cfg.beta[0] - cfg.beta[1]) * (1 - frac)
            loss = loss + cfg.reg_weight * (1 - (2 * h - 1).abs().pow(beta)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        learned = torch.clamp(floor + (v >= 0).to(floor.dtype), -qmax, qmax).numpy().astype(np.int8)
    mse_learned = output_mse(x_in, target, learned * s_full)
    if mse_learned >= mse_nearest:
        return RoundingResult(nearest, mse_nearest, mse_learned, kept_nearest=True)
    return RoundingResult(learned, mse_nearest, mse_learned, kept_nearest=False)
