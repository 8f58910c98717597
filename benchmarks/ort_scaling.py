"""Where ONNX Runtime's INT8 stops scaling with threads: its profiler per op-type group at each thread count, and
the measured effect of the session options that could matter.

    python -m benchmarks.ort_scaling [--work work/speed-ddpm-cifar10] [--batch 8] [--threads 1 2] [--runs 5]

Uses the models ``benchmarks.speed`` prepared (FP32 ``model.onnx``, our INT8 ``speed-models/ours_int8.onnx``).
Op types are grouped: convolutions (QLinearConv, Conv, NCHWc Conv, FusedConv), Q/DQ element-wise (QuantizeLinear,
DequantizeLinear, QLinear* element-wise), layout (Transpose, ReorderInput/ReorderOutput), normalisation (GroupNorm,
InstanceNormalization, LayerNormalization, ...), and the rest. Kernel times are summed over ``--runs`` runs after one
warm-up; the speed-up of a group is its time at the first thread count over its time at each other count. The
session-option rows are UNet-call medians of the INT8 model, all variants interleaved round by round.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.profile_ops import random_feeds
from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from benchmarks.profile_ops import kernel_events, per_run_by
from common.workdir import WorkDir
from engines.ort_session import OrtSession, session_options

GROUPS = {
    "convolutions": ("QLinearConv", "Conv", "FusedConv", "NchwcConv"),
    "Q/DQ element-wise": ("QuantizeLinear", "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
                          "QLinearConcat", "QLinearAveragePool", "QLinearLeakyRelu"),
    "layout (transposes, NCHWc reorders)": ("Transpose", "ReorderInput", "ReorderOutput"),
    "normalisation": ("GroupNorm", "GroupNormalization", "InstanceNormalization", "LayerNormalization",
                      "SkipLayerNormalization", "ReduceMean"),
    "matrix products (attention, linear)": ("MatMul", "QLinearMatMul", "MatMulInteger", "Gemm", "QGemm",
                                            "DynamicQuantizeMatMul", "FusedMatMul"),
}


def group_of(op: str) -> str:
    return next((g for g, ops in GROUPS.items() if op in ops), "other (SiLU, Add, Mul, Concat, Resize, ...)")


def grouped(per_op: collections.Counter[str]) -> dict[str, float]:
    """Microseconds per run by group."""
    out: dict[str, float] = collections.defaultdict(float)
    for op, us in per_op.items():
        out[group_of(op)] += us
    return dict(out)


CONV_OPS = GROUPS["convolutions"]


def output_resolution(event: dict[str, Any]) -> str:
    """``H×W`` of a convolution kernel event's 4-D output (NCHW, or NHWC for channels-last QLinearConv; the UNets
    here have square feature maps), "?" when the profiler recorded no 4-D shape."""
    shapes = event["args"].get("output_type_shape") or [{}]
    dims = next(iter(shapes[0].values()), [])
    if len(dims) != 4:
        return "?"
    h, w = (dims[2], dims[3]) if dims[2] == dims[3] else (dims[1], dims[2])
    return f"{h}×{w}"


def per_run(events: list[dict[str, Any]], runs: int) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Microseconds per run by op type, and of the convolution kernels by output resolution."""
    convs = [e for e in events if e["args"]["op_name"] in CONV_OPS]
    return per_run_by(events, runs, lambda e: e["args"]["op_name"]), per_run_by(convs, runs, output_resolution)


