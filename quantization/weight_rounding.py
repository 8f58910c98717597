"""Weight rounding reconstruction for a Q/DQ plan: per quantized layer, AdaRound on inputs captured from the FP32
ONNX model over the time-step-aware calibration set (inputs through each layer's activation quantizer, targets
from the float layer). Measured in ad-hoc runs on 2026-11-22 (not benchmarks): taking the inputs from the round-to-nearest Q/DQ model instead (the AdaRound
paper's asymmetric reconstruction, done in one pass rather than layer by layer) made W4A8 images worse (32 seeds:
16.4 dB against 26.4 dB), since each layer then compensates upstream rounding that is itself being replaced; and
taking them stage by stage from the model quantized so far (learned rounding upstream, 8 stages in graph order) was
worse too (19.4 dB, round to nearest 22.5 dB): compensating upstream error on a few thousand rows does not carry
over to the denoising trajectory. The result (codes and scales by node) goes to
``quantization.qdq_insert.rewrite``, so the model stays a plain Q/DQ graph."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantization.adaround import AdaRoundConfig, adaround
from quantization.layer_inputs import capture_layer_inputs
from calibrators.sample import CalibSample
from quantization.qdq_insert import QDQPlan, RoundedWeights
from quantization.qdq_policy import QDQPolicy
from quantization.weight_layers import WeightedLayer
from quantization.weight_quant import block_scales, channel_scales, pair_safe_scales


@dataclass(frozen=True)
class RoundingConfig:
    """samples: calibration samples used (evenly spaced over the set, so every time step range is kept);
    rows_per_sample: input rows kept per sample and layer; adaround: the optimiser; batch_rows / threads /
    tap_budget_gb: as in calibration."""

    samples: int = 128
    rows_per_sample: int = 16
    adaround: AdaRoundConfig = field(default_factory=AdaRoundConfig)
    batch_rows: int = 32
    threads: int = 0
    tap_budget_gb: float = 4.0

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "rows_per_sample": self.rows_per_sample,
                "adaround": self.adaround.to_json(), "batch_rows": self.batch_rows}


def layer_scales(layer: WeightedLayer, policy: QDQPolicy) -> np.ndarray:
    """Cout×G scales of a layer in matrix form: per channel (G = 1, the policy's method; pair-safe when the policy
    says so, with room for learned rounding) or per INT4 block (amax)."""
    if layer.block_size:
        return block_scales(layer.w, layer.block_size, layer.qmax)
    scale = channel_scales(layer.w, 0, layer.qmax, policy.scale_method)
    if policy.pair_safe(layer.op):
        scale = pair_safe_scales(layer.w.reshape(layer.shape), scale, slack=2)
    return scale[:, None]


def spread(samples: list[CalibSample], count: int) -> list[CalibSample]:
    """``count`` samples evenly spaced over ``samples`` (all of them when fewer)."""
    if count >= len(samples):
        return list(samples)
    picks = np.linspace(0, len(samples) - 1, count).round().astype(int)
    return [samples[i] for i in picks]


def learn_rounding(model: onnx.ModelProto, plan: QDQPlan, policy: QDQPolicy, samples: list[CalibSample],
                   cfg: RoundingConfig, scratch_dir: Path, progress: bool = True
                   ) -> tuple[RoundedWeights, dict[str, Any]]:
    """AdaRound codes for every layer of ``plan`` that has a matrix form; returns them by node and a report
    (per layer: output MSE with nearest and learned rounding on the captured rows; totals; seconds)."""
    from tqdm import tqdm

    start = time.perf_counter()
    layers = plan.layers(model, policy)
    used = spread(samples, cfg.samples)
    inputs = capture_layer_inputs(model, scratch_dir, used, layers, cfg.rows_per_sample, cfg.adaround.seed,
                                  cfg.batch_rows, cfg.tap_budget_gb, cfg.threads, progress)
    captured = time.perf_counter() - start
    rounded: RoundedWeights = {}
    per_layer = []
    for layer in tqdm(layers, desc="adaround", file=sys.stderr, disable=not progress, mininterval=2):
        scale = layer_scales(layer, policy)
        result = adaround(inputs.pop(layer.node), layer.input_amax, layer.w, scale, layer.qmax, cfg.adaround)
        rounded[layer.node] = (result.codes, scale.astype(np.float32))
        per_layer.append({"node": layer.node, "mse_nearest": result.mse_nearest, "mse_learned": result.mse_learned,
                          "kept_nearest": result.kept_nearest})
    seconds = time.perf_counter() - start
    improved = [r for r in per_layer if not r["kept_nearest"]]
    report = {
        "method": "adaround",
        "config": cfg.to_json(),
        "samples_used": len(used),
        "layers": len(layers),
        "layers_improved": len(improved),
        "median_mse_ratio": float(np.median([r["mse_learned"] / max(r["mse_nearest"], 1e-30) for r in per_layer]))
        if per_layer else 1.0,
        "seconds_capture": round(captured, 1),
        "seconds_total": round(seconds, 1),
        "per_layer": per_layer,
    }
    return rounded, report
