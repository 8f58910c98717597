"""Accuracy across CPU backends: the same Q/DQ graphs run by ONNX Runtime and by OpenVINO, images against FP32.

    python -m benchmarks.accuracy_backends [--steps 50 100] [--num 64] [--samples 256]

The accuracy benchmark's settings (benchmarks/accuracy.py: its calibration, its ``ndtc + split`` variants for the
``onnxruntime`` and ``tensorrt`` targets, image i from seed i, DDIM with ``clip_sample`` as configured and
``use_clipped_model_output=True``), measured in one run. The FP32 reference is ONNX Runtime FP32. Besides each graph as
quantized, the same variant quantized with ``--reduce-range`` (8-bit weights in [-64, 64], ONNX Runtime's
``reduce_range``) shows whether a gap comes from the int16 saturation of u8×s8 products on CPUs without VNNI (AVX2's
``vpmaddubsw`` adds two products into a saturating int16: with full-range INT8 weights the sum can exceed 32767;
VNNI's ``vpdpbusd`` adds into int32 and does not saturate), and gives both runtimes one graph each computes exactly;
``--reduce-range pairs`` does the same at less cost in precision (convolutions keep 8-bit codes whose input-channel
pairs cannot saturate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.accuracy import W8, Sampler, benchmark_inputs, build_variant, final_images
from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, calibrate, generate_samples
from calibrators.estimators import EstimatorConfig
from calibrators.sources import SourceConfig
from quantization.qdq_rules import calibration_tensors
from common.hashing import onnx_model_sha256
from engines.cpu_backend import cpu_vnni_flags
from engines.openvino_session import CACHE_FOLDER, OpenVinoSession
from engines.ort_session import OrtSession
from engines.session import Session
from pipelines.trajectory_health import TrajectoryHealth
from validation.image_metrics import frechet_distance, psnr, psnr_per_image, ssim

TARGETS = {"onnxruntime": "ndtc + split", "tensorrt": "ndtc + split, TensorRT graph"}
#: graph-name suffix -> ``quantize --reduce-range`` mode ("" = full-range 8-bit weights)
WEIGHT_FORMS = {"": "", ", reduce-range": "all", ", reduce-range pairs": "pairs"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", type=Path, default=REPO / "work" / "bench-digits")
    p.add_argument("--steps", type=int, nargs="+", default=[50, 100], help="DDIM steps, clipped eps")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--samples", type=int, default=256, help="calibration samples")
    p.add_argument("--section", default="accuracy-backends")
    p.add_argument("--graphs", nargs="+", default=None, metavar="GRAPH",
                   help="measure only these graphs (onnxruntime, tensorrt, 'onnxruntime, reduce-range', "
                        "'tensorrt, reduce-range pairs', ...) on both backends")
    args = p.parse_args(argv)
    command = command_line("benchmarks.accuracy_backends", argv)
    work, info, features, noise = benchmark_inputs(args.model, args.work, args.num)
    # the accuracy benchmark's calibration of its ndtc rows
    cfg = CalibrateConfig(SourceConfig(method="ndtc", samples=args.samples, steps=50),
                          EstimatorConfig("mse"), AggregationConfig("groups", groups=4))
    start = time.perf_counter()
    ranges = {"ndtc": calibrate(work, cfg, calibration_tensors, progress=False)}
    calib_seconds = time.perf_counter() - start
    samples_for = {"ndtc": generate_samples(work, info, cfg, onnx_model_sha256(work.model), progress=False)}
    out_dir = work.root / f"bench-models-{args.section}"  # its own folder: two sections may run at once
    out_dir.mkdir(exist_ok=True)
    variants = {v.label: v for v in W8}
    graphs: dict[str, Path] = {}
    for target, label in TARGETS.items():
        for suffix, mode in WEIGHT_FORMS.items():
            v = replace(variants[label], label=label + suffix, reduce_range=mode)
            graphs[target + suffix] = build_variant(v, work, info, ranges, samples_for, out_dir, {})
    cache = work.root / CACHE_FOLDER
    backends: dict[str, Callable[[Path], Session]] = {
        "ONNX Runtime": OrtSession,
        "OpenVINO": lambda path: OpenVinoSession(path, cache_dir=cache),
    }
    # most important first (the section is rewritten after every row, so an interrupted run keeps what it measured)
    runs = [(target + suffix, backend) for suffix in WEIGHT_FORMS for target in TARGETS
            for backend in ("ONNX Runtime", "OpenVINO")]
    if args.graphs:
        unknown = set(args.graphs) - {g for g, _ in runs}
        if unknown:
            raise SystemExit(f"--graphs: unknown {sorted(unknown)}; known: {sorted({g for g, _ in runs})}")
        runs = [(g, b) for g, b in runs if g in args.graphs]
    rows: list[list[object]] = []
    results: dict[str, dict[str, float]] = {}
    ref_off: dict[str, int] = {}
    for steps in args.steps:
        sampler = Sampler(steps, clipped_eps=True)
        health: list[TrajectoryHealth] = []
        ref = final_images(work.model, info, noise, sampler, health)
        ref_off[sampler.label] = int(health[0].summary()["images_off_distribution"])
        ref_feat, ref_label = features.features(ref), features.predict(ref)
        for graph, backend in runs:
            img = final_images(graphs[graph], info, noise, sampler, health, backends[backend])
            per_image = psnr_per_image(img, ref)
            r = {"psnr": psnr(img, ref), "median_image_psnr": float(np.median(per_image)),
                 "images_below_30db": int(np.sum(per_image < 30.0)), "ssim": ssim(img, ref),
                 "fd": frechet_distance(features.features(img), ref_feat),
                 "agree": float(np.mean(features.predict(img) == ref_label)),
                 "off_range": int(health[-1].summary()["images_off_distribution"])}
            results[f"{graph} on {backend} @ {sampler.label}"] = r
            rows.append([graph, backend, sampler.label, f"{r['psnr']:.2f}", f"{r['median_image_psnr']:.2f}",
                         r["images_below_30db"], f"{r['ssim']:.4f}", f"{r['fd']:.3f}", f"{100 * r['agree']:.0f}%",
                         r["off_range"]])
            print(f"{sampler.label:>16s}  {graph:32s} {backend:12s} PSNR {r['psnr']:6.2f} dB  median image "
                  f"{r['median_image_psnr']:6.2f} dB  < 30 dB {r['images_below_30db']}  SSIM {r['ssim']:.4f}  "
                  f"FD {r['fd']:.3f}  agree {100 * r['agree']:.0f}%  off-range {r['off_range']}", flush=True)
            (work.root / f"{args.section}.json").write_text(json.dumps(results, indent=2))
            write_section(args.section, section(args, command, calib_seconds, ref_off, rows))
    return 0


def section(args: argparse.Namespace, command: str, calib_seconds: float, ref_off: dict[str, int],
            rows: list[list[object]]) -> str:
    """The docs/benchmarks.md section of the rows measured so far."""
    flags = cpu_vnni_flags()
    import onnxruntime
    import openvino

    return "\n".join([
        *section_head(f"Accuracy across CPU backends: the same Q/DQ graphs on ONNX Runtime and OpenVINO "
                      f"({args.num} seeds, DDIM, clipped eps)", command),
        f"- CPU INT8 instructions here: {', '.join(flags) if flags else 'no VNNI/AMX (AVX2 only)'}; "
        f"ONNX Runtime {onnxruntime.__version__}, OpenVINO {openvino.__version__.split('-')[0]} "
        "(`INFERENCE_PRECISION_HINT` f32).",
        f"- Model `{args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model}`; the accuracy "
        f"benchmark's calibration (ndtc, {args.samples} samples, mse, 4 step groups; {calib_seconds:.0f} s) and its "
        "`ndtc + split` variants for both targets; FP32 reference: ONNX Runtime FP32, sampled the same way "
        "(DDIM, `clip_sample` true, `use_clipped_model_output=True`); off-range trajectories of the FP32 "
        "reference: " + "; ".join(f"{k}: {v}" for k, v in ref_off.items()) + ".",
        "- reduce-range: the same variant quantized with `--reduce-range` (8-bit weights in [-64, 64]: no int16 "
        "saturation of u8×s8 pair sums on CPUs without VNNI); reduce-range pairs: with `--reduce-range pairs` "
        "(8-bit convolution codes on per-channel scales raised until every input-channel pair sums to at most 128 "
        "in magnitude, MatMul/Gemm weights in [-64, 64]). ONNX Runtime fuses none of the `tensorrt` "
        "graph's convolutions (no output Q; its optimised graph has Conv and no QLinearConv): it runs that graph in "
        "float with Q/DQ, i.e. the graph's exact meaning.",
        "",
        "- PSNR dB: over all images at once (one MSE), so one or two trajectories that end on another digit "
        "dominate it; median image PSNR dB and images < 30 dB show the typical image and those outliers.",
        "",
        markdown_table(["graph (target)", "backend", "steps", "PSNR dB", "median image PSNR dB", "images < 30 dB",
                        "SSIM", "FD-digits", "agree", "off-range"], rows),
    ])


if __name__ == "__main__":
    sys.exit(main())
