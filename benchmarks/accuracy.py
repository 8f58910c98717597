"""Accuracy benchmark: INT8 (and W4A8) images against FP32 images on the reference model.

    python -m benchmarks.accuracy [--steps 50 100] [--num 64] [--samples 256]

Every row samples the same 64 initial noises (image i uses seed i, as ``python -m tools sample --seed i --num 1``)
with DDIM; metrics compare the quantized model's final images with the FP32 model's (both post-processed as
diffusers' pipelines do): PSNR (dB, one MSE over all images), SSIM, the Fréchet distance of the in-repo digit
classifier's features (FD-digits), and how often the classifier's label agrees with the FP32 image's label.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from calibrators.aggregation import AggregationConfig
from calibrators.calibrate import CalibrateConfig, collect_stats, generate_samples
from calibrators.range_estimation import ranges_from_stats
from quantization.qdq_rules import calibration_tensors
from calibrators.estimators import EstimatorConfig
from calibrators.ranges import TensorRanges
from calibrators.sources import SourceConfig
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from pipelines.runner import sample_images, seeded_noise
from pipelines.schedulers import make_scheduler
from engines.session import Session
from pipelines.trajectory_health import ABS_LIMIT, TrajectoryHealth
from quantization.quantize import quantize
from quantization.weight_memory import weight_memory
from quantization.qdq_policy import QDQPolicy
from quantization.timestep_groups import quantize_groups, save_grouped
from engines.backends import onnx_session
from validation.digit_classifier import DigitFeatures
from validation.image_metrics import frechet_distance, psnr, ssim

CLASSIFIER = REPO / "models" / "digit-classifier"


@dataclass(frozen=True)
class Variant:
    """One row: calibration method, shortcut mode, weight bits, target; or ONNX Runtime's quantize_static."""

    label: str
    method: str
    shortcut: str = "split"
    weight_bits: int = 8
    target: str = "onnxruntime"
    ort_static: str | None = None  # None, "default" (all ops), or "conv-matmul-gemm"
    rounding: str = ""  # weight rounding ("" = the policy default: nearest for W8, mse for W4)
    int4_scope: str = "all"
    groups: int = 0  # > 0: quantize --timestep-groups K (K graphs, each step routed to its group's graph)
    reduce_range: str = ""  # quantize --reduce-range: "all" (8-bit weights in [-64, 64]) or "pairs"
    format: str = "int8"  # quantize --format: int8 or fp8 (E4M3; tensorrt target)
    attention: bool = False  # quantize --attention-matmul (the ranges need the attention tensors)


#: The time-step-group rows (issue 16): the global graph against K group graphs from the same calibration and our
#: uniform row, measured in one run. (ModelOpt's rows: benchmarks/peers.py, the real package.)
GROUPS = [
    Variant("ndtc + split", "ndtc"),
    Variant("ndtc + split, 1 step group", "ndtc", groups=1),
    Variant("ndtc + split, 2 step groups", "ndtc", groups=2),
    Variant("ndtc + split, 4 step groups", "ndtc", groups=4),
    Variant("uniform + split", "uniform"),
    Variant("uniform + split, 4 step groups", "uniform", groups=4),
]


W8 = [
    Variant("ndtc + split", "ndtc"),
    Variant("uniform + split", "uniform"),
    Variant("ndtc + shared", "ndtc", shortcut="shared"),
    Variant("ndtc + float", "ndtc", shortcut="float"),
    Variant("noise + split (naive PTQ)", "noise"),
    Variant("ndtc + split, TensorRT graph", "ndtc", target="tensorrt"),
    Variant("ndtc + split, AdaRound", "ndtc", rounding="adaround"),
    Variant("ORT quantize_static (all ops, noise)", "noise", ort_static="default"),
    Variant("ORT quantize_static (Conv/MatMul/Gemm, sym., uniform)", "uniform", ort_static="conv-matmul-gemm"),
]
W4 = [
    Variant("W4A8 ndtc + split", "ndtc", weight_bits=4),
    Variant("W4A8 ndtc + split, AdaRound", "ndtc", weight_bits=4, rounding="adaround"),
    Variant("INT8 conv + INT4 linear, ndtc", "ndtc", weight_bits=4, int4_scope="linear"),
    Variant("INT8 conv + INT4 linear, ndtc, AdaRound", "ndtc", weight_bits=4, int4_scope="linear",
            rounding="adaround"),
    Variant("W4A8 uniform + split", "uniform", weight_bits=4),
    Variant("W4A8 noise + split", "noise", weight_bits=4),
    Variant("W4A8 ORT quantize_static (Conv/MatMul/Gemm, sym., uniform)", "uniform", weight_bits=4,
            ort_static="conv-matmul-gemm"),
]


