"""The report's charts as PNG bytes (matplotlib's Agg canvas, no pyplot state, no display needed)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from validation.sensitivity_file import LayerSensitivity

DPI = 100


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _finite(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def step_error_png(steps: Sequence[dict[str, Any]]) -> bytes:
    """Per-step error against FP32 (validate.json ``steps``): 1 − cosine and mean/max |error| on log axes, SNR and
    PSNR in dB; x is the diffusion time step t (T = noise at the left, 0 = clean at the right)."""
    from matplotlib.figure import Figure

    rows = sorted(steps, key=lambda s: -int(s["t"]))
    t = [int(s["t"]) for s in rows]
    fig = Figure(figsize=(10, 3.2))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.semilogy(t, _finite([max(1.0 - float(s["cosine"]), 1e-12) for s in rows]), "o-", color="tab:red")
    ax1.set_title("1 − cosine")
    ax2.plot(t, _finite([float(s["snr_db"]) for s in rows]), "o-", label="SNR")
    ax2.plot(t, _finite([float(s["psnr_db"]) for s in rows]), "s-", label="PSNR")
    ax2.set_title("SNR / PSNR (dB)")
    ax2.legend(fontsize=8)
    ax3.semilogy(t, _finite([max(float(s["mean_abs"]), 1e-12) for s in rows]), "o-", label="mean |e|")
    ax3.semilogy(t, _finite([max(float(s["max_abs"]), 1e-12) for s in rows]), "s-", label="max |e|")
    ax3.set_title("absolute error (output units)")
    ax3.legend(fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("time step t")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def sensitivity_png(layers: Sequence[LayerSensitivity], top: int = 30, kept: Sequence[str] = ()) -> bytes:
    """Horizontal bars of the single-layer output MSE of the ``top`` most sensitive layers (log scale); layers in
    ``kept`` (left float by ``quantize --keep-float``) are drawn in grey."""
    from matplotlib.figure import Figure

    shown = sorted(layers, key=lambda x: x.rank)[:top]
    fig = Figure(figsize=(10, 0.9 + 0.24 * max(len(shown), 1)))
    ax = fig.subplots()
    names = [_short(x.node) for x in shown]
    colors = ["0.6" if x.node in kept else "tab:blue" for x in shown]
    ax.barh(range(len(shown)), [max(x.mse, 1e-20) for x in shown], color=colors)
    ax.set_yticks(range(len(shown)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("MSE against FP32 with only this layer quantized")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _short(node: str, width: int = 60) -> str:
    """A node name without the exporter's ``/inner/`` prefix, cut from the left to ``width`` characters."""
    name = node.removeprefix("/inner/").removeprefix("/")
    return name if len(name) <= width else "…" + name[-(width - 1):]
