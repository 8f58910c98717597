"""Text-to-image benchmarks: prompt following of the bundled digits model (FP32 and INT8 UNet), and the cost of the
Stable Diffusion 1.5 structure at full size with random weights.

    python -m benchmarks.text_to_image prompt-following [--model models/digits-t2i] [--images-per-digit 10]
    python -m benchmarks.text_to_image sd15            (needs ~15 GiB of free memory)

prompt-following: export -> calibrate with the model's prompts (ModelOpt's recipe: 32-64 prompts, 20-30 steps) ->
quantize -> the same prompts and seeds through the FP32 and the INT8 UNet (DDIM 50, guidance as given); each image's
digit is read by the in-repo digit classifier (validation/digit_classifier.py) and compared with the digit the prompt
asks for; INT8 images are compared with FP32 images (PSNR). Every stage is the library/CLI the users run.
sd15: ``export --arch sd15`` (text encoder, UNet, VAE decoder) in a fresh process (wall time, peak RSS), a 2-sample
calibration and ``quantize``, then one 2-step 512×512 guided generation per precision (``sample``: prompt encoding,
2 × 2 UNet rows, VAE decode), each in a fresh process (wall time of the generation as ``sample`` records it, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, command_line, markdown_table, section_head, write_section
from benchmarks.subprocess_peak import run_measured

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def asked_digit(prompt: str) -> int | None:
    """The one digit a prompt names (word or numeral), or None."""
    try:
        from validation.digit_prompts import digit_in_prompt  # the reference model's own reading (issue 13)

        return digit_in_prompt(prompt)
    except ImportError:
        found = {DIGIT_WORDS.index(t) if t in DIGIT_WORDS else int(t)
                 for t in re.findall(r"[a-z]+|\d", prompt.lower()) if t in DIGIT_WORDS or t.isdigit()}
        return found.pop() if len(found) == 1 else None


def _cli(*args: object) -> None:
    from tools.__main__ import main

    code = main([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"python -m tools {' '.join(str(a) for a in args)} exited {code}")


def generate(work: Path, precision: str, prompts: list[str], seeds: list[int], steps: int,
             guidance: float) -> np.ndarray:
    """Images N×3×H×W in [0, 1]: image i from prompt i and x_T of seed i, through the library's TextToImage."""
    from common.workdir import WorkDir
    from pipelines.conditioning_inputs import ConditioningInputs, resolve_conditioning
    from engines.ort_session import OrtSession
    from pipelines.runner import seeded_noise
    from pipelines.schedulers import make_scheduler
    from pipelines.text2image import open_text_to_image

    wd = WorkDir(work)
    info = wd.load_export_info()
    cond = resolve_conditioning(work, info, ConditioningInputs(prompts=tuple(prompts), guidance_scale=guidance))
    assert cond is not None
    noise = seeded_noise(tuple(info["inputs"]["sample"]["shape"][1:]), seeds)
    with open_text_to_image(work, info, OrtSession(wd.model_for(precision)), make_scheduler("ddim", info["scheduler"]),
                            batch_size=32) as t2i:
        images, _ = t2i.generate(cond, noise, steps)
    return images