def option_variants(threads: int) -> dict[str, Any]:
    """SessionOptions variants of the INT8 model: the project's default and one change each."""
    import onnxruntime as ort

    variants: dict[str, Any] = {"default (ORT_ENABLE_ALL, spinning on, x64quantprecision 1)":
                                session_options(threads)}
    # ONNX Runtime's own default: U8S8 kernels, saturating on x64 CPUs without VNNI (ignored on VNNI/AMX CPUs)
    variants["session.x64quantprecision = 0 (U8S8)"] = session_options(threads, exact_u8s8=False)
    so = session_options(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    variants["session.intra_op.allow_spinning = 0"] = so
    so = session_options(threads)
    so.add_session_config_entry("session.dynamic_block_base", "4")
    variants["session.dynamic_block_base = 4"] = so
    so = session_options(threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    variants["ORT_ENABLE_EXTENDED (no NCHWc layout)"] = so
    so = session_options(threads)
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    so.inter_op_num_threads = threads
    variants["ORT_PARALLEL executor"] = so
    return variants


def option_medians(path: Path, feeds: dict[str, np.ndarray], threads: int, repeats: int) -> dict[str, float]:
    """Median ms per UNet call of each option variant, interleaved."""
    sessions = {k: OrtSession(path, options=so).activate() for k, so in option_variants(threads).items()}
    times: dict[str, list[float]] = collections.defaultdict(list)
    for s in sessions.values():
        s.run(feeds)
    for _ in range(repeats):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(feeds)
            times[k].append(time.perf_counter() - start)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "work" / "speed-ddpm-cifar10")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--option-repeats", type=int, default=10, help="rounds of the session-option comparison")
    args = p.parse_args(argv)
    command = command_line("benchmarks.ort_scaling", argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    feeds = random_feeds(info, args.batch)
    int8_path = work.root / "speed-models" / "ours_int8.onnx"
    load = [os.getloadavg()[0]]
    prof: dict[tuple[str, int], dict[str, float]] = {}
    ops: dict[int, collections.Counter[str]] = {}
    by_res: dict[tuple[str, int], collections.Counter[str]] = {}
    for threads in args.threads:
        for label, path in (("FP32", work.model), ("INT8", int8_path)):
            per_op, by_res[(label, threads)] = per_run(kernel_events(path, feeds, args.runs, threads), args.runs)
            prof[(label, threads)] = grouped(per_op)
            if label == "INT8":
                ops[threads] = per_op
        load.append(os.getloadavg()[0])
    first = args.threads[0]
    groups = list(GROUPS) + ["other (SiLU, Add, Mul, Concat, Resize, ...)", "all kernels"]
    rows = []
    for g in groups:
        row: list[object] = [g]
        for label in ("FP32", "INT8"):
            for t in args.threads:
                us = sum(prof[(label, t)].values()) if g == "all kernels" else prof[(label, t)].get(g, 0.0)
                row.append(f"{us / 1000:.1f}")
            base = sum(prof[(label, first)].values()) if g == "all kernels" else prof[(label, first)].get(g, 0.0)
            last = (sum(prof[(label, args.threads[-1])].values()) if g == "all kernels"
                    else prof[(label, args.threads[-1])].get(g, 0.0))
            row.append(f"{base / last:.2f}x" if last > 0 else "–")
        rows.append(row)
    top = sorted(ops[first], key=lambda k: -ops[first][k])[:12]
    op_rows = [[op, group_of(op)] + [f"{ops[t].get(op, 0) / 1000:.1f}" for t in args.threads]
               + [f"{ops[first][op] / max(ops[args.threads[-1]].get(op, 0), 1e-9):.2f}x"] for op in top]
    resolutions = sorted({r for c in by_res.values() for r in c}, key=lambda r: -int(r.split("×")[0])
                         if r != "?" else 0)
    res_rows = []
    for r in resolutions:
        row = [r]
        for label in ("FP32", "INT8"):
            row += [f"{by_res[(label, t)].get(r, 0) / 1000:.1f}" for t in args.threads]
            last_us = by_res[(label, args.threads[-1])].get(r, 0)
            row.append(f"{by_res[(label, first)].get(r, 0) / last_us:.2f}x" if last_us > 0 else "–")
        res_rows.append(row)
    medians = {t: option_medians(int8_path, feeds, t, args.option_repeats) for t in args.threads}
    load.append(os.getloadavg()[0])
    opt_rows = []
    for k in medians[first]:
        opt_rows.append([k] + [f"{medians[t][k]:.1f} ({medians[t][k] / medians[t][next(iter(medians[t]))]:.2f})"
                               for t in args.threads])
    tl = ", ".join(str(t) for t in args.threads)
    last = args.threads[-1]
    body = "\n".join([
        *section_head(f"ONNX Runtime scaling: {work.root.name}, batch {args.batch}, threads {tl} (profiler per "
                      "op-type group)", command,
                      f"1-minute load average {min(load):.1f}-{max(load):.1f} during the run; "),
        f"- Kernel ms per UNet call by op-type group (ONNX Runtime profiler, sum of node kernel times, {args.runs} "
        f"runs after a warm-up), FP32 `model.onnx` and our INT8 `onnxruntime`-target graph; speed-up = time at "
        f"{first} thread(s) / time at {last}.",
        "",
        markdown_table(["group"] + [f"FP32 ms @{t}" for t in args.threads] + [f"FP32 {first}→{last}"]
                       + [f"INT8 ms @{t}" for t in args.threads] + [f"INT8 {first}→{last}"], rows),
        "",
        "INT8 op types (the largest at the first thread count):",
        "",
        markdown_table(["op type", "group"] + [f"ms @{t}" for t in args.threads] + [f"{first}→{last}"], op_rows),
        "",
        "Convolution kernels by output resolution (ms per UNet call; FP32: Conv/NCHWc Conv, INT8: QLinearConv and "
        "any float Conv):",
        "",
        markdown_table(["output H×W"] + [f"FP32 ms @{t}" for t in args.threads] + [f"FP32 {first}→{last}"]
                       + [f"INT8 ms @{t}" for t in args.threads] + [f"INT8 {first}→{last}"], res_rows),
        "",
        f"Session options on the INT8 model (median ms per UNet call over {args.option_repeats} interleaved rounds; "
        "in brackets: this option's time / the default's at the same thread count, below 1 = faster):",
        "",
        markdown_table(["session option"] + [f"{t} thread(s)" for t in args.threads], opt_rows),
    ])
    write_section(f"ort-scaling-{work.root.name}", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
