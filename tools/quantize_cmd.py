"""``python -m tools quantize WORK``: ranges.json + QDQ policy -> WORK/model.int8.onnx (+ quantize.json)."""

from __future__ import annotations

import argparse
import collections
import fnmatch
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from calibrators.adaround import AdaRoundConfig
from calibrators.calibrate import cached_samples_for
from calibrators.ranges import TensorRanges
from calibrators.sample import CalibSample
from calibrators.weight_rounding import RoundingConfig, learn_rounding
from common.atomic import write_json
from common.errors import UserError
from common.hashing import onnx_model_sha256, sha256_files
from common.workdir import WorkDir
from exporter.onnx_export import save_model
from exporter.qdq_insert import plan_qdq, rewrite
from exporter.qdq_policy import DEFAULT_EXCLUDE, INT4_SCOPES, SHORTCUT_MODES, TARGETS, WEIGHT_ROUNDINGS, QDQPolicy
from exporter.weight_memory import weight_memory
from tools.cli_parser import CliParser
from validation.sensitivity_file import FILE_NAME as SENSITIVITY_FILE
from validation.sensitivity_file import SensitivityResult


def add_policy_args(p: argparse.ArgumentParser) -> None:
    """The QDQ policy argument group (shared with ``pipeline``)."""
    g = p.add_argument_group("Q/DQ policy")
    g.add_argument("--target", default="onnxruntime", choices=list(TARGETS),
                   help="tensorrt: TensorRT placement; onnxruntime: + output Q/DQ for real INT8 CPU kernels")
    g.add_argument("--weight-bits", type=int, default=8, choices=[8, 4],
                   help="4: MatMul/Gemm weights as blocked INT4 (weight-only, real kernels); convolutions per "
                        "--int4-scope")
    g.add_argument("--int4-scope", default="all", choices=list(INT4_SCOPES),
                   help="with --weight-bits 4: 'linear' keeps convolutions INT8; 'all' gives them 4-bit values in "
                        "INT8 storage (no INT4 convolution kernel exists: an accuracy mode)")
    g.add_argument("--int4-block-size", type=int, default=32, help="INT4 values per scale along K (power of 2 >= 16)")
    g.add_argument("--weight-rounding", default=None, choices=list(WEIGHT_ROUNDINGS),
                   help="nearest (amax scales), mse (searched per-channel scales), adaround (searched scales, learned "
                        "rounding on the calibration set); default nearest for 8-bit, mse for 4-bit weights; INT4 "
                        "blocks always take amax scales")
    g.add_argument("--shortcut", default="split", choices=list(SHORTCUT_MODES))
    g.add_argument("--attention-matmul", action="store_true", help="also quantize QK^T and softmax·V")
    g.add_argument("--no-residual-add", action="store_true", help="leave residual Add inputs in float")
    g.add_argument("--exclude", nargs="*", default=None, metavar="PATTERN",
                   help=f"node-name patterns (fnmatch) left float; default {' '.join(DEFAULT_EXCLUDE)}; "
                        "give the flag with no pattern to quantize every layer")
    g.add_argument("--keep-float-nodes", nargs="*", default=[], metavar="NODE", help="node names left float")


def policy_from_args(args: argparse.Namespace) -> QDQPolicy:
    return QDQPolicy(target=args.target, weight_bits=args.weight_bits, shortcut=args.shortcut,
                     attention_matmul=args.attention_matmul, residual_add=not args.no_residual_add,
                     exclude=DEFAULT_EXCLUDE if args.exclude is None else tuple(args.exclude),
                     keep_float=tuple(args.keep_float_nodes), weight_rounding=args.weight_rounding or "",
                     int4_scope=args.int4_scope, int4_block_size=args.int4_block_size)


def add_rounding_args(p: argparse.ArgumentParser) -> None:
    """Settings of --weight-rounding adaround (shared with ``pipeline``)."""
    g = p.add_argument_group("AdaRound (--weight-rounding adaround)")
    g.add_argument("--rounding-samples", type=int, default=128, help="calibration samples used (evenly spaced)")
    g.add_argument("--rounding-rows", type=int, default=16, help="input rows kept per sample and layer")
    g.add_argument("--rounding-iters", type=int, default=1000, help="optimiser steps per layer")
    g.add_argument("--seed", type=int, default=0, help="row sampling and batch order")


