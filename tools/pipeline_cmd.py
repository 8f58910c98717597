"""``python -m tools pipeline --model DIR WORK``: the main job, stage after stage, on one work folder. A
text-to-image pipeline folder takes ``--prompts FILE`` (calibration and every grid use the same prompts)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

from common.workdir import WorkDir
from calibrators.sources import METHODS
from quantization.qdq_policy import TARGETS
from tools.cli_inputs import add_conditioning_args
from tools.cli_parser import CliParser, add_clipped_model_output


COMPARED_STEPS = 5  # time steps validate and sensitivity compare (their --points default), at most --steps


def parse(argv: list[str]) -> argparse.Namespace:
    """The pipeline's own flags: each takes the choices and defaults of the command it is passed to."""
    p = CliParser(prog="python -m tools pipeline", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="local diffusers model folder")
    p.add_argument("work", type=Path)
    p.add_argument("--force", action="store_true", help="replace WORK if it is not empty")
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument("--num", type=int, default=16, help="images per grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="ndtc", choices=list(METHODS), help="calibration method (see calibrate)")
    p.add_argument("--samples", type=int, default=256, help="calibration samples")
    p.add_argument("--target", default="onnxruntime", choices=list(TARGETS), help="Q/DQ target (see quantize)")
    add_clipped_model_output(p, "; in calibration, sampling, validation and sensitivity")
    p.add_argument("--min-psnr", type=float, default=25.0, help="validate: final-image PSNR gate (dB)")
    p.add_argument("--min-cosine", type=float, default=0.95, help="validate: per-step cosine gate")
    p.add_argument("--min-snr", type=float, default=10.0, help="validate: per-step SNR gate (dB)")
    add_conditioning_args(p.add_argument_group("conditioning (conditional models: the same for calibration, "
                                               "sampling, validation and sensitivity)"))
    return p.parse_args(argv)


def conditioning_argv(args: argparse.Namespace) -> list[str]:
    """The conditioning flags as given, passed to every stage that samples."""
    out: list[str] = []
    for flag in ("prompt", "prompts", "negative_prompt", "cond", "uncond"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out + ["--guidance-scale", str(args.guidance_scale)]


def stages(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(command, argv) of each stage, in order: export -> calibrate -> quantize -> sample FP32 and INT8 ->
    validate -> layer sensitivity -> report."""
    work = str(args.work)
    export = ["--model", str(args.model), work] + (["--force"] if args.force else [])
    clipped = ["--use-clipped-model-output"] if args.use_clipped_model_output else []
    clipped += conditioning_argv(args)  # every sampling stage: the same sampler options and conditioning
    sample = [work, "--steps", str(args.steps), "--num", str(args.num), "--seed", str(args.seed), *clipped]
    points = ["--points", str(min(COMPARED_STEPS, args.steps))]  # validate/sensitivity refuse more points than steps
    return [
        ("export", export),
        ("calibrate", [work, "--method", args.method, "--samples", str(args.samples), "--seed", str(args.seed),
                       *clipped]),
        ("quantize", [work, "--target", args.target]),
        ("sample", sample + ["--precision", "fp32"]),
        ("sample", sample + ["--precision", "int8"]),
        ("validate", [work, "--steps", str(args.steps), "--images", str(args.num), "--seed", str(args.seed),
                      "--min-psnr", str(args.min_psnr), "--min-cosine", str(args.min_cosine),
                      "--min-snr", str(args.min_snr), *points, *clipped]),
        ("sensitivity", [work, "--steps", str(args.steps), *points, *clipped]),
        ("report", [work]),
    ]


def side_by_side(work: WorkDir, steps: int) -> Path:
    """One PNG with the FP32 grid on the left and the INT8 grid (same seeds) on the right."""
    from PIL import Image

    left = Image.open(work.samples_dir / f"fp32_ddim{steps}.png").convert("RGB")
    right = Image.open(work.samples_dir / f"int8_ddim{steps}.png").convert("RGB")
    canvas = Image.new("RGB", (left.width + right.width + 16, max(left.height, right.height)), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 16, 0))
    out = work.samples_dir / f"fp32_vs_int8_ddim{steps}.png"
    canvas.save(out)
    print(f"\nFP32 (left) and INT8 (right), same seeds: {out}")
    return out


def main(argv: list[str]) -> int:
    args = parse(argv)
    from tools.__main__ import COMMANDS

    for name, stage_argv in stages(args):
        print(f"\n== python -m tools {name} {' '.join(stage_argv)}")
        run: Callable[[list[str]], int] = importlib.import_module(COMMANDS[name]).main
        code = run(stage_argv)
        if code != 0:
            return code
    work = WorkDir(args.work)
    side_by_side(work, args.steps)
    print(f"\noutputs in {work.root}/:")
    for path in sorted(work.root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            print(f"  {path.relative_to(work.root)}")
    return 0
