"""Why the ModelOpt-recipe row is far below ours: one change at a time, measured (issue 16 item 3).

    python -m benchmarks.modelopt_diagnosis [--num 8] [--samples 64]

One statistics collection with ModelOpt's recipe (32 x 20-step trajectories, 2 rows per call) and one with ours
(``--samples`` uniform samples of 50-step trajectories); from them: the recipe's ranges, the same statistics
reduced other ways (global max, global MSE, min-mean divided by the calls), our ranges, and hybrids that take the
recipe's ranges for one group of tensors only (convolution inputs, linear inputs, op outputs) and ours for the
rest. Every row is sampled like the accuracy benchmark's rows (same noise, DDIM 50) and compared with FP32.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace

import numpy as np
import onnx

from benchmarks.accuracy import Sampler, ensure_export, final_images
from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, collect_stats
from calibrators.collectors import TensorStats
from calibrators.estimators import EstimatorConfig
from calibrators.modelopt_recipe import FLOAT_PATTERNS, linear_inputs, modelopt_config, modelopt_samples
from calibrators.range_estimation import ranges_from_stats
from calibrators.ranges import TensorRanges
from calibrators.sources import SourceConfig
from pipelines.runner import seeded_noise
from quantization.qdq_policy import DEFAULT_EXCLUDE, QDQPolicy
from quantization.qdq_rules import ActivationMark, OutputMark, calibration_tensors, mark_graph
from quantization.quantize import quantize
from validation.image_metrics import psnr


@dataclass(frozen=True)
class Row:
    """One diagnosis row: which ranges, which placement."""

    label: str
    ranges: str
    modelopt_policy: bool = True
    target: str = "onnxruntime"
    smoothquant: float = 0.0


def modelopt_policy(target: str = "onnxruntime") -> QDQPolicy:
    """The recipe's float set (conv_in, conv_out, shortcut convs, time embeddings) and no residual-Add Q/DQ."""
    return QDQPolicy(target=target, shortcut="float", exclude=(*DEFAULT_EXCLUDE, *FLOAT_PATTERNS), residual_add=False)


def estimate(stats: TensorStats, est: str, agg: AggregationConfig, base: TensorRanges) -> TensorRanges:
    """``stats`` reduced by estimator ``est`` and aggregation ``agg`` (settings copied from ``base``)."""
    s = base.settings
    return ranges_from_stats(stats, EstimatorConfig(est), agg, model_sha256=base.model_sha256,
                             calibration=s.method, calibration_params=s.params, seed=s.seed)


def with_linear_max(r: TensorRanges, gmax: TensorRanges, linear: set[str]) -> TensorRanges:
    """``r`` with the inputs of MatMul/Gemm taking ``gmax`` (the recipe: linear inputs use the max calibrator)."""
    return replace(r, amax={n: (gmax.amax[n] if n in linear else a) for n, a in r.amax.items()})


