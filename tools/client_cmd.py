"""``python -m tools client URL``: ask a ``serve``d model for images (seeds K..K+N-1) and write them as PNGs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common.atomic import atomic_path, write_json
from common.errors import UserError
from common.images import save_grid
from serving.client import ImageRequest, chunked, normalize_url, request_images
from serving.config import DEFAULT_MODEL_NAME
from tools.cli_parser import CliParser, check_at_least_one


def parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog="python -m tools client", description=__doc__)
    p.add_argument("url", help="the server: http://HOST:PORT (default port 8000) or grpc://HOST:PORT")
    p.add_argument("--seed", type=int, required=True, help="first seed: image i uses seed K+i")
    p.add_argument("--num", type=int, default=1, help="number of images")
    p.add_argument("--steps", type=int, help="denoising steps (default: the server's --steps)")
    p.add_argument("--prompt", nargs="+", help="text-to-image models: the prompt (words are joined)")
    p.add_argument("--negative-prompt", help="text-to-image models")
    p.add_argument("--guidance-scale", type=float, help="text-to-image models")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--per-request", type=int, default=16, help="images per request (the server's --max-batch)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one request")
    p.add_argument("--out", type=Path, required=True, help="PNG grid path; <out>.images.npy holds N×H×W×C uint8")
    args = p.parse_args(argv)
    check_at_least_one(args, "num", "per_request", "steps")
    if args.seed < 0:
        raise UserError("--seed must be >= 0")
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out '{args.out}' must end in .png")
    if args.out.parent.exists() and not args.out.parent.is_dir():
        raise UserError(f"--out '{args.out}': '{args.out.parent}' is not a folder")
    normalize_url(args.url)
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    prompt = " ".join(args.prompt) if args.prompt else None
    seeds = list(range(args.seed, args.seed + args.num))
    start = time.perf_counter()
    parts = [request_images(args.url, ImageRequest(chunk, args.steps, prompt, args.negative_prompt,
                                                   args.guidance_scale), args.model_name, timeout_s=args.timeout)
             for chunk in chunked(seeds, args.per_request)]
    seconds = time.perf_counter() - start
    images = np.concatenate(parts)
    save_grid(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, args.out)
    stem = args.out.with_suffix("")
    with atomic_path(Path(f"{stem}.images.npy")) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images, allow_pickle=False)
    write_json(Path(f"{stem}.json"), {
        "command": "python -m tools client " + " ".join(argv), "url": args.url, "model_name": args.model_name,
        "seeds": seeds, "steps": args.steps, "prompt": prompt, "seconds": round(seconds, 3),
        "images": f"{stem.name}.images.npy", "shape": list(images.shape),
    })
    print(f"wrote {args.out} (+ {stem.name}.images.npy, {stem.name}.json): {len(seeds)} images in {seconds:.1f} s")
    return 0