def ensure_export(model_dir: Path, work: Path) -> WorkDir:
    """Export the reference model once into ``work``."""
    from tools.__main__ import main as cli

    wd = WorkDir(work)
    if not wd.export_json.is_file():
        assert cli(["export", "--model", str(model_dir), str(work), "--force"]) == 0
    return wd


@dataclass(frozen=True)
class Sampler:
    """DDIM ``steps`` with the model's scheduler config, ``clip_sample`` overridden unless None, and
    ``use_clipped_model_output`` passed to ``step`` unless None (diffusers' DDIMPipeline leaves it unset)."""

    steps: int
    clip_sample: bool | None = None
    clipped_eps: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.steps}" + (", clip off" if self.clip_sample is False else "") + (
            ", clipped eps" if self.clipped_eps else "")


def final_images(model: Path, info: dict, noise: np.ndarray, sampler: Sampler,  # type: ignore[type-arg]
                 health: list[TrajectoryHealth] | None = None,
                 open_session: Callable[[Path], Session] = onnx_session) -> np.ndarray:
    """Final images in [0, 1] from ``noise`` with ``sampler`` (the library's ``sample_images`` on the session
    ``open_session`` opens, default ONNX Runtime, routing each step to its group graph when ``model`` has them); the
    run's trajectory health is appended to ``health`` when given."""
    config = dict(info["scheduler"])
    if sampler.clip_sample is not None:
        config["clip_sample"] = sampler.clip_sample
    with open_session(model) as sess:  # onnx_session: group graphs beside ``model`` run each step on theirs
        run = sample_images(sess, make_scheduler("ddim", config), noise, sampler.steps, batch_size=64,
                            use_clipped_model_output=sampler.clipped_eps)
    if health is not None:
        health.append(run.health)
    return run.images


def fp16_weights(model: Path, out: Path) -> Path:
    """``model`` with every float initializer rounded to FP16 and back (computation stays FP32): a perturbation
    about 1000x smaller than INT8 rounding, to show how much the sampler itself amplifies any change."""
    from onnx import numpy_helper

    m = onnx.load(str(model))
    for init in m.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            a = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(a, init.name))
    onnx.save(m, str(out))
    return out


def variant_policy(v: Variant) -> QDQPolicy:
    """The Q/DQ policy of row ``v``."""
    return QDQPolicy(target=v.target, weight_bits=v.weight_bits, shortcut=v.shortcut, weight_rounding=v.rounding,
                     int4_scope=v.int4_scope, reduce_range=v.reduce_range, format=v.format,
                     attention_matmul=v.attention)


def benchmark_inputs(model: Path, work_dir: Path, num: int) -> tuple[WorkDir, dict, DigitFeatures, np.ndarray]:  # type: ignore[type-arg]
    """What every accuracy benchmark starts from: the exported work folder, its export info, the digit classifier's
    features, and x_T of seeds 0..num-1 (num×C×H×W)."""
    work = ensure_export(model, work_dir)
    info = work.load_export_info()
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    return work, info, DigitFeatures(CLASSIFIER), seeded_noise((c, h, w), range(num))


def build_variant(v: Variant, work: WorkDir, info: dict, ranges: dict[str, TensorRanges],  # type: ignore[type-arg]
                  samples_for: dict[str, list], out_dir: Path,  # type: ignore[type-arg]
                  rounding_seconds: dict[str, float]) -> Path:
    out = out_dir / (v.label.replace(" ", "_").replace("/", "-").replace(",", "").replace("(", "")
                     .replace(")", "").replace("+", "") + ".onnx")
    if v.ort_static:
        from benchmarks.ort_baseline import ort_quantize_static

        ops = None if v.ort_static == "default" else ["Conv", "MatMul", "Gemm"]
        ort_quantize_static(work.model, out, samples_for[v.method], op_types=ops,
                            symmetric_activations=v.ort_static != "default", weight_bits=v.weight_bits)
        return out
    policy = variant_policy(v)
    if v.groups:
        grouped = quantize_groups(onnx.load(str(work.model)), ranges[f"{v.method}@{v.groups}"], policy, v.groups)
        save_grouped(grouped, out, out.with_suffix(".quantize.json"))
        return out
    # AdaRound rows learn their rounding on the calibration samples
    qmodel, record = quantize(onnx.load(str(work.model)), ranges[v.method], policy, samples=samples_for[v.method],
                              scratch_dir=work.root, progress=False)
    if record.weight_rounding is not None:
        rounding_seconds[v.label] = record.weight_rounding["seconds_total"]
    onnx.save(qmodel, str(out))
    return out


