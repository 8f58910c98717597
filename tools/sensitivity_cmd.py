"""``python -m tools sensitivity WORK``: rank the quantized layers by their contribution to the UNet output error
(one layer quantized at a time, on FP32-trajectory inputs) -> WORK/report/sensitivity.json."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from calibrators.ranges import TensorRanges
from common.errors import UserError
from common.hashing import onnx_model_sha256, sha256_files
from common.workdir import WorkDir
from pipelines.conditioning import Conditioning
from engines.backends import fp8_backend
from pipelines.text2image import latent_decoder
from tools.cli_inputs import add_conditioning_args, conditioning_from_args
from engines.ort_session import OrtSession
from pipelines.runner import DenoiseRunner
from pipelines.schedulers import make_scheduler
from pipelines.families.registry import family_of
from tools.quantize_cmd import DEFAULT_SHORTCUT
from quantization.fp8 import max_ranges
from quantization.qdq_policy import QDQPolicy
from quantization.record import QuantizeRecord
from tools.cli_parser import (
    CliParser,
    add_backend,
    add_clipped_model_output,
    add_trajectory_args,
    check_trajectory_args,
    cpu_backend_arg,
)
from validation.sensitivity import METRICS, ErrorProbe, ImageProbe, SensitivityConfig, StepProbe, rank_layers
from validation.sensitivity_file import FILE_NAME, SensitivityResult, sensitivity_file
from validation.trajectory_inputs import spread_steps, trajectory_feeds

SHOWN = 10
GUIDANCE = 7.5  # classifier-free guidance of conditional models, as in sampling


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools sensitivity", description=__doc__)
    p.add_argument("work", type=Path)
    add_trajectory_args(p, "compared steps, spread over the schedule (--metric step)")
    p.add_argument("--metric", default="step", choices=list(METRICS),
                   help="step: UNet output at --points trajectory steps (fast); image: final images of the whole "
                        "--steps loop from --num seeds (slower, follows error accumulation)")
    add_clipped_model_output(p)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    # default ort, not auto: ONNX Runtime's CPU provider computes Q/DQ the same way on every CPU, so a work folder
    # ranks its layers the same on any machine (auto would pick OpenVINO on VNNI/AMX CPUs only), and it loads each of
    # the hundreds of single-layer models from bytes where OpenVINO compiles every one
    add_backend(p, "CPU backend that runs the single-layer models; default ort: the same ranking on every CPU",
                default="ort")
    add_conditioning_args(p.add_argument_group("conditioning (conditional models)"), GUIDANCE)
    p.add_argument("--precision", default="int8", choices=["int8", "fp8"],
                   help="rank the layers of the INT8 or the FP8 graph (fp8: simulated on ONNX Runtime)")
    p.add_argument("--out", type=Path, help=f"ranking file (default WORK/report/{FILE_NAME}, or "
                                            f"{sensitivity_file('fp8')} with --precision fp8)")
    args = p.parse_args(argv)
    if args.out is not None and args.out.suffix != ".json":
        raise UserError(f"--out '{args.out}' must end in .json")
    check_trajectory_args(args, points=args.metric == "step")
    args.backend = cpu_backend_arg(args.backend, "sensitivity")
    return args


def recorded_policy(work: WorkDir, precision: str = "int8") -> QDQPolicy:
    """The policy of the work folder's Q/DQ model of ``precision`` (its quantize record) without the layers a previous
    ``--keep-float N`` kept float; when nothing was quantized yet the default ONNX Runtime policy (int8) or the
    default FP8 one (tensorrt target), with the family's float-kept layers."""
    keep = family_of(work.load_export_info()).keep_float
    default = (QDQPolicy(target="tensorrt", format="fp8", exclude=keep, shortcut=DEFAULT_SHORTCUT) if precision == "fp8"
               else QDQPolicy(target="onnxruntime", exclude=keep, shortcut=DEFAULT_SHORTCUT))
    if precision == "fp8":
        path = work.quantize_record(work.fp8_model)
    elif not work.int8_models():
        return default
    else:
        path = work.quantize_record(work.model_for("int8"))
    if not path.is_file():
        return default
    record = QuantizeRecord.load(path)
    chosen = set(record.kept_float_by_sensitivity)
    return replace(record.policy, keep_float=tuple(n for n in record.policy.keep_float if n not in chosen))


