"""``python -m tools quantize WORK``: ranges.json + Q/DQ policy -> WORK/model.int8.<ort|trt>.onnx (+ quantize.<ort|trt>.json),
or with ``--format fp8`` WORK/model.fp8.trt.onnx (+ quantize.fp8.trt.json)."""

from __future__ import annotations

import argparse
import fnmatch
import time
from dataclasses import replace
from pathlib import Path

import onnx

from calibrators.calibrate import cached_samples_for
from calibrators.ranges import TensorRanges
from calibrators.sample import CalibSample
from common.errors import UserError
from common.hashing import onnx_model_sha256, sha256_files
from common.workdir import WorkDir
from quantization.adaround import AdaRoundConfig
from pipelines.families.ddpm import UNET_KEEP_FLOAT
from pipelines.families.family import Family
from pipelines.families.registry import family_of
from quantization.fp8 import FP8_AMAX_SOURCES, FP8_DEFAULT_AMAX, FP8_MAX_SCALES, max_ranges
from quantization.qdq_policy import (FORMATS, INT4_SCOPES, REDUCE_RANGE_MODES, SHORTCUT_MODES,
                                     TARGETS, WEIGHT_ROUNDINGS, QDQPolicy)
from quantization.quantize import quantize, save_quantized
from quantization.timestep_groups import quantize_groups, save_grouped
from quantization.weight_rounding import RoundingConfig
from tools.cli_parser import CliParser, check_at_least_one
from validation.sensitivity_file import FILE_NAME as SENSITIVITY_FILE
from validation.sensitivity_file import sensitivity_file
from validation.sensitivity_file import SensitivityResult

#: ``quantize --shortcut`` default: float, measured best on both bundled models against the real peers (issue 26).
DEFAULT_SHORTCUT = "float"


def add_policy_args(p: argparse.ArgumentParser) -> None:
    """The QDQ policy argument group (shared with ``pipeline``)."""
    g = p.add_argument_group("Q/DQ policy")
    g.add_argument("--format", default="int8", metavar="{" + ",".join(FORMATS) + "}",
                   help="int8 (default), or fp8: E4M3 weights and activations for TensorRT on compute capability >= "
                        "8.9 (Ada, Hopper, Blackwell), written as standard FLOAT8E4M3FN Q/DQ (opset 19; docs/fp8.md)")
    g.add_argument("--target", default=None, choices=list(TARGETS),
                   help="tensorrt: TensorRT placement; onnxruntime: + output Q/DQ for real INT8 CPU kernels "
                        "(default onnxruntime; tensorrt with --format fp8)")
    g.add_argument("--weight-bits", type=int, default=8, choices=[8, 4],
                   help="4: MatMul/Gemm weights as blocked INT4 (weight-only, real kernels); convolutions per "
                        "--int4-scope")
    g.add_argument("--int4-scope", default="all", choices=list(INT4_SCOPES),
                   help="with --weight-bits 4: 'linear' keeps convolutions INT8; 'all' gives them 4-bit values in "
                        "INT8 storage (no INT4 convolution kernel exists: an accuracy mode)")
    g.add_argument("--int4-block-size", type=int, default=0,
                   help="INT4 values per scale along K: tensorrt 64 or 128 (default 64); onnxruntime a power of 2 "
                        ">= 16 (default 32)")
    g.add_argument("--weight-rounding", default=None, choices=list(WEIGHT_ROUNDINGS),
                   help="nearest (amax scales), mse (searched per-channel scales), adaround (searched scales, learned "
                        "rounding on the calibration set); default nearest for 8-bit, mse for 4-bit weights; INT4 "
                        "blocks always take amax scales")
    g.add_argument("--reduce-range", nargs="?", const="all", default="", choices=list(REDUCE_RANGE_MODES),
                   help="for OpenVINO on x86 CPUs without VNNI/AMX, whose INT8 kernels otherwise saturate int16 pair "
                        "sums (docs/cpu-backends.md): 'all' (the bare flag) puts every 8-bit weight in [-64, 64] "
                        "(ONNX Runtime's reduce_range); 'pairs' keeps 8-bit convolution weights on scales that make "
                        "input-channel pairs safe, MatMul/Gemm in [-64, 64] (more accurate)")
    g.add_argument("--shortcut", default=DEFAULT_SHORTCUT, choices=list(SHORTCUT_MODES),
                   help="the shortcut convolution of a skip connection: float (default: measured best on both bundled "
                        "models, no CPU speed cost: docs/accuracy-notes.md), split (one scale per skip branch), shared")
    g.add_argument("--attention-matmul", action="store_true", help="also quantize QK^T and softmax·V")
    g.add_argument("--no-residual-add", action="store_true", help="leave residual Add inputs in float")
    g.add_argument("--exclude", nargs="*", default=None, metavar="PATTERN",
                   help=f"node-name patterns (fnmatch) left float; default: the model family's float-kept layers "
                        f"(UNets: {' '.join(UNET_KEEP_FLOAT)}); give the flag with no pattern to quantize every layer")
    g.add_argument("--keep-float-nodes", nargs="*", default=[], metavar="NODE", help="node names left float")
    g.add_argument("--smoothquant", type=float, default=0.0, metavar="ALPHA",
                   help="SmoothQuant the inputs of the quantized MatMul/Gemm layers with this alpha (ModelOpt's "
                        "diffusers recipe: 0.8), from per-channel statistics on the calibration samples; INT8 "
                        "weights only (docs/modelopt-recipe.md)")


