"""Numerical check of an exported component: ONNX Runtime against PyTorch on the same inputs (the UNet at several
time steps; the text encoder and VAE decoder on one batch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.lazy import lazy_import
from engines.ort_session import OrtSession
from exporter.onnx_export import OUTPUT, ExportShapes, example_inputs, unet_for_onnx


@dataclass(frozen=True)
class VerifyResult:
    """Per time step: max |onnx - torch| / max |torch| over the output tensor (relative to output scale)."""

    timesteps: tuple[float, ...]
    rel_errors: tuple[float, ...]
    tolerance: float

    @property
    def max_rel_error(self) -> float:
        return max(self.rel_errors)

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {
            "timesteps": list(self.timesteps),
            "rel_errors": [float(f"{e:.3e}") for e in self.rel_errors],
            "max_rel_error": float(f"{self.max_rel_error:.3e}"),
            "tolerance": self.tolerance,
            "metric": "max|onnx-torch| / max|torch|, batch 2, N(0,1) inputs",
        }


def default_timesteps(num_train_timesteps: int) -> list[float]:
    """Three time steps across the schedule: near clean, middle, pure noise."""
    t = num_train_timesteps
    return [float(max(1, t // 50)), float(t // 2), float(t - 1)]


def verify_export(
    unet: Any, onnx_path: Path, shapes: ExportShapes, timesteps: list[float], tolerance: float, batch: int = 2
) -> VerifyResult:
    """Run the PyTorch UNet and the ONNX model on the same random inputs at each time step."""
    torch = lazy_import("torch")
    errors = []
    module = unet_for_onnx(unet, shapes)
    with OrtSession(onnx_path, providers=["CPUExecutionProvider"]) as sess:
        for i, t in enumerate(timesteps):
            feeds = example_inputs(shapes, batch, [t] * batch, seed=1000 + i)
            with torch.no_grad():
                args = [torch.from_numpy(feeds[n]) for n in shapes.input_names()]
                ref = module(*args).numpy()
            got = sess.run(feeds)[OUTPUT]
            errors.append(relative_error(got, ref))
    return VerifyResult(tuple(timesteps), tuple(errors), tolerance)


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (1 as the scale of an all-zero reference)."""
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(got - ref))) / scale


def verify_outputs(module: Any, onnx_path: Path, feeds: dict[str, np.ndarray], output_names: list[str],
                   tolerance: float) -> dict[str, Any]:
    """ONNX Runtime against ``module(*feeds.values())`` (a tuple of tensors in ``output_names`` order), per output:
    max relative error. Returns the verification record of export.json (``ok`` among its keys)."""
    torch = lazy_import("torch")
    with torch.no_grad():
        ref = module(*[torch.from_numpy(v) for v in feeds.values()])
    ref = ref if isinstance(ref, tuple) else (ref,)
    with OrtSession(onnx_path, providers=["CPUExecutionProvider"]) as sess:
        got = sess.run(feeds)
    errors = {n: relative_error(got[n], r.numpy()) for n, r in zip(output_names, ref, strict=True)}
    worst = max(errors.values())
    return {"rel_errors": {n: float(f"{e:.3e}") for n, e in errors.items()}, "max_rel_error": float(f"{worst:.3e}"),
            "tolerance": tolerance, "ok": worst <= tolerance,
            "metric": f"max|onnx-torch| / max|torch|, batch {len(next(iter(feeds.values())))}"}
