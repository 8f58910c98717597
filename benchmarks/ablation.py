"""Which choices cost accuracy: the measurements behind the defaults (estimator, excluded layers, target).

    python -m benchmarks.ablation [--num 16] [--steps 50]

Reference model, NDTC calibration (256 samples, DDIM 50 trajectories, global ranges); each row changes one thing
against the row it names; final-image PSNR against FP32 over ``--num`` seeds (image i: seed i), DDIM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import onnx

from benchmarks.accuracy import Sampler, ensure_export, final_images
from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, calibrate
from quantization.qdq_rules import calibration_tensors
from calibrators.estimators import EstimatorConfig
from calibrators.ranges import TensorRanges
from calibrators.sources import SourceConfig
from pipelines.runner import seeded_noise
from quantization.qdq_insert import QDQPlan, plan_qdq, rewrite
from quantization.qdq_policy import QDQPolicy
from validation.image_metrics import psnr

EDGES = ("*/conv_in/*", "*/conv_out/*")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", type=Path, default=REPO / "work" / "bench-digits")
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    command = command_line("benchmarks.ablation", argv)
    work = ensure_export(args.model, args.work)
    info = work.load_export_info()
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    noise = seeded_noise((c, h, w), range(args.num))
    ref = final_images(work.model, info, noise, Sampler(args.steps))
    model = onnx.load(str(work.model))
    cache: dict[tuple[str, str], TensorRanges] = {}

    def ranges(method: str = "ndtc", est: str = "max") -> TensorRanges:
        if (method, est) not in cache:
            cfg = CalibrateConfig(SourceConfig(method=method, samples=256, steps=50), EstimatorConfig(est),
                                  AggregationConfig("global"), attention=True)
            cache[(method, est)] = calibrate(work, cfg, calibration_tensors, progress=False)
        return cache[(method, est)]

    rows: list[list[object]] = []

    def row(label: str, r: TensorRanges, policy: QDQPolicy, tweak: Callable[[QDQPlan], None] | None = None) -> None:
        plan = plan_qdq(model, r, policy)
        if tweak is not None:
            tweak(plan)
        out = work.root / "ablation.onnx"
        onnx.save(rewrite(model, plan, policy), str(out))
        value = psnr(final_images(out, info, noise, Sampler(args.steps)), ref)
        rows.append([label, f"{value:.2f}"])
        print(f"{label:70s} {value:6.2f} dB", flush=True)

    everything = QDQPolicy(target="onnxruntime", exclude=())
    row("A. max ranges, every layer quantized", ranges(), everything)
    row("A, weights only (activations float)", ranges(), everything, lambda p: p.activations.clear())
    row("A, activations only (weights float)", ranges(), everything, lambda p: p.weights.clear())
    row("A, conv_in float", ranges(), QDQPolicy(target="onnxruntime", exclude=EDGES[:1]))
    row("A, conv_out float", ranges(), QDQPolicy(target="onnxruntime", exclude=EDGES[1:]))
    row("A, conv_in and conv_out float", ranges(), QDQPolicy(target="onnxruntime", exclude=EDGES))
    row("A, time-embedding Gemms float", ranges(), QDQPolicy(target="onnxruntime", exclude=("*Gemm*",)))
    row("A, attention projections float", ranges(), QDQPolicy(target="onnxruntime", exclude=("*attentions*",)))
    row("A, residual Add inputs float", ranges(), QDQPolicy(target="onnxruntime", exclude=(), residual_add=False))
    for est in ("percentile", "mse", "entropy"):
        row(f"A with {est} ranges (percentile 99.99)" if est == "percentile" else f"A with {est} ranges",
            ranges(est=est), everything)
    for est in ("max", "percentile", "mse", "entropy"):
        row(f"B. {est} ranges, conv_in/conv_out float (mse: the default)", ranges(est=est),
            QDQPolicy(target="onnxruntime"))
    row("B (mse), attention QK^T and softmax·V also quantized", ranges(est="mse"),
        QDQPolicy(target="onnxruntime", attention_matmul=True))
    row("B (mse), TensorRT graph (no output Q, float bias)", ranges(est="mse"), QDQPolicy(target="tensorrt"))
    body = "\n".join([
        *section_head("Default exclusions and estimator (ablation)", command),
        f"- Reference model, NDTC (256 samples), global ranges; final-image PSNR against FP32 over {args.num} seeds, "
        f"DDIM {args.steps}; `onnxruntime` target unless marked.",
        "",
        markdown_table(["variant", "PSNR dB"], rows),
    ])
    write_section("ablation", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
