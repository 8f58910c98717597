"""``python -m tools sample WORK``: run the denoising loop and write a PNG grid, raw samples and the initial noise."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path, write_json
from common.errors import UserError
from common.images import save_grid
from common.workdir import WorkDir
from engines.backends import BACKENDS, open_session
from engines.timestep_routed import TimestepRoutedSession
from engines.runner import Conditioning, DenoiseRunner, clipped_output_hint, to_images
from engines.schedulers import SCHEDULERS, make_scheduler
from tools.cli_parser import CliParser, add_clipped_model_output


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools sample", description=__doc__)
    p.add_argument("work", type=Path, help="work folder made by export")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp16"], help="fp16: TensorRT engines only")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS))
    p.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--num", type=int, default=16, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial noise and stochastic schedulers")
    p.add_argument("--batch-size", type=int, default=16, help="images per UNet call")
    p.add_argument("--out", type=Path, help="PNG grid path (default WORK/samples/<precision>_<scheduler><steps>.png)")
    p.add_argument("--init-noise", type=Path, help=".npy of x_T, N×C×H×W float32: start from this noise")
    p.add_argument("--cond", type=Path, help=".npy of encoder_hidden_states (N or 1)×L×D (conditional models)")
    p.add_argument("--uncond", type=Path, help=".npy of unconditional encoder_hidden_states for guidance")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance (conditional models)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    add_clipped_model_output(p)
    p.add_argument("--float-above-t", type=float, default=None, metavar="T",
                   help="with --precision int8: run the FP32 model at time steps >= T (the first, high-noise steps, "
                        "where an x0-predicting sampler divides the UNet's error by sqrt(alpha_bar)), INT8 below")
    args = p.parse_args(argv)
    for flag in ("steps", "num", "batch_size"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1")
    return args


def load_array(path: Path, flag: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """A float32 .npy matching ``shape`` (None = any); errors name the flag and the file."""
    if not path.is_file():
        raise UserError(f"{flag} file '{path}' does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag} file '{path}' is not a readable .npy array: {exc}") from exc
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape, strict=False))
    if not ok or not np.issubdtype(arr.dtype, np.floating):
        want = "×".join("*" if s is None else str(s) for s in shape)
        raise UserError(f"{flag} file '{path}' has shape {arr.shape} {arr.dtype}; expected {want} float")
    return arr.astype(np.float32)


def conditioning(args: argparse.Namespace, info: dict[str, Any]) -> Conditioning | None:
    """Conditioning from --cond/--uncond, or random embeddings (seeded) for random-weight models."""
    spec = info["inputs"].get("encoder_hidden_states")
    if spec is None:
        if args.cond or args.uncond:
            raise UserError("--cond/--uncond given but the model has no encoder_hidden_states input")
        return None
    _, length, dim = spec["shape"]
    if args.cond:
        cond = load_array(args.cond, "--cond", (None, length, dim))
        if cond.shape[0] not in (1, args.num):
            raise UserError(f"--cond file '{args.cond}' has {cond.shape[0]} rows; expected 1 or --num {args.num}")
    else:
        print("no --cond given: using random N(0,1) text embeddings (seeded), as for a random-weight model")
        cond = np.random.default_rng(args.seed).standard_normal((1, length, dim)).astype(np.float32)
    uncond = load_array(args.uncond, "--uncond", (None, length, dim)) if args.uncond else np.zeros_like(cond[:1])
    return Conditioning(cond, uncond, args.guidance_scale)


def main(argv: list[str]) -> int:
    args = parse(argv)
    work = WorkDir(args.work)
    info = work.load_export_info()
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    session, described = open_session(work, args.precision, args.backend, args.threads)
    if args.float_above_t is not None:
        if args.precision != "int8":
            raise UserError("--float-above-t needs --precision int8")
        high, high_described = open_session(work, "fp32", args.backend, args.threads)
        session = TimestepRoutedSession(high, session, args.float_above_t)
        described = f"{high_described} for t >= {args.float_above_t:g}, {described} below"
    out = args.out or work.samples_dir / f"{args.precision}_{args.scheduler}{args.steps}.png"
    if out.suffix.lower() != ".png":
        raise UserError(f"--out '{out}' must end in .png")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--out '{out}': '{out.parent}' is not a folder")
    cond = conditioning(args, info)
    scheduler = make_scheduler(args.scheduler, info["scheduler"])
    with session:
        runner = DenoiseRunner(session, scheduler, batch_size=args.batch_size)
        if args.init_noise:
            noise = load_array(args.init_noise, "--init-noise", (args.num, c, h, w))
        else:
            noise = runner.initial_noise((args.num, c, h, w), args.seed)
        print(f"sampling {args.num} images, {args.scheduler} {args.steps} steps, {args.precision} on {described}")
        start = time.perf_counter()
        samples = runner.sample(noise, args.steps, seed=args.seed, cond=cond, callback=_progress(args.steps),
                                use_clipped_model_output=args.use_clipped_model_output)
        seconds = time.perf_counter() - start
    print(file=sys.stderr)
    warning = runner.health.warning(clipped_output_hint(scheduler, args.use_clipped_model_output))
    if warning:
        print(warning)
    stem = out.with_suffix("")
    save_grid(to_images(samples), out)
    for suffix, arr in ((".samples.npy", samples), (".noise.npy", noise)):
        with atomic_path(Path(f"{stem}{suffix}")) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
    write_json(Path(f"{stem}.json"), {
        "command": "python -m tools sample " + " ".join(argv),
        "precision": args.precision, "backend": described, "scheduler": args.scheduler,
        "scheduler_config": json.loads(json.dumps(dict(scheduler.config), default=str)),
        "steps": args.steps, "num": args.num, "seed": args.seed, "init_noise": str(args.init_noise or ""),
        "float_above_t": args.float_above_t, "use_clipped_model_output": args.use_clipped_model_output,
        "trajectory": runner.health.summary(),
        "unet_calls": getattr(session, "calls", None),
        "seconds": round(seconds, 3), "samples": f"{stem.name}.samples.npy", "noise": f"{stem.name}.noise.npy",
    })
    print(f"wrote {out} (+ {stem.name}.samples.npy, {stem.name}.noise.npy, {stem.name}.json) in {seconds:.1f} s")
    return 0


def _progress(total: int) -> Any:
    def show(i: int, t: int, x: np.ndarray) -> None:
        print(f"\r  step {i + 1}/{total} (t={t})", end="", file=sys.stderr, flush=True)

    return show
