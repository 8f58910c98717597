"""``python -m tools calibrate WORK``: time-step-aware calibration of the FP32 model -> WORK/ranges.json."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from calibrators.aggregation import AGGREGATIONS, AggregationConfig
from calibrators.calibrate import CalibrateConfig, calibrate
from quantization.qdq_rules import calibration_tensors
from calibrators.estimators import ESTIMATORS, EstimatorConfig
from calibrators.sources import METHODS, SourceConfig
from common.errors import UserError
from common.workdir import WorkDir
from pipelines.conditioning import Conditioning
from pipelines.schedulers import SCHEDULERS
from tools.cli_parser import CliParser, add_clipped_model_output, check_at_least_one
from tools.cli_inputs import add_conditioning_args, conditioning_from_args


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """The calibration argument group (shared with ``pipeline``)."""
    g = p.add_argument_group("calibration inputs")
    g.add_argument("--method", default="ndtc", choices=list(METHODS))
    g.add_argument("--samples", type=int, default=256, help="calibration samples (x_t states)")
    g.add_argument("--steps", type=int, default=50, help="sampler steps of the calibration trajectories")
    g.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS))
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--ndtc-mu", type=float, default=0.4, help="NDTC mean as a fraction of T (PTQ4DM: 0.4)")
    g.add_argument("--ndtc-sigma", type=float, default=0.4,
                   help="NDTC std as a fraction of T (PTQ4DM's script 0.4; the paper's T/2 is 0.5)")
    g.add_argument("--every", type=int, default=0, help="uniform: keep every k-th step (default steps//10)")
    g.add_argument("--single-step", type=int, default=-1, help="single-step: sampler step index (default middle)")
    add_clipped_model_output(g, "; calibrate as you will sample")
    add_conditioning_args(g)
    e = p.add_argument_group("ranges")
    e.add_argument("--estimator", default="mse", choices=sorted(ESTIMATORS),
                   help="range estimator (default mse: best measured on the reference model, docs/benchmarks.md)")
    e.add_argument("--bits", type=int, default=8, choices=[8, 4], help="grid the ranges are estimated for; every Q/DQ graph has INT8 activations, so quantize refuses "
                        "4-bit ranges (kept to study INT4 activation ranges)")
    e.add_argument("--percentile", type=float, default=99.99)
    e.add_argument("--lp", type=float, default=2.0, help="Lp norm of the MSE search (PTQ4DM/Q-Diffusion: 2.4)")
    e.add_argument("--aggregation", choices=list(AGGREGATIONS),
                   help="time-step aggregation; 'groups' = global amax plus K per-group amax recorded in ranges.json "
                        "(quantize's default graph uses the global amax; quantize --timestep-groups K uses the group "
                        "amaxes: one graph per group, each step routed to its group: docs/timestep-groups.md) "
                        "(default: groups, or global for single-step)")
    e.add_argument("--groups", type=int, default=4, help="K step groups")
    e.add_argument("--num-bins", type=int, default=2048)
    p.add_argument("--batch-rows", type=int, default=32, help="rows per UNet call")
    p.add_argument("--attention-matmul", action="store_true",
                   help="also calibrate the attention-score MatMul inputs (needed by quantize --attention-matmul)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--tap-budget-gb", type=float, default=4.0,
                   help="memory for tapped activations held at once; larger models are tapped in several passes")


def config_from_args(args: argparse.Namespace) -> CalibrateConfig:
    source = SourceConfig(method=args.method, samples=args.samples, steps=args.steps, scheduler=args.scheduler,
                          seed=args.seed, mu_frac=args.ndtc_mu, sigma_frac=args.ndtc_sigma, every=args.every,
                          single_step=args.single_step, guidance_scale=args.guidance_scale,
                          clipped_model_output=args.use_clipped_model_output)
    estimator = EstimatorConfig(method=args.estimator, bits=args.bits, percentile=args.percentile, p=args.lp)
    method = args.aggregation or ("global" if args.method == "single-step" else "groups")
    aggregation = AggregationConfig(method=method, groups=args.groups)
    check_at_least_one(args, "batch_rows")
    if args.num_bins < 16:
        raise UserError(f"--num-bins must be >= 16, got {args.num_bins}")
    if args.tap_budget_gb <= 0:
        raise UserError("--tap-budget-gb must be > 0")
    return CalibrateConfig(source, estimator, aggregation, num_bins=args.num_bins, batch_rows=args.batch_rows,
                           threads=args.threads, attention=args.attention_matmul, tap_budget_gb=args.tap_budget_gb)


def unconditional_row(cond: Conditioning, args: argparse.Namespace) -> str:
    """What the unconditional half of the calibration rows is, in words."""
    if not cond.guided:
        return "no unconditional row"
    if args.negative_prompt:
        return "the negative prompt"
    assert cond.uncond is not None
    if not cond.uncond.any():  # SDXL pipelines with force_zeros_for_empty_prompt, as the runner samples them
        return "zero unconditional embeddings (the pipeline's force_zeros_for_empty_prompt)"
    return "the empty prompt"


def main(argv: list[str]) -> int:
    p = CliParser(prog="python -m tools calibrate", description=__doc__)
    p.add_argument("work", type=Path)
    add_calibration_args(p)
    args = p.parse_args(argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    cfg = config_from_args(args)
    cond = conditioning_from_args(args, info, args.seed, work_root=work.root)
    if cond is not None and args.prompts is not None:
        print(f"calibrating with {cond.rows} prompts from {args.prompts} and {unconditional_row(cond, args)} "
              f"(guidance {args.guidance_scale:g})")
    start = time.perf_counter()
    ranges = calibrate(work, cfg, calibration_tensors, cond)
    ranges.save(work.ranges)
    seconds = time.perf_counter() - start
    amax = np.array(list(ranges.amax.values()))
    print(f"calibrated {len(ranges.amax)} tensors ({cfg.source.method}, {cfg.source.samples} samples, "
          f"{cfg.estimator.method}) in {seconds:.1f} s; amax median {np.median(amax):.3g}, max {amax.max():.3g}")
    print(f"wrote {work.ranges}")
    return 0