def rounding_config_from_args(args: argparse.Namespace) -> RoundingConfig:
    for flag in ("rounding_samples", "rounding_rows", "rounding_iters"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return RoundingConfig(samples=args.rounding_samples, rows_per_sample=args.rounding_rows,
                          adaround=AdaRoundConfig(iters=args.rounding_iters, seed=args.seed))


def rounding_samples(work: WorkDir, ranges: TensorRanges) -> list[CalibSample]:
    """The calibration samples ``ranges`` were computed from (the calib/ cache of ``calibrate``)."""
    samples = cached_samples_for(work.calib_dir, ranges)
    if not samples:
        raise UserError(f"--weight-rounding adaround needs the calibration samples of the ranges file, and "
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


def kernel_report(policy: QDQPolicy) -> list[str]:
    """Which quantized kernels are real and which are emulated, in words."""
    lines = []
    rounding = {"nearest": "amax scales, round to nearest", "mse": "MSE-searched scales, round to nearest",
                "adaround": "MSE-searched scales, AdaRound-learned rounding"}[policy.weight_rounding]
    if policy.weight_bits == 4:
        linear = "amax scales, AdaRound-learned rounding" if policy.weight_rounding == "adaround" else \
            "amax scales, round to nearest"
        lines.append(f"MatMul/Gemm weights: blocked INT4 ({policy.int4_block_size} per amax scale; {linear}), "
                     "weight-only (their inputs stay float): real INT4 kernels, ONNX Runtime MatMulNBits (accuracy "
                     "level 0) and TensorRT INT4 weight-only GEMM (opset 21)")
        if policy.int4_scope == "all":
            lines.append(f"convolution weights: 4-bit values ({rounding}) stored in INT8 containers: the kernels are "
                         "INT8 (TensorRT and ONNX Runtime have no INT4 convolution); 4-bit accuracy is exact, "
                         "4-bit memory and speed are emulated")
        else:
            lines.append(f"convolution weights: INT8 per-channel ({rounding}), real INT8 kernels")
    else:
        lines.append(f"weights: INT8 per-channel ({rounding}), real INT8 kernels")
    if policy.target == "onnxruntime":
        lines.append("ONNX Runtime CPU: DQ->Conv->Q groups fuse into QLinearConv (real INT8); convolutions without "
                     "an output Q (split shortcut branches, the last conv) run in float on dequantized inputs")
    else:
        lines.append("TensorRT: Q/DQ placement for explicit quantization (strongly typed INT8 engines); on ONNX "
                     "Runtime's CPU provider this graph runs float convolutions on dequantized inputs")
    return lines


def main(argv: list[str]) -> int:
    p = CliParser(prog="python -m tools quantize", description=__doc__)
    p.add_argument("work", type=Path)
    p.add_argument("--ranges", type=Path, help="ranges file (default WORK/ranges.json)")
    p.add_argument("--out", type=Path, help="output model (default WORK/model.int8.onnx)")
    p.add_argument("--keep-float", type=int, default=0, metavar="N",
                   help="keep the N most sensitive layers (python -m tools sensitivity) float")
    p.add_argument("--sensitivity", type=Path, help=f"ranking for --keep-float (default WORK/report/{SENSITIVITY_FILE})")
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
    sensitivity_path = args.sensitivity or work.report_dir / SENSITIVITY_FILE
    policy, sensitive = keep_most_sensitive(policy_from_args(args), sensitivity_path, args.keep_float, model_sha,
                                            sha256_files([ranges_path]))
    out_path = args.out or work.int8_model
    if out_path.suffix != ".onnx":
        raise UserError(f"--out '{out_path}' must end in .onnx")
    start = time.perf_counter()
    model = onnx.load(str(model_path))
    plan = plan_qdq(model, ranges, policy)
    for w in plan.warnings:
        print(f"warning: {w}")
    rounded, rounding_report = None, None
    if policy.weight_rounding == "adaround":
        samples = rounding_samples(work, ranges)
        rounded, rounding_report = learn_rounding(model, plan, policy, samples, rounding_config_from_args(args),
                                                  work.root)
        print(f"adaround: {rounding_report['layers_improved']}/{rounding_report['layers']} layers improved, median "
              f"output MSE x{rounding_report['median_mse_ratio']:.2f} of nearest, {rounding_report['seconds_total']} s")
    source_memory = weight_memory(model)
    qmodel = rewrite(model, plan, policy, rounded=rounded)
    del model
    memory = weight_memory(qmodel)
    counts = collections.Counter(n.op_type for n in qmodel.graph.node)
    external = info["onnx"].get("external_data") is not None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.", dir=out_path.parent) as tmp_name:
        tmp = Path(tmp_name)
        save_model(qmodel, tmp / out_path.name, external=external)
        q_sha = onnx_model_sha256(tmp / out_path.name)
        record: dict[str, Any] = {
            "schema_version": 1,
            "command": "python -m tools quantize " + " ".join(argv),
            "policy": policy.to_json(),
            "source_model_sha256": model_sha,
            "ranges": {"file": str(ranges_path), "settings": ranges.settings.to_dict()},
            "model": out_path.name,
            "model_sha256": q_sha,
            "summary": plan.summary(),
            "op_counts": {k: counts[k] for k in ("QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm")},
            "float_nodes": plan.float_nodes,
            "sensitivity_keep_float": {"count": len(sensitive), "nodes": sensitive,
                                       "file": str(sensitivity_path) if sensitive else None},
            "kernels": kernel_report(policy),
            "weight_memory_bytes": {"source": source_memory.to_json(), "quantized": memory.to_json()},
            "weight_rounding": rounding_report,
            "warnings": plan.warnings,
        }
        write_json(tmp / "quantize.json", record)
        # data first, the .onnx that references it next, the record last: each rename is atomic
        for f in sorted(tmp.iterdir(), key=lambda f: (f.suffix == ".json", f.suffix == ".onnx")):
            f.replace(out_path.parent / (f.name if f.name != "quantize.json" else _record_name(out_path, work)))
    seconds = time.perf_counter() - start
    s = plan.summary()
    print(f"quantized {s['quantized_activations']} activations and {s['quantized_weights']} weights "
          f"({s['split_shortcut_convs']} shortcut convs split, {s['float_nodes']} nodes float) in {seconds:.1f} s")
    for line in record["kernels"]:
        print(f"  {line}")
    print(f"  weight memory (initializers): {memory.total / 2**20:.2f} MiB (FP32 model {source_memory.total / 2**20:.2f} "
          f"MiB; INT4 {memory.int4 / 2**20:.2f}, INT8 {memory.int8 / 2**20:.2f}, float {memory.float / 2**20:.2f})")
    print(f"wrote {out_path} and {out_path.parent / _record_name(out_path, work)}")
    return 0


def _record_name(out_path: Path, work: WorkDir) -> str:
    """quantize.json for the default model, else <stem>.quantize.json beside a custom --out."""
    return work.quantize_json.name if out_path == work.int8_model else f"{out_path.stem}.quantize.json"
