"""Prompt following of a bundled digits text-to-image model in PyTorch FP32 (the diffusers pipeline its folder names).

    python -m benchmarks.t2i_prompt_following [--model models/digits-t2i] [--guidance-scale 1 3 5 7.5]
    python -m benchmarks.t2i_prompt_following --model models/digits-mmdit --steps 28 --section mmdit_prompt_following

One row per guidance scale: the share of images whose digit, read by the in-repo digit classifier, is the one the
prompt asks for (10 images per digit by default, the folder's own scheduler (digits-t2i: DDIM) 50 steps, image i:
phrasing i mod 6 and seed i). Calls the same function as the training commands
(``tools.t2i_training.measure_prompt_following``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from tools.t2i_training import measure_prompt_following


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.t2i_prompt_following", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-t2i")
    p.add_argument("--classifier", type=Path, default=REPO / "models" / "digit-classifier")
    p.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0, 3.0, 5.0, 7.5])
    p.add_argument("--images-per-digit", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--section", default="t2i_prompt_following")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for g in args.guidance_scale:
        start = time.time()
        result, _ = measure_prompt_following(args.model, args.classifier, args.images_per_digit, args.steps, g)
        rows.append([g, f"{result['share'] * 100:.0f}%", " ".join(f"{v * 100:.0f}" for v in result["per_digit"]),
                     f"{time.time() - start:.0f}"])
        print(f"guidance {g}: {result['share']:.2f} per digit {result['per_digit']}", flush=True)
    index = json.loads((args.model / "model_index.json").read_text())
    body = "\n".join([
        *section_head(f"Text-to-image reference model {args.model.name}: prompt following (PyTorch FP32)",
                      command_line("benchmarks.t2i_prompt_following", argv), "1 torch thread, "),
        f"- Model: `{args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model}`; diffusers'"
        f" `{index['_class_name']}`, {result['scheduler']} {args.steps} steps, {args.images_per_digit} images per"
        " digit (image i: phrasing i mod 6, seed i); digit read by `models/digit-classifier`. Guidance 1 = no guidance.",
        "",
        markdown_table(["guidance scale", "prompt following", "per digit 0..9 (%)", "seconds"], rows),
    ])
    write_section(args.section, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
