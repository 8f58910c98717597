"""``python -m tools validate WORK``: the quantized model against FP32 along the denoising schedule (Polygraphy
Comparator) and on final images; exit 1 when a threshold is violated, so CI can gate on it."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from common.atomic import write_json
from common.errors import CheckFailed, UserError
from common.images import save_grid
from common.workdir import WorkDir
from engines.backends import describe_groups, fp8_backend, resolve_backend
from engines.cpu_backend import CPU_NAMES, choose_cpu_backend, cpu_session, openvino_model, saturation_warning
from engines.openvino_session import CACHE_FOLDER
from pipelines.runner import clipped_output_hint
from pipelines.schedulers import make_scheduler
from engines.session import ManagedSession
from pipelines.trajectory_health import TrajectoryHealth
from tools.cli_parser import (
    CliParser,
    add_backend,
    add_clipped_model_output,
    add_trajectory_args,
    check_backend,
    check_trajectory_args,
)
from pipelines.text2image import latent_decoder
from tools.cli_inputs import add_conditioning_args, conditioning_from_args
from validation.validate import (
    Thresholds,
    ValidateConfig,
    check_work,
    validate_file,
    compare_steps,
    final_images,
    image_metrics,
    thresholds_json,
    trajectory_inputs,
    violations,
)

REPO = Path(__file__).resolve().parents[1]
VALIDATE_BACKENDS = ("auto", "ort", "openvino", "trt")  # the steps on an engine or a CPU backend; no ort-gpu


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools validate", description=__doc__)
    p.add_argument("work", type=Path)
    g = p.add_argument_group("what to compare")
    g.add_argument("--precision", default="int8", choices=["int8", "fp8"],
                   help="fp8: the FP8 graph (quantize --format fp8); simulated on ONNX Runtime on the CPU")
    add_backend(g, "runs the quantized model (FP32 reference: ONNX Runtime)")
    add_trajectory_args(g, "time steps compared, spread over the schedule")
    g.add_argument("--images", type=int, default=16, help="seeds for the final-image metrics (0: skip)")
    add_clipped_model_output(g)
    g.add_argument("--verbose", action="store_true", help="show Polygraphy's own comparison log")
    add_conditioning_args(g)
    g.add_argument("--inception-onnx", type=Path, help="local ONNX Inception feature extractor for FID")
    g.add_argument("--classifier", type=Path, default=REPO / "models" / "digit-classifier",
                   help="digit classifier folder (FD-digits for 1×32×32 models)")
    t = p.add_argument_group("thresholds (exit 1 when violated; a negative value disables a gate)")
    t.add_argument("--min-cosine", type=float, default=0.95,
                   help="per-step cosine of the UNet output (near t=0 the ε-prediction is hardest; 0.95 holds there)")
    t.add_argument("--min-step-psnr", type=float, default=-1)
    t.add_argument("--min-snr", type=float, default=10.0, help="per-step SNR in dB")
    t.add_argument("--max-abs-error", type=float, default=-1)
    t.add_argument("--min-psnr", type=float, default=25.0, help="final-image PSNR in dB")
    t.add_argument("--min-ssim", type=float, default=-1)
    args = p.parse_args(argv)
    check_trajectory_args(args)
    check_backend(args.backend, VALIDATE_BACKENDS, "validate")
    if args.inception_onnx is not None and not args.inception_onnx.is_file():
        raise UserError(f"--inception-onnx file '{args.inception_onnx}' does not exist")
    return args


def _gate(value: float) -> float | None:
    return None if value < 0 else value


def main(argv: list[str]) -> int:
    args = parse(argv)
    work = WorkDir(args.work)
    info, qpath = check_work(work, args.precision)
    th = Thresholds(min_cosine=_gate(args.min_cosine), min_step_psnr=_gate(args.min_step_psnr),
                    min_snr=_gate(args.min_snr), max_abs_error=_gate(args.max_abs_error),
                    min_image_psnr=_gate(args.min_psnr), min_ssim=_gate(args.min_ssim))
    cfg = ValidateConfig(steps=args.steps, points=args.points, num=args.num, images=args.images, seed=args.seed,
                         scheduler=args.scheduler, precision=args.precision, thresholds=th,
                         clipped_model_output=args.use_clipped_model_output)
    cond = conditioning_from_args(args, info, args.seed, work_root=work.root)
    backend = resolve_backend(args.backend)
    plan = None
    if backend == "trt":
        from engines.tensorrt.plan import plan_path

        plan = plan_path(work.root, args.precision)
        if not plan.is_file():
            backend = choose_cpu_backend()[0]
            print(f"no TensorRT engine {plan.name}: validating the Q/DQ model on {CPU_NAMES[backend]} instead")
            plan = None
    if args.precision == "fp8" and plan is None:
        backend, note = fp8_backend(args.backend, backend)
        print(note)
    openvino_cache = work.root / CACHE_FOLDER if backend == "openvino" else None
    image_backend = "openvino" if openvino_cache is not None else "ort"  # final images: the CPU backend
    if backend == "openvino":
        qpath = openvino_model(work, args.precision)
        warning = saturation_warning(work, qpath)
        if warning:
            print(warning)
    print(f"validating {qpath.name} on {'TensorRT' if plan is not None else CPU_NAMES[backend]}")
    start = time.perf_counter()
    report = work.report_dir
    feeds = trajectory_inputs(work.model, info, cfg, cond)
    inputs_json = report / "validate_inputs.json"
    comparison = compare_steps(work.model, qpath, feeds, inputs_json, plan, args.verbose, openvino_cache)
    steps, polygraphy_ok = comparison.metrics, comparison.polygraphy_passed
    grouped = comparison.grouped
    for s, graph in zip(steps, comparison.graphs, strict=True):
        print(f"  t={s.t:4d}  cosine {s.cosine:.5f}  PSNR {s.psnr_db:6.2f} dB  SNR {s.snr_db:6.2f} dB  "
              f"mean|e| {s.mean_abs:.4g}  max|e| {s.max_abs:.4g}" + (f"  ({graph})" if grouped else ""))
    images: dict[str, float] = {}
    if cfg.images > 0:
        health: list[TrajectoryHealth] = []
        def quantized_session(path: Path) -> ManagedSession:
            """cpu_session: each step on its time-step group's graph when quantize --timestep-groups wrote them."""
            return cpu_session(path, image_backend, cache_dir=openvino_cache)

        ref, img = final_images(work.model, qpath, info, cfg, cond, health, quantized_session,
                                latent_decoder(work.root, info))
        images = image_metrics(ref, img, args.classifier, args.inception_onnx)
        images["fp32_off_range"], images["quantized_off_range"] = (
            float(h.summary()["images_off_distribution"]) for h in health)  # type: ignore[arg-type]
        hint = clipped_output_hint(make_scheduler(cfg.scheduler, info["scheduler"]), cfg.clipped_model_output)
        for name, h in zip(("FP32", args.precision.upper()), health, strict=True):
            if (warning := h.warning(hint)) is not None:
                print(f"  {name} {warning}")
        save_grid(ref, report / "fp32.png")
        save_grid(img, report / f"{args.precision}.png")
        extra = "".join(f", {k} {images[k]:.3f}" for k in ("fd_digits", "fid") if k in images)
        print(f"  final images ({cfg.images} seeds): PSNR {images['psnr']:.2f} dB, SSIM {images['ssim']:.4f}{extra}")
    bad = violations(steps, images or {"psnr": np.inf, "ssim": 1.0}, th)
    import onnx
    import onnxruntime
    import polygraphy

    out = report / validate_file(args.precision)
    write_json(out, {
        "schema_version": 1,
        "command": "python -m tools validate " + " ".join(argv),
        # the per-step comparison runs the engine when there is one; the final images come from the CPU backend
        "backend": {"steps": (f"TensorRT engine {plan.name}" if plan is not None else f"{CPU_NAMES[backend]} (CPU)")
                    + (f", time-step group {'engines' if plan is not None else 'graphs'} (each step on its group's)"
                       if grouped else ""),
                    "final_images": f"{CPU_NAMES[image_backend]} (CPU), the Q/DQ model{describe_groups(qpath)}"},
        "quantized_model": qpath.name,
        "settings": {"steps": cfg.steps, "points": cfg.points, "num": cfg.num, "images": cfg.images,
                     "seed": cfg.seed, "scheduler": cfg.scheduler, "precision": cfg.precision,
                     "use_clipped_model_output": cfg.clipped_model_output},
        # each compared step with the quantized graph (or TensorRT engine) that served it
        "steps": [{**s.to_json(), "graph": graph} for s, graph in zip(steps, comparison.graphs, strict=True)],
        "polygraphy_simple_compare_passed": polygraphy_ok,
        "images": images,
        "grids": {"fp32": "fp32.png", "int8": f"{args.precision}.png"} if images else {},
        "inputs": inputs_json.name,
        "thresholds": thresholds_json(th),
        "violations": bad,
        "passed": not bad,
        "seconds": round(time.perf_counter() - start, 1),
        "versions": {"python": platform.python_version(), "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "polygraphy": polygraphy.__version__},
    })
    print(f"wrote {out}; inputs for `polygraphy run {work.model} --onnxrt --load-inputs "
          f"{inputs_json}`")
    sys.stdout.flush()
    if bad:
        raise CheckFailed(f"{len(bad)} threshold(s) violated: " + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""))
    print("validation passed")
    return 0
