"""``python -m tools sample WORK``: run the denoising loop and write a PNG grid, raw samples and the initial noise.

Text-to-image work folders take ``--prompt``/``--prompts``: prompts are encoded by the folder's text encoder(s), the
final latents decoded by its VAE decoder (both float; ``--precision`` chooses the UNet)."""

from __future__ import annotations

import argparse
import contextlib
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
from engines.backends import open_session, resolve_backend
from pipelines.conditioning_inputs import default_prompts, prompts_from_flags
from pipelines.tensor_runner import TensorDenoiseRunner, device_of
from pipelines.text2image import is_text_to_image, open_text_to_image
from engines.timestep_routed import TimestepRoutedSession
from pipelines.runner import DenoiseRunner, clipped_output_hint, to_images
from pipelines.schedulers import SCHEDULERS, make_scheduler, unet_calls
from tools.cli_inputs import add_conditioning_args, conditioning_from_args, load_array
from tools.cli_parser import CliParser, add_backend, add_clipped_model_output, check_at_least_one


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools sample", description=__doc__)
    p.add_argument("work", type=Path, help="work folder made by export")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp8", "fp16"],
                   help="fp16: TensorRT engines only; fp8: the FP8 graph (quantize --format fp8), simulated on "
                        "ONNX Runtime on the CPU, an FP8 engine with --backend trt")
    add_backend(p, "runs the UNet")
    p.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--num", type=int, default=16, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial noise and stochastic schedulers")
    p.add_argument("--batch-size", type=int, default=16, help="images per UNet call")
    p.add_argument("--out", type=Path, help="PNG grid path (default WORK/samples/<precision>_<scheduler><steps>.png)")
    p.add_argument("--init-noise", type=Path, help=".npy of x_T, N×C×H×W float32: start from this noise")
    add_conditioning_args(p.add_argument_group("conditioning (conditional UNets)"))
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime or OpenVINO intra-op threads (0 = all cores)")
    add_clipped_model_output(p)
    p.add_argument("--float-above-t", type=float, default=None, metavar="T",
                   help="with --precision int8: run the FP32 model at time steps >= T (the first, high-noise steps, "
                        "where an x0-predicting sampler divides the UNet's error by sqrt(alpha_bar)), INT8 below")
    args = p.parse_args(argv)
    check_at_least_one(args, "steps", "num", "batch_size")
    return args


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
    cond = conditioning_from_args(args, info, args.seed, images=args.num, work_root=work.root)
    scheduler = make_scheduler(args.scheduler, info["scheduler"])
    text = is_text_to_image(info)
    with contextlib.ExitStack() as stack:
        if text:
            t2i = stack.enter_context(open_text_to_image(work.root, info, session, scheduler, args.batch_size,
                                                         args.threads, resolve_backend(args.backend)))
            runner = t2i.runner
        else:
            runner = DenoiseRunner(stack.enter_context(session), scheduler, batch_size=args.batch_size)
        if args.init_noise:
            noise = load_array(args.init_noise, "--init-noise", (args.num, c, h, w))
        else:
            noise = runner.initial_noise((args.num, c, h, w), args.seed)
        device = device_of(session)  # a GPU session: the loop stays on the device (pipelines/tensor_runner.py)
        if device is not None:
            described += f"; loop on {device}"
        print(f"sampling {args.num} images, {args.scheduler} {args.steps} steps, {args.precision} on {described}")
        start = time.perf_counter()
        if device is not None:
            show = _progress(unet_calls(scheduler, args.steps))
            device_runner = TensorDenoiseRunner(session, scheduler, device=device, batch_size=args.batch_size)
            samples = device_runner.sample(noise, args.steps, seed=args.seed, cond=cond,
                                           use_clipped_model_output=args.use_clipped_model_output,
                                           progress=lambda i, t: show(i, t, None))
            runner.health = device_runner.health
        else:
            samples = runner.sample(noise, args.steps, seed=args.seed, cond=cond, callback=_progress(unet_calls(scheduler, args.steps)),
                                    use_clipped_model_output=args.use_clipped_model_output)
        images = t2i.decode(samples) if text else to_images(samples)
        seconds = time.perf_counter() - start
    print(file=sys.stderr)
    warning = runner.health.warning(clipped_output_hint(scheduler, args.use_clipped_model_output))
    if warning:
        print(warning)
    stem = out.with_suffix("")
    save_grid(images, out)
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
        "prompts": _image_prompts(args, info), "negative_prompt": args.negative_prompt,
        "guidance_scale": args.guidance_scale if cond is not None else None,
        "unet_calls": getattr(session, "calls", None),
        "seconds": round(seconds, 3), "samples": f"{stem.name}.samples.npy", "noise": f"{stem.name}.noise.npy",
    })
    print(f"wrote {out} (+ {stem.name}.samples.npy, {stem.name}.noise.npy, {stem.name}.json) in {seconds:.1f} s")
    return 0


def _progress(total: int) -> Any:
    def show(i: int, t: int, x: np.ndarray | None) -> None:
        print(f"\r  step {i + 1}/{total} (t={t})", end="", file=sys.stderr, flush=True)

    return show


def _image_prompts(args: argparse.Namespace, info: dict[str, Any]) -> list[str]:
    """The prompt of each image (image i: prompt i mod N), or [] when the images are not prompt-conditioned."""
    prompts = prompts_from_flags(args.prompt, args.prompts)[0]
    if not prompts and is_text_to_image(info) and args.cond is None:
        prompts = default_prompts(info)[0]
    return [prompts[i % len(prompts)] for i in range(args.num)] if prompts else []