def policy_from_args(args: argparse.Namespace, family: Family) -> QDQPolicy:
    """The policy the flags ask for; without ``--exclude``, the ``family``'s float-kept layers."""
    target = args.target or ("tensorrt" if args.format == "fp8" else "onnxruntime")
    return QDQPolicy(format=args.format, target=target, weight_bits=args.weight_bits, shortcut=args.shortcut,
                     attention_matmul=args.attention_matmul, residual_add=not args.no_residual_add,
                     exclude=family.keep_float if args.exclude is None else tuple(args.exclude),
                     keep_float=tuple(args.keep_float_nodes), weight_rounding=args.weight_rounding or "",
                     int4_scope=args.int4_scope, int4_block_size=args.int4_block_size,
                     reduce_range=args.reduce_range, smoothquant=args.smoothquant)


def add_rounding_args(p: argparse.ArgumentParser) -> None:
    """Settings of --weight-rounding adaround (shared with ``pipeline``)."""
    g = p.add_argument_group("AdaRound (--weight-rounding adaround)")
    g.add_argument("--rounding-samples", type=int, default=128, help="calibration samples used (evenly spaced)")
    g.add_argument("--rounding-rows", type=int, default=16, help="input rows kept per sample and layer")
    g.add_argument("--rounding-iters", type=int, default=1000, help="optimiser steps per layer")
    g.add_argument("--seed", type=int, default=0, help="row sampling and batch order")


def rounding_config_from_args(args: argparse.Namespace) -> RoundingConfig:
    check_at_least_one(args, "rounding_samples", "rounding_rows", "rounding_iters")
    return RoundingConfig(samples=args.rounding_samples, rows_per_sample=args.rounding_rows,
                          adaround=AdaRoundConfig(iters=args.rounding_iters, seed=args.seed))


def rounding_samples(work: WorkDir, ranges: TensorRanges, flag: str = "--weight-rounding adaround",
                     ) -> list[CalibSample]:
    """The calibration samples ``ranges`` were computed from (the calib/ cache of ``calibrate``)."""
    samples = cached_samples_for(work.calib_dir, ranges)
    if not samples:
        raise UserError(f"{flag} needs the calibration samples of the ranges file, and "
                        f"'{work.calib_dir}' has none: run python -m tools calibrate {work.root} again")
    return samples


def keep_most_sensitive(policy: QDQPolicy, path: Path, count: int, model_sha: str,
                        ranges_sha: str) -> tuple[QDQPolicy, list[str]]:
    """``policy`` with the ``count`` most sensitive layers of the ranking ``path`` that ``policy`` would quantize
    (not excluded, not already kept float) added to keep_float."""
    if count < 0:
        raise UserError(f"--keep-float must be >= 0, got {count}")
    if count == 0:
        return policy, []
    result = SensitivityResult.load(path, expected_model_sha256=model_sha)
    candidates = [n for n in result.most_sensitive(len(result.layers))
                  if n not in policy.keep_float and not any(fnmatch.fnmatchcase(n, p) for p in policy.exclude)]
    if count > len(candidates):
        raise UserError(f"--keep-float {count} exceeds the {len(candidates)} quantized layers ranked in '{path}'")
    ranked_under = {k: v for k, v in result.policy.items() if k != "keep_float"}
    if ranked_under != {k: v for k, v in policy.to_json().items() if k != "keep_float"} or \
            result.ranges_sha256 != ranges_sha:
        print(f"warning: '{path}' was ranked under another Q/DQ policy or ranges file; the ranking may be stale "
              f"(python -m tools sensitivity WORK measures it again)")
    nodes = candidates[:count]
    return replace(policy, keep_float=policy.keep_float + tuple(nodes)), nodes