def _initializers(path: Path) -> dict[str, tuple[int, tuple[int, ...], bytes]]:
    from onnx import numpy_helper

    return {t.name: (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
            for t in onnx.load(str(path)).graph.initializer}


def identical_rows(variants: list[Variant], models: dict[str, Path]) -> dict[str, str]:
    """Row label -> the earlier row whose graph it equals: a 1-group row's only graph against the global graph of
    the same calibration (same initializers, scales included; checked, not assumed)."""
    from engines.group_manifest import GroupManifest, manifest_path

    same: dict[str, str] = {}
    for v in variants:
        if v.groups != 1:
            continue
        manifest = GroupManifest.load(manifest_path(models[v.label]))
        base = next((b for b in variants if b.method == v.method and not b.groups and not b.ort_static
                     and (b.shortcut, b.target, b.weight_bits, b.rounding) == (v.shortcut, v.target, v.weight_bits,
                                                                              v.rounding)), None)
        if base is not None and _initializers(manifest.model_paths(models[v.label].parent)[0]) == \
                _initializers(models[base.label]):
            same[v.label] = base.label
    return same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", type=Path, default=REPO / "work" / "bench-digits")
    p.add_argument("--steps", type=int, nargs="+", default=[50, 100])
    p.add_argument("--no-clip-steps", type=int, nargs="*", default=[50, 100],
                   help="also sample with these step counts and the scheduler's clip_sample off")
    p.add_argument("--clipped-eps-steps", type=int, nargs="*", default=[50, 100],
                   help="also sample with these step counts, clip_sample as configured and use_clipped_model_output")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--samples", type=int, default=256, help="calibration samples per method")
    p.add_argument("--no-w4", action="store_true")
    p.add_argument("--rows", choices=["all", "groups"], default="all",
                   help="groups: only the time-step-group rows (docs/timestep-groups.md)")
    p.add_argument("--section", default=None, help="docs/benchmarks.md section (default: accuracy, or "
                   "accuracy-groups with --rows groups)")
    args = p.parse_args(argv)
    command = command_line("benchmarks.accuracy", argv)
    work, info, features, noise = benchmark_inputs(args.model, args.work, args.num)
    variants = GROUPS if args.rows == "groups" else W8 + ([] if args.no_w4 else W4)
    section = args.section or ("accuracy-groups" if args.rows == "groups" else "accuracy")
    ranges: dict[str, TensorRanges] = {}
    samples_for: dict[str, list] = {}  # type: ignore[type-arg]
    calib_seconds: dict[str, float] = {}
    sha = onnx_model_sha256(work.model)
    for method in sorted({v.method for v in variants}):
        # one statistics collection per method; the global amax and every K's group amaxes are estimated from it
        cfg = CalibrateConfig(SourceConfig(method=method, samples=args.samples, steps=50),
                              EstimatorConfig("mse"), AggregationConfig("groups", groups=4))
        start = time.perf_counter()
        stats, _, params = collect_stats(work, cfg, calibration_tensors, progress=False)
        for k in sorted({4} | {v.groups for v in variants if v.method == method and v.groups}):
            ranges[f"{method}@{k}"] = ranges_from_stats(
                stats, cfg.estimator, AggregationConfig("groups", groups=k), model_sha256=sha, calibration=method,
                calibration_params=params, seed=cfg.source.seed)
        calib_seconds[method] = time.perf_counter() - start
        del stats
        ranges[method] = ranges[f"{method}@4"]  # the global rows: the global amax (the same for every K)
        samples_for[method] = generate_samples(work, info, cfg, sha, progress=False)
    out_dir = work.root / "bench-models"
    out_dir.mkdir(exist_ok=True)
    rounding_seconds: dict[str, float] = {}
    models = {v.label: build_variant(v, work, info, ranges, samples_for, out_dir, rounding_seconds)
              for v in variants}
    if args.rows == "all":
        floor = Variant("FP32 with FP16-rounded weights (perturbation floor)", "-", weight_bits=32)
        models[floor.label] = fp16_weights(work.model, out_dir / "fp16_weights.onnx")
        variants = [floor, *variants]
    memory = {label: weight_memory(onnx.load(str(path))).total / 2**20 for label, path in models.items()}
    same_as = identical_rows(variants, models)
    rows = []
    results = {}
    samplers = ([Sampler(steps) for steps in args.steps] + [Sampler(steps, clip_sample=False) for steps in
                args.no_clip_steps] + [Sampler(steps, clipped_eps=True) for steps in args.clipped_eps_steps])
    samplers.sort(key=lambda s: s.steps)  # every 50-step mode first: a run cut short still covers them
    load_start = os.getloadavg()[0]
    ref_health: dict[str, dict] = {}  # type: ignore[type-arg]
    for sampler in samplers:
        health: list[TrajectoryHealth] = []
        ref = final_images(work.model, info, noise, sampler, health)
        ref_health[sampler.label] = health[0].summary()
        ref_feat = features.features(ref)
        ref_label = features.predict(ref)
        for v in variants:
            if v.label in same_as:  # the same graph as an earlier row (checked): its numbers, not sampled again
                r = dict(results[f"{same_as[v.label]} @ {sampler.label}"])
                results[f"{v.label} @ {sampler.label}"] = r
                rows.append([v.label + f" (= {same_as[v.label]}: identical graph)", v.weight_bits, sampler.label,
                             f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['fd']:.3f}", f"{100 * r['agree']:.0f}%",
                             r["off_range"], f"{memory[v.label]:.3f}"])
                continue
            img = final_images(models[v.label], info, noise, sampler, health)
            r = {
                "psnr": psnr(img, ref), "ssim": ssim(img, ref),
                "fd": frechet_distance(features.features(img), ref_feat),
                "agree": float(np.mean(features.predict(img) == ref_label)),
                "off_range": health[-1].summary()["images_off_distribution"],
            }
            results[f"{v.label} @ {sampler.label}"] = r
            r["weight_mib"] = memory[v.label]
            rows.append([v.label, v.weight_bits, sampler.label, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}",
                         f"{r['fd']:.3f}", f"{100 * r['agree']:.0f}%", r["off_range"], f"{memory[v.label]:.3f}"])
            print(f"{sampler.label:>18s} steps  {v.label:60s} PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.4f}  "
                  f"FD {r['fd']:.3f}  agree {100 * r['agree']:.0f}%  off-range {r['off_range']}", flush=True)
        # the section is rewritten after every sampler, so a run cut short leaves the samplers it finished
        (work.root / "accuracy.json").write_text(json.dumps(results, indent=2))
        fp32_mib = weight_memory(onnx.load(str(work.model))).total / 2**20
        body = "\n".join([
            *section_head(f"Accuracy: quantized against FP32 images ({args.num} seeds, DDIM)", command,
                          f"1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
                          "end; "),
            f"- Model: `{args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model}`; "
            f"calibration: {args.samples} samples per method (DDIM 50-step trajectories), estimator mse, "
            "4 step groups recorded (rows with K step groups: calibrated with K groups, `quantize --timestep-groups K`, "
            "each step run on its group's graph); our rows use the defaults (`onnxruntime` target: real INT8 kernels; "
            "conv_in and "
            "conv_out float) unless marked; ORT's rows quantize every matching op.",
            "- Calibration wall time per method (s): "
            + ", ".join(f"{m} {s:.1f}" for m, s in sorted(calib_seconds.items())),
            "- AdaRound (default settings: 128 samples, 16 rows each, 1000 steps per layer) wall time per variant (s): "
            + (", ".join(f"{k} {t:.1f}" for k, t in rounding_seconds.items()) or "none"),
            f"- Weight memory: MiB of initializers of each model (the FP32 model: {fp32_mib:.3f} MiB); W4A8 rows "
            "store convolution weights as 4-bit values in INT8 containers and MatMul/Gemm weights as blocked INT4 "
            "(32 per scale, weight-only); `INT8 conv + INT4 linear` = `--weight-bits 4 --int4-scope linear`.",
            "- Steps: DDIM with the model's scheduler config (`clip_sample` true: the predicted x0 is clipped to "
            "[-1, 1] at every step, as diffusers' DDIMPipeline does for this config, which steps on with the UNet's "
            "eps: `use_clipped_model_output` unset); `clip off`: the same with `clip_sample` false; `clipped eps`: "
            "`clip_sample` true and `use_clipped_model_output=True` (eps re-derived from the clipped x0, "
            "`sample --use-clipped-model-output`). The FP32 reference is sampled the same way in each case. The "
            "perturbation-floor row rounds the FP32 weights to FP16 (about 1000x smaller than INT8 rounding) and shows "
            "how much the sampler amplifies any change of the UNet.",
            "- off-range: trajectories (of " + str(args.num) + ") whose UNet input left the training range "
            f"(|x_t| > {ABS_LIMIT:g}; pipelines/trajectory_health.py). The FP32 reference: "
            + "; ".join(f"{label}: {h['images_off_distribution']} (peak |x_t| {h['peak_abs']:.1f})"
                        for label, h in ref_health.items())
            + ". An off-range trajectory runs the UNet outside what it was trained on, in FP32 too (its digit comes "
            "out blotched); a row whose FP32 reference has off-range trajectories compares against those images.",
            "- PSNR: dB over all images against the FP32 images from the same noise; FD-digits: Fréchet distance of "
            "the in-repo digit classifier's 32-d features (validation/digit_classifier.py); agree: same predicted digit.",
            "",
            markdown_table(["variant", "W bits", "steps", "PSNR dB", "SSIM", "FD-digits", "agree", "off-range",
                            "weight MiB"], rows),
        ])
        write_section(section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