def make_probe(model_path: Path, info: dict[str, Any], cfg: SensitivityConfig,
               cond: Conditioning | None = None) -> tuple[ErrorProbe, dict[str, Any]]:
    """The error probe for ``cfg.metric`` and the settings recorded with the ranking."""
    # cond: from the one conditioning path (tools/cli_inputs.py); None here is an unconditional UNet
    settings: dict[str, Any] = {"metric": cfg.metric, "steps": cfg.steps, "num": cfg.num, "seed": cfg.seed,
                                "scheduler": cfg.scheduler, "use_clipped_model_output": cfg.clipped_model_output}
    if cfg.metric == "image":
        c, h, w = info["inputs"]["sample"]["shape"][1:]
        scheduler = make_scheduler(cfg.scheduler, info["scheduler"])
        noise = DenoiseRunner(OrtSession(model_path), scheduler).initial_noise((cfg.num, c, h, w), cfg.seed)  # lazy
        settings["what"] = f"final-image MSE after {cfg.steps} {cfg.scheduler} steps from {cfg.num} seeds"
        return ImageProbe(noise, scheduler, cfg.steps, cfg.seed, cond, cfg.clipped_model_output,
                          latent_decoder(model_path.parent, info)), settings
    at = spread_steps(cfg.steps, cfg.points)
    feeds = trajectory_feeds(model_path, info, cfg.steps, at, cfg.num, cfg.seed, cond, cfg.scheduler,
                             cfg.clipped_model_output)
    settings.update(points=cfg.points, step_indices=at, timesteps=[int(f["timestep"][0]) for f in feeds],
                    what=f"UNet output MSE at t = {[int(f['timestep'][0]) for f in feeds]} × {cfg.num} rows")
    return StepProbe(feeds), settings


def main(argv: list[str]) -> int:
    args = parse(argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    model_path = work.model_for("fp32")
    if not work.ranges.is_file():
        raise UserError(f"no ranges file '{work.ranges}': run python -m tools calibrate {work.root} first")
    model_sha = onnx_model_sha256(model_path)
    ranges = TensorRanges.load(work.ranges, expected_model_sha256=model_sha)
    policy = recorded_policy(work, args.precision)
    if policy.fp8:
        ranges = max_ranges(ranges)  # quantize --format fp8's default activation amax
    cfg = SensitivityConfig(args.steps, args.points, args.num, args.seed, args.scheduler, args.threads, args.metric,
                            args.use_clipped_model_output)
    start = time.perf_counter()
    cond = conditioning_from_args(args, info, args.seed, work_root=work.root)
    probe, settings = make_probe(model_path, info, cfg, cond)
    model = onnx.load(str(model_path))
    print(f"ranking quantized layers ({policy.target} {policy.format} policy, {cfg.metric} metric: "
          f"{settings['what']})")
    backend = args.backend
    if policy.fp8:
        backend, note = fp8_backend(args.backend, backend)
        print(note)
    layers = rank_layers(model, ranges, policy, probe, cfg.threads, backend=backend)
    settings["backend"] = backend
    seconds = time.perf_counter() - start
    result = SensitivityResult(model_sha, sha256_files([work.ranges]), policy.to_json(), settings, tuple(layers),
                               "python -m tools sensitivity " + " ".join(argv), round(seconds, 1))
    out = args.out or work.report_dir / sensitivity_file(args.precision)
    result.save(out)
    for layer in layers[:SHOWN]:
        print(f"  {layer.rank:3d}. {layer.node:60s} {layer.op_type:8s} MSE {layer.mse:.3e}  cosine {layer.cosine:.6f}")
    if len(layers) > SHOWN:
        print(f"  ... {len(layers) - SHOWN} more")
    print(f"ranked {len(layers)} layers in {seconds:.1f} s; wrote {out}")
    return 0