def hybrid(ours: TensorRanges, theirs: TensorRanges, names: set[str]) -> TensorRanges:
    """Our ranges, except ``names`` which take ``theirs``."""
    return replace(ours, amax={n: (theirs.amax[n] if n in names else a) for n, a in ours.amax.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", default=REPO / "work" / "bench-digits")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--samples", type=int, default=64, help="calibration samples of our (uniform, MSE) row")
    p.add_argument("--section", default="modelopt-diagnosis")
    args = p.parse_args(argv)
    command = command_line("benchmarks.modelopt_diagnosis", argv)
    from pathlib import Path

    work = ensure_export(Path(args.model), Path(args.work))
    info = work.load_export_info()
    model = onnx.load(str(work.model))
    linear = linear_inputs(model)
    marks = mark_graph(model)
    conv_in = {m.tensor for m in marks if isinstance(m, ActivationMark) and m.reason.startswith(("Conv", "ConvT"))}
    outputs = {m.tensor for m in marks if isinstance(m, OutputMark)}

    mo_cfg = modelopt_config()
    mo_stats, sha, mo_params = collect_stats(work, mo_cfg, calibration_tensors, progress=False)
    base = ranges_from_stats(mo_stats, mo_cfg.estimator, mo_cfg.aggregation, model_sha256=sha,
                             calibration="uniform", calibration_params=mo_params, seed=0)
    gmax = estimate(mo_stats, "max", AggregationConfig("global"), base)
    ranges = {
        "recipe": with_linear_max(base, gmax, linear),
        "recipe-max": gmax,
        "recipe-mse": estimate(mo_stats, "mse", AggregationConfig("global"), base),
        "recipe-calls": with_linear_max(estimate(mo_stats, "max", AggregationConfig(
            "min-mean", step_fraction=1.0, mean_divisor="calls"), base), gmax, linear),
    }
    ranges["recipe-p0.5"] = with_linear_max(estimate(mo_stats, "max", AggregationConfig(
        "min-mean", step_fraction=0.5), base), gmax, linear)
    per_step_max = {n: float(mo_stats[n].absmax.max()) for n in mo_stats.names}
    # where min-mean takes its minimum: the time step of the smallest per-step mean abs-max, per conv input
    argmin_t = [int(mo_stats[n].steps[np.argmin(mo_stats[n].absmax_sum)]) for n in sorted(conv_in - linear)
                if n in mo_stats.names]
    spread = [float(mo_stats[n].absmax_sum.max() / mo_stats[n].absmax_sum.min()) for n in sorted(conv_in - linear)
              if n in mo_stats.names]
    recipe_samples = modelopt_samples(work, progress=False)  # cached; SmoothQuant's per-channel statistics
    del mo_stats
    our_cfg = CalibrateConfig(SourceConfig(method="uniform", samples=args.samples, steps=50),
                              EstimatorConfig("mse"), AggregationConfig("global"))
    our_stats, _, our_params = collect_stats(work, our_cfg, calibration_tensors, progress=False)
    ours = ranges_from_stats(our_stats, our_cfg.estimator, our_cfg.aggregation, model_sha256=sha,
                             calibration="uniform", calibration_params=our_params, seed=0)
    del our_stats
    rec = ranges["recipe"]
    ranges["ours"] = ours
    ranges["ours, recipe conv inputs"] = hybrid(ours, rec, conv_in)
    ranges["ours, recipe linear inputs"] = hybrid(ours, rec, linear)
    ranges["ours, recipe op outputs"] = hybrid(ours, rec, outputs - conv_in - linear)
    ranges["ours, recipe conv inputs and op outputs"] = hybrid(ours, rec, (conv_in | outputs) - linear)

    trt = "tensorrt"
    rows = [
        Row("recipe, onnxruntime target (also every Conv/MatMul/Gemm output quantized, min-mean)", "recipe"),
        Row("recipe, ModelOpt's placement (inputs of Conv/MatMul/Gemm only)", "recipe", target=trt),
        Row("recipe + SmoothQuant 0.8, ModelOpt's placement", "recipe", target=trt, smoothquant=0.8),
        Row("recipe, min-mean divided by the calls (the true mean), ModelOpt's placement", "recipe-calls",
            target=trt),
        Row("recipe, min-mean over the first half of the steps (percentile 0.5: t > T/2), ModelOpt's placement",
            "recipe-p0.5", target=trt),
        Row("recipe's statistics, global max (no min-mean), onnxruntime target", "recipe-max"),
        Row("recipe's statistics, global max, ModelOpt's placement", "recipe-max", target=trt),
        Row("recipe's statistics, global max, + SmoothQuant 0.8, ModelOpt's placement", "recipe-max", target=trt,
            smoothquant=0.8),
        Row("recipe's statistics, global MSE, onnxruntime target", "recipe-mse"),
        Row("ours (uniform, MSE), recipe's float set, onnxruntime target", "ours"),
        Row("ours, our float set (conv_in, conv_out, shortcut convs), onnxruntime target", "ours",
            modelopt_policy=False),
        Row("ours, recipe ranges for conv inputs", "ours, recipe conv inputs"),
        Row("ours, recipe ranges for linear inputs", "ours, recipe linear inputs"),
        Row("ours, recipe ranges for op outputs (onnxruntime output Q/DQ)", "ours, recipe op outputs"),
        Row("ours, recipe ranges for conv inputs and op outputs", "ours, recipe conv inputs and op outputs"),
    ]
    out_dir = work.root / "diagnosis-models"
    out_dir.mkdir(exist_ok=True)
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    noise = seeded_noise((c, h, w), range(args.num))
    samplers = [Sampler(50), Sampler(50, clipped_eps=True)]
    refs = {s.label: final_images(work.model, info, noise, s) for s in samplers}
    load_start = os.getloadavg()[0]
    table = []
    for i, row in enumerate(rows):
        policy = modelopt_policy(row.target) if row.modelopt_policy else QDQPolicy(target=row.target, shortcut="float")
        policy = replace(policy, smoothquant=row.smoothquant)
        qmodel, _ = quantize(model, ranges[row.ranges], policy, samples=recipe_samples, scratch_dir=work.root,
                             progress=False)
        path = out_dir / f"row{i}.onnx"
        onnx.save(qmodel, str(path))
        cells = [f"{psnr(final_images(path, info, noise, s), refs[s.label]):.2f}" for s in samplers]
        print(f"{row.label:90s} " + "  ".join(cells), flush=True)
        table.append([row.label, *cells])

    def ratios(names: set[str]) -> str:
        r = np.array([rec.amax[n] / ours.amax[n] for n in sorted(names) if n in rec.amax and n in ours.amax])
        c = np.array([per_step_max[n] / rec.amax[n] for n in sorted(names) if n in rec.amax])
        return (f"{r.size} tensors: recipe/ours amax median {np.median(r):.2f} (min {r.min():.2f}, max {r.max():.2f}); "
                f"largest per-step abs-max / recipe amax median {np.median(c):.2f} (max {c.max():.2f})")

    body = "\n".join([
        *section_head(f"ModelOpt recipe diagnosis ({args.num} seeds, DDIM 50, PSNR dB against FP32)", command,
                      f"1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "),
        ("- Recipe: calibrators/modelopt_recipe.py (32 x 20 steps, 2 rows per call, min-mean for conv inputs, max "
         f"for linear inputs); ours: uniform {args.samples} samples, DDIM 50, MSE estimator, global. All rows W8A8, "
         "shortcut convs float; \"recipe's float set\" = conv_in, conv_out, conv_shortcut, time_embedding, "
         "time_emb_proj float and no residual-Add Q/DQ. SmoothQuant: quantization/smoothquant.py."),
        f"- Conv inputs: {ratios(conv_in - linear)}",
        f"- Linear inputs: {ratios(linear)}",
        f"- Op outputs (quantized on the onnxruntime target only): {ratios(outputs - conv_in - linear)}",
        (f"- Where min-mean takes its minimum (conv inputs, {len(argmin_t)}): the time step of the smallest per-step "
         f"mean abs-max is t < 100 for {sum(t < 100 for t in argmin_t)}, 100 <= t < 500 for "
         f"{sum(100 <= t < 500 for t in argmin_t)}, t >= 500 for {sum(t >= 500 for t in argmin_t)}; largest / "
         f"smallest per-step mean abs-max: median {np.median(spread):.2f}, max {max(spread):.2f}"),
        "",
        markdown_table(["row", "PSNR 50", "PSNR 50, clipped eps"], table),
    ])
    write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