def prompt_following(args: argparse.Namespace, argv: list[str] | None) -> int:
    from validation.digit_classifier import DigitFeatures
    from validation.image_metrics import psnr

    model = Path(args.model)
    prompts_file = model / "prompts.txt"
    work = REPO / "work" / "bench-digits-t2i"
    all_prompts = [p for p in prompts_file.read_text().splitlines() if p.strip()]
    _cli("export", "--model", model, work, "--force")
    calib = all_prompts[:: max(1, len(all_prompts) // args.calib_prompts)][: args.calib_prompts]
    calib_file = work / "calibration_prompts.txt"
    calib_file.write_text("\n".join(calib) + "\n")
    _cli("calibrate", work, "--prompts", calib_file, "--samples", args.calib_samples, "--steps", args.calib_steps,
         "--guidance-scale", args.guidance_scale)
    _cli("quantize", work)
    by_digit = {d: [p for p in all_prompts if asked_digit(p) == d] for d in range(10)}
    prompts = [by_digit[d][i % len(by_digit[d])] for d in range(10) for i in range(args.images_per_digit)]
    asked = np.array([asked_digit(p) for p in prompts])
    # image i of each digit starts from seed + i (the same noise for every digit, as the model card's measurement)
    seeds = [args.seed + i for _ in range(10) for i in range(args.images_per_digit)]
    classifier = DigitFeatures(REPO / "models" / "digit-classifier")
    images, shares = {}, {}
    for precision in ("fp32", "int8"):
        images[precision] = generate(work, precision, prompts, seeds, args.steps, args.guidance_scale)
        gray = images[precision].mean(axis=1, keepdims=True)
        shares[precision] = float(np.mean(classifier.predict(gray) == asked))
        print(f"{precision}: {shares[precision]:.1%} of {len(prompts)} images show the asked digit", flush=True)
    quality = psnr(images["int8"], images["fp32"])
    from common.images import save_grid

    save_grid(np.concatenate([images["fp32"], images["int8"]]), work / "fp32_then_int8.png",
              nrow=args.images_per_digit)
    rows = [["FP32", f"{shares['fp32']:.1%}", "-"],
            ["INT8 UNet (W8A8, ONNX Runtime)", f"{shares['int8']:.1%}", f"{quality:.1f} dB"]]
    body = "\n".join([
        *section_head("Text to image: prompt following of the bundled digits model",
                      command_line("benchmarks.text_to_image", argv), f"load average {os.getloadavg()[0]:.1f}; "),
        "",
        f"{len(prompts)} images ({args.images_per_digit} per digit, the phrasings of `prompts.txt` in turn; image i "
        f"of every digit from seed {args.seed}+i), DDIM {args.steps} steps, guidance {args.guidance_scale:g}, empty negative "
        f"prompt. Calibration: {len(calib)} prompts, {args.calib_samples} NDTC samples of {args.calib_steps}-step "
        "trajectories. A hit: the in-repo digit classifier reads the asked digit (images averaged to grey).",
        "",
        markdown_table(["UNet", "prompt following", "PSNR vs FP32 images"], rows),
    ])
    write_section("text-to-image-prompt-following", body)
    return 0


def sd15(args: argparse.Namespace, argv: list[str] | None) -> int:
    work = REPO / "work" / "bench-sd15"
    prompt = "a photo of an astronaut riding a horse"
    done_file = work / "bench_rows.json"  # rows of the stages finished so far, for --resume
    done: dict[str, list[Any]] = json.loads(done_file.read_text()) if args.resume and done_file.is_file() else {}
    resumed = [name for name in done if name != "note"]
    stages = [("export", ["export", "--arch", "sd15", str(work), "--force"]),
              ("calibrate", ["calibrate", str(work), "--prompt", prompt, "--method", "uniform", "--samples", "2",
                             "--steps", "4", "--every", "2", "--groups", "2", "--batch-rows", "2"]),
              ("quantize", ["quantize", str(work)])]
    rows: list[list[Any]] = []
    for name, cmd in stages:
        if name not in done:
            wall, peak, code = run_measured(["tools", *cmd], REPO)
            if code != 0:
                print(f"{name} failed with exit code {code}", file=sys.stderr)
                return code
            label = ("export --arch sd15 (3 components, each checked vs PyTorch)" if name == "export"
                     else " ".join(cmd[:1] + cmd[2:]))
            done[name] = [label, f"{wall:.0f}", f"{peak:.1f}"]
            done_file.write_text(json.dumps(done, indent=1))
        rows.append(done[name])
        print(rows[-1], flush=True)
    info = json.loads((work / "export.json").read_text())
    params = info["num_parameters"] + sum(c["num_parameters"] for c in info["components"].values())
    gen_rows = []
    for precision in ("fp32", "int8"):
        out = work / "samples" / f"{precision}.png"
        wall, peak, code = run_measured(["tools", "sample", str(work), "--precision", precision, "--prompt", prompt,
                                         "--num", "1", "--steps", "2", "--scheduler", "pndm", "--out", str(out)],
                                        REPO)
        if code != 0:
            print(f"sample failed with exit code {code}", file=sys.stderr)
            return code
        seconds = json.loads(out.with_suffix(".json").read_text())["seconds"]
        gen_rows.append([precision.upper(), f"{seconds:.1f}", f"{wall:.0f}", f"{peak:.1f}"])
        print(gen_rows[-1], flush=True)
    if not args.keep:
        shutil.rmtree(work)
    body = "\n".join([
        *section_head("Text to image: Stable Diffusion 1.5 structure, random weights, CPU",
                      command_line("benchmarks.text_to_image", argv), f"load average {os.getloadavg()[0]:.1f}; "),
        "",
        f"{params / 1e6:.0f} M parameters (text encoder, UNet, VAE decoder). Each command in a fresh process.",
        *([f"Rows of an earlier run of the same commands, kept with --resume: {', '.join(resumed)}"
           + (f" ({done['note']})" if "note" in done else "") + "."] if resumed else []),
        "",
        markdown_table(["command", "wall s", "peak RSS GiB"], rows),
        "",
        "One 512×512 image, 2 PNDM steps (PLMS: 3 UNet calls, its first time step repeated) with classifier-free "
        "guidance (2 UNet rows a call), prompt encoding and VAE decode included; text encoder and VAE FP32 on ONNX Runtime in both rows:",
        "",
        markdown_table(["UNet", "generation s", "process wall s", "peak RSS GiB"], gen_rows),
    ])
    write_section("text-to-image-sd15", body)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    pf = sub.add_parser("prompt-following")
    pf.add_argument("--model", default=str(REPO / "models" / "digits-t2i"))
    pf.add_argument("--images-per-digit", type=int, default=10)
    pf.add_argument("--steps", type=int, default=50)
    pf.add_argument("--guidance-scale", type=float, default=5.0)
    pf.add_argument("--calib-prompts", type=int, default=60)
    pf.add_argument("--calib-samples", type=int, default=64)
    pf.add_argument("--calib-steps", type=int, default=25)
    pf.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("sd15")
    s.add_argument("--keep", action="store_true", help="keep the work folder (several GB)")
    s.add_argument("--resume", action="store_true",
                   help="keep the rows of stages an earlier run finished (work/bench-sd15/bench_rows.json) and run "
                        "only the rest")
    args = p.parse_args(argv)
    return prompt_following(args, argv) if args.what == "prompt-following" else sd15(args, argv)


if __name__ == "__main__":
    sys.exit(main())
