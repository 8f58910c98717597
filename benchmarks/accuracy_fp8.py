"""FP8 (E4M3) against INT8 against FP32 images, and which range estimator suits FP8.

    python -m benchmarks.accuracy_fp8 [--steps 50 100] [--num 64] [--samples 256]

The accuracy benchmark's machinery (benchmarks/accuracy.py: its export, seeds — image i from seed i —, its NDTC
calibration and its ``build_variant``/``final_images``), measured in one run: one statistics collection (attention
tensors included), ranges estimated from it with each estimator (max, percentile 99.99, mse, entropy), the INT8
``tensorrt`` graph (the accuracy benchmark's mse ranges) and FP8 graphs (``quantize --format fp8``) from each
estimator, with and without the attention MatMuls quantized. FP8 graphs run simulated on ONNX Runtime's CPU provider
(E4M3 rounding exact, arithmetic in float32: the accuracy an FP8 engine's rounding gives, not its speed).
Metrics against the FP32 images from the same noise: pooled PSNR (one MSE over all images), median image PSNR, the
worst image's PSNR, and the digit classifier's agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from benchmarks.accuracy import W8, Sampler, Variant, benchmark_inputs, build_variant, final_images
from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, collect_stats, generate_samples
from calibrators.estimators import ESTIMATOR_METHODS, EstimatorConfig
from calibrators.range_estimation import ranges_from_stats
from calibrators.ranges import TensorRanges
from calibrators.sources import SourceConfig
from common.hashing import onnx_model_sha256
from pipelines.trajectory_health import TrajectoryHealth
from quantization.fp8 import FP8_DEFAULT_AMAX
from quantization.qdq_rules import calibration_tensors
from quantization.weight_memory import weight_memory
from validation.image_metrics import psnr, psnr_per_image

INT8_LABEL = "ndtc + split, TensorRT graph"  # the accuracy benchmark's INT8 tensorrt row (estimator mse)


def variants(estimators: list[str]) -> list[tuple[Variant, str, bool]]:
    """(row, estimator of its ranges, every step count): INT8 and FP8 (FP8_DEFAULT_AMAX) with and without attention
    at every step count; FP8 from each other estimator at the first step count only (the estimator choice)."""
    int8 = next(v for v in W8 if v.label == INT8_LABEL)
    fp8 = replace(int8, format="fp8")
    rows = [(replace(int8, label="INT8 (mse)"), "mse", True),
            (replace(int8, label="INT8 (mse) + attention", attention=True), "mse", True),
            (replace(fp8, label=f"FP8 ({FP8_DEFAULT_AMAX})"), FP8_DEFAULT_AMAX, True),
            (replace(fp8, label=f"FP8 ({FP8_DEFAULT_AMAX}) + attention", attention=True), FP8_DEFAULT_AMAX, True)]
    return rows + [(replace(fp8, label=f"FP8 ({e})"), e, False) for e in estimators if e != FP8_DEFAULT_AMAX]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", type=Path, default=REPO / "work" / "bench-digits")
    p.add_argument("--steps", type=int, nargs="+", default=[50, 100], help="DDIM steps")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--samples", type=int, default=256, help="calibration samples")
    p.add_argument("--estimators", nargs="+", default=["max", "percentile", "mse", "entropy"],
                   choices=sorted(ESTIMATOR_METHODS), help="FP8 rows at the first --steps (the estimator choice)")
    p.add_argument("--clipped-eps", action=argparse.BooleanOptionalAction, default=True,
                   help="DDIM with use_clipped_model_output (the demo's setting; default on)")
    p.add_argument("--section", default="accuracy-fp8")
    args = p.parse_args(argv)
    command = command_line("benchmarks.accuracy_fp8", argv)
    work, info, features, noise = benchmark_inputs(args.model, args.work, args.num)
    sha = onnx_model_sha256(work.model)
    cfg = CalibrateConfig(SourceConfig(method="ndtc", samples=args.samples, steps=50), EstimatorConfig("mse"),
                          AggregationConfig("global"), attention=True)
    start = time.perf_counter()
    stats, _, params = collect_stats(work, cfg, calibration_tensors, progress=False)
    ranges: dict[str, TensorRanges] = {
        e: ranges_from_stats(stats, EstimatorConfig(e), cfg.aggregation, model_sha256=sha, calibration="ndtc",
                             calibration_params=params, seed=cfg.source.seed)
        for e in sorted({*args.estimators, "mse", FP8_DEFAULT_AMAX})}
    calib_seconds = time.perf_counter() - start
    del stats
    samples_for = {"ndtc": generate_samples(work, info, cfg, sha, progress=False)}  # cached by collect_stats
    out_dir = work.root / f"bench-models-{args.section}"
    out_dir.mkdir(exist_ok=True)
    rows_spec = variants(args.estimators)
    models = {v.label: build_variant(v, work, info, {"ndtc": ranges[e]}, samples_for, out_dir, {})
              for v, e, _ in rows_spec}
    memory = {label: weight_memory(onnx.load(str(path))).total / 2**20 for label, path in models.items()}
    rows: list[list[object]] = []
    results: dict[str, dict[str, float]] = {}
    ref_off: dict[str, int] = {}
    for steps in args.steps:
        sampler = Sampler(steps, clipped_eps=True if args.clipped_eps else None)
        health: list[TrajectoryHealth] = []
        ref = final_images(work.model, info, noise, sampler, health)
        ref_off[sampler.label] = int(health[0].summary()["images_off_distribution"])
        ref_label = features.predict(ref)
        for v, estimator, every in rows_spec:
            if not every and steps != args.steps[0]:
                continue
            img = final_images(models[v.label], info, noise, sampler, health)
            per_image = psnr_per_image(img, ref)
            worst = int(np.argmin(per_image))
            r = {"psnr": psnr(img, ref), "median_image_psnr": float(np.median(per_image)),
                 "worst_image_psnr": float(per_image[worst]), "worst_seed": worst,
                 "agree": float(np.mean(features.predict(img) == ref_label)),
                 "off_range": int(health[-1].summary()["images_off_distribution"]), "weight_mib": memory[v.label]}
            results[f"{v.label} @ {sampler.label}"] = r
            rows.append([v.label, estimator, sampler.label, f"{r['psnr']:.2f}", f"{r['median_image_psnr']:.2f}",
                         f"{r['worst_image_psnr']:.2f} (seed {worst})", f"{100 * r['agree']:.0f}%", r["off_range"],
                         f"{memory[v.label]:.3f}"])
            print(f"{sampler.label:>16s}  {v.label:28s} PSNR {r['psnr']:6.2f} dB  median {r['median_image_psnr']:6.2f} "
                  f"dB  worst {r['worst_image_psnr']:6.2f} dB  agree {100 * r['agree']:.0f}%", flush=True)
            (work.root / f"{args.section}.json").write_text(json.dumps(results, indent=2))
            write_section(args.section, section(args, command, calib_seconds, ref_off, rows))
    return 0


def section(args: argparse.Namespace, command: str, calib_seconds: float, ref_off: dict[str, int],
            rows: list[list[object]]) -> str:
    """The docs/benchmarks.md section of the rows measured so far."""
    import ml_dtypes
    import onnxruntime

    model = args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model
    return "\n".join([
        *section_head(f"FP8 against INT8: images against FP32 ({args.num} seeds, DDIM)", command),
        f"- ONNX Runtime {onnxruntime.__version__} (CPU provider; FP8 simulated: E4M3 rounding exact, float32 "
        f"arithmetic; its Q/DQ fusions off for FP8 graphs), ml_dtypes {ml_dtypes.__version__}.",
        f"- Model `{model}`; calibration: ndtc, {args.samples} samples (DDIM 50-step trajectories), attention "
        f"tensors included, one statistics collection ({calib_seconds:.0f} s), ranges estimated from it by each "
        "estimator (`calibrate --estimator`; percentile 99.99; mse and entropy on the INT8 grid). All rows: the "
        "`tensorrt` target, shortcut split, residual-Add Q/DQ, conv_in/conv_out float; INT8 rows use the accuracy "
        "benchmark's mse ranges; `+ attention`: `--attention-matmul` (FP8: Q, K, V and the softmax output, head_dim "
        "64 here).",
        f"- FP8 rows at every step count take the `{FP8_DEFAULT_AMAX}` amax (`quantize --format fp8`'s default, "
        "chosen from the estimator rows at the first step count).",
        "- Steps: DDIM with the model's scheduler config" + (", `use_clipped_model_output=True` (the demo's "
        "setting)" if args.clipped_eps else "") + "; FP32 reference sampled the same way, off-range trajectories "
        "of the reference: " + "; ".join(f"{k}: {v}" for k, v in ref_off.items()) + ".",
        "- PSNR dB: pooled over all images (one MSE); median image PSNR dB; worst image: the lowest per-image PSNR "
        "and its seed; agree: the digit classifier gives the FP32 image's label; weight MiB: initializers.",
        "",
        markdown_table(["variant", "estimator", "steps", "PSNR dB", "median image PSNR dB", "worst image dB",
                        "agree", "off-range", "weight MiB"], rows),
    ])


if __name__ == "__main__":
    sys.exit(main())