def main(argv: list[str]) -> int:
    p = CliParser(prog="python -m tools quantize", description=__doc__)
    p.add_argument("work", type=Path)
    p.add_argument("--ranges", type=Path, help="ranges file (default WORK/ranges.json)")
    p.add_argument("--out", type=Path, help="output model (default WORK/model.int8.ort.onnx or model.int8.trt.onnx, by --target)")
    p.add_argument("--keep-float", type=int, default=0, metavar="N",
                   help="keep the N most sensitive layers (python -m tools sensitivity) float")
    p.add_argument("--timestep-groups", type=int, default=None, metavar="K",
                   help="also write K graphs with the activation scales of the ranges' K time-step groups (calibrate "
                        "--aggregation groups --groups K), sharing one weight file, and a manifest that sample and "
                        "validate route each step by (docs/timestep-groups.md)")
    p.add_argument("--fp8-amax", default=FP8_DEFAULT_AMAX, choices=list(FP8_AMAX_SOURCES),
                   help="with --format fp8: activation amax from 'max' (the largest |x| calibration saw: the measured "
                        "best for FP8, docs/fp8.md) or 'ranges' (the ranges file's own estimator)")
    p.add_argument("--sensitivity", type=Path, help=f"ranking for --keep-float (default WORK/report/{SENSITIVITY_FILE}, "
                                                    f"{sensitivity_file('fp8')} with --format fp8)")
    add_policy_args(p)
    add_rounding_args(p)
    args = p.parse_args(argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    model_path = work.model_for("fp32")
    ranges_path = args.ranges or work.ranges
    if not ranges_path.is_file():
        raise UserError(f"no ranges file '{ranges_path}': run python -m tools calibrate {work.root} first")
    model_sha = onnx_model_sha256(model_path)
    ranges = TensorRanges.load(ranges_path, expected_model_sha256=model_sha)
    policy = policy_from_args(args, family_of(info))
    sensitivity_path = args.sensitivity or work.report_dir / sensitivity_file(policy.format)
    policy, sensitive = keep_most_sensitive(policy, sensitivity_path, args.keep_float, model_sha,
                                            sha256_files([ranges_path]))
    out_path = args.out or work.quantized_model(policy.format, policy.target)
    if out_path.suffix != ".onnx":
        raise UserError(f"--out '{out_path}' must end in .onnx")
    if policy.fp8 and args.fp8_amax == "max":
        ranges = max_ranges(ranges)
    start = time.perf_counter()
    samples = rounding_samples(work, ranges) if policy.weight_rounding == "adaround" else None
    if policy.smoothquant and samples is None:
        samples = rounding_samples(work, ranges, "--smoothquant")
    grouped = None
    if args.timestep_groups is not None:
        grouped = quantize_groups(onnx.load(str(model_path)), ranges, policy, args.timestep_groups,
                                  ranges_file=str(ranges_path))
        qmodel, record = grouped.global_model, grouped.record
    else:
        qmodel, record = quantize(onnx.load(str(model_path)), ranges, policy,
                                  rounding=rounding_config_from_args(args), samples=samples, scratch_dir=work.root,
                                  ranges_file=str(ranges_path))
    for w in record.warnings:
        print(f"warning: {w}")
    if record.weight_rounding is not None:
        r = record.weight_rounding
        print(f"adaround: {r['layers_improved']}/{r['layers']} layers improved, median output MSE "
              f"x{r['median_mse_ratio']:.2f} of nearest, {r['seconds_total']} s")
    if policy.fp8 and args.fp8_amax == "max":
        record = replace(record, activation_scales=FP8_MAX_SCALES)
    record = replace(record, sensitivity_keep_float={"count": len(sensitive), "nodes": sensitive,
                                                     "file": str(sensitivity_path) if sensitive else None})
    record_path = work.quantize_record(out_path)
    external = info["onnx"].get("external_data") is not None
    command = "python -m tools quantize " + " ".join(argv)
    if grouped is not None:
        grouped = replace(grouped, record=record)
        record = save_grouped(grouped, out_path, record_path, external=external, command=command)
    else:
        record = save_quantized(qmodel, record, out_path, record_path, external=external, command=command)
    seconds = time.perf_counter() - start
    s = record.summary
    print(f"quantized {s['quantized_activations']} activations and {s['quantized_weights']} weights "
          f"({s['split_shortcut_convs']} shortcut convs split, {s['float_nodes']} nodes float) in {seconds:.1f} s "
          f"for {policy.target} in {policy.format.upper()}")
    for line in record.kernels:
        print(f"  {line}")
    print(f"  activation scales: {record.activation_scales}")
    if policy.reduce_range == "all":
        print("  --reduce-range all: every 8-bit weight in [-64, 64] (no int16 saturation on CPUs without VNNI/AMX)")
    elif policy.reduce_range == "pairs":
        print("  --reduce-range pairs: 8-bit convolution weights whose input-channel pairs sum to at most 128, "
              "MatMul/Gemm weights in [-64, 64] (no int16 saturation on CPUs without VNNI/AMX)")
    if record.timestep_groups is not None:
        tg = record.timestep_groups
        for g in tg["groups"]:
            print(f"  {g['model']}: {g['activation_scales']}")
        print(f"  {tg['shared_initializers']} initializers ({tg['shared_data_bytes'] / 2**20:.2f} MiB) stored once in "
              f"{tg['shared_data']} for the {len(tg['groups'])} group graphs; routing manifest {tg['manifest']}")
    memory, source_memory = record.weight_memory_bytes["quantized"], record.weight_memory_bytes["source"]
    print(f"  weight memory (initializers): {memory['total'] / 2**20:.2f} MiB (FP32 model "
          f"{source_memory['total'] / 2**20:.2f} MiB; INT4 {memory['int4'] / 2**20:.2f}, INT8 "
          f"{memory['int8'] / 2**20:.2f}, FP8 {memory.get('fp8', 0) / 2**20:.2f}, float {memory['float'] / 2**20:.2f})")
    print(f"wrote {out_path} and {record_path}")
    return 0
