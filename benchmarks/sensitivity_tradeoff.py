"""Accuracy/speed trade-off of keeping the most sensitive layers float (``quantize --keep-float N``).

    python -m benchmarks.sensitivity_tradeoff [--model models/digits-ddpm] [--work work/bench-sensitivity]
                                              [--keep 0 1 2 4 8] [--num 16] [--steps 50] [--batch 8]

On the reference model's work folder (exported and calibrated with the default NDTC settings when missing; layer
sensitivity measured with ``python -m tools sensitivity`` defaults when missing or stale), for each N: quantize with
the ``onnxruntime`` target keeping the N most sensitive layers float; final images of DDIM ``steps`` from ``num``
seeds (image i uses seed i) against FP32 (PSNR over all pixels, SSIM); UNet latency at ``batch`` rows on ONNX
Runtime CPU (median of interleaved calls, all models in every round). Results: docs/benchmarks.md,
section "sensitivity-tradeoff".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, machine, markdown_table, today, write_section
from common.errors import UserError
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from engines.ort_session import OrtSession
from engines.runner import DenoiseRunner, to_images
from engines.schedulers import make_scheduler
from tools.__main__ import main as cli
from validation.image_metrics import psnr, ssim
from validation.latency import step_latency_ms
from validation.sensitivity_file import FILE_NAME, SensitivityResult

FP32 = "FP32"


def prepare(model_dir: Path, work: WorkDir) -> SensitivityResult:
    """Export, calibrate and rank layers once; each stage only when its artifact is missing or stale."""
    if not work.export_json.is_file():
        if not (model_dir / "unet" / "config.json").is_file():
            raise UserError(f"reference model missing at '{model_dir}': python -m tools train-reference {model_dir}")
        assert cli(["export", "--model", str(model_dir), str(work.root), "--force"]) == 0
    sha = onnx_model_sha256(work.model)
    if not work.ranges.is_file():
        assert cli(["calibrate", str(work.root)]) == 0
    path = work.report_dir / FILE_NAME
    try:
        return SensitivityResult.load(path, expected_model_sha256=sha)
    except UserError:
        assert cli(["sensitivity", str(work.root)]) == 0
        return SensitivityResult.load(path, expected_model_sha256=sha)


def images(model: Path, info: dict[str, Any], noise: np.ndarray, steps: int) -> np.ndarray:
    """Final images in [0, 1] from ``noise`` (N×C×H×W) with DDIM ``steps``."""
    with OrtSession(model) as sess:
        return to_images(DenoiseRunner(sess, make_scheduler("ddim", info["scheduler"]), batch_size=len(noise))
                         .sample(noise, steps))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", type=Path, default=REPO / "work" / "bench-sensitivity")
    p.add_argument("--keep", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="values of --keep-float N")
    p.add_argument("--num", type=int, default=16, help="seeds (images) for PSNR/SSIM")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--batch", type=int, default=8, help="rows per UNet call for latency")
    p.add_argument("--repeats", type=int, default=30, help="interleaved latency rounds")
    p.add_argument("--section", default="sensitivity-tradeoff")
    args = p.parse_args(argv)
    command = "python -m benchmarks.sensitivity_tradeoff " + " ".join(sys.argv[1:] if argv is None else argv)
    work = WorkDir(args.work)
    sensitivity = prepare(args.model, work)
    info = work.load_export_info()
    out_dir = work.root / "keep-float"
    models: dict[str, Path] = {FP32: work.model}
    for n in args.keep:
        path = out_dir / f"keep{n}.onnx"
        assert cli(["quantize", str(work.root), "--target", "onnxruntime", "--keep-float", str(n), "--out",
                    str(path)]) == 0
        models[f"N={n}"] = path
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    with OrtSession(work.model) as sess:
        runner = DenoiseRunner(sess, make_scheduler("ddim", info["scheduler"]))
        noise = np.concatenate([runner.initial_noise((1, c, h, w), seed=i) for i in range(args.num)])
    start = time.perf_counter()
    ref = images(work.model, info, noise, args.steps)
    quality = {}
    for label, path in models.items():
        if label != FP32:
            img = images(path, info, noise, args.steps)
            quality[label] = (psnr(img, ref), ssim(img, ref))
            print(f"{label}: PSNR {quality[label][0]:.2f} dB, SSIM {quality[label][1]:.4f}")
    latency = {r["backend"]: r["ms"] for r in step_latency_ms(models, info, [args.batch], args.repeats)}
    seconds = time.perf_counter() - start
    rows: list[list[object]] = [[FP32, "all", "–", "–", f"{latency[FP32]:.2f}", "1.00"]]
    for n in args.keep:
        label = f"N={n}"
        kept = ", ".join(f"`{x.removeprefix('/inner/')}`" for x in sensitivity.most_sensitive(n)) or "none"
        rows.append([f"INT8, keep-float {n}", kept, f"{quality[label][0]:.2f}", f"{quality[label][1]:.4f}",
                     f"{latency[label]:.2f}", f"{latency[FP32] / latency[label]:.2f}"])
    s = sensitivity.settings
    body = "\n".join([
        "## Layer sensitivity: keeping the N most sensitive layers float", "",
        f"Command: `{command}` · {today()} · {machine()}", "",
        f"Reference model `{args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model}`; "
        f"ranking by `{sensitivity.command}` ({len(sensitivity.layers)} layers, each quantized alone, output MSE "
        f"against FP32 at t = {s.get('timesteps')} × {s.get('num')} trajectories; {sensitivity.seconds:.0f} s). "
        f"Quantized with `quantize --target onnxruntime --keep-float N` (W8A8, ranges from NDTC). PSNR/SSIM: final "
        f"images of DDIM {args.steps} from {args.num} seeds against FP32. Latency: one UNet call at batch "
        f"{args.batch}, ONNX Runtime CPU, median of {args.repeats} interleaved rounds.", "",
        markdown_table(["model", "layers kept float", "PSNR (dB)", "SSIM", f"UNet ms (batch {args.batch})",
                        "speed-up vs FP32"], rows),
    ])
    write_section(args.section, body)
    print(body)
    print(f"measured in {seconds:.0f} s; wrote section '{args.section}' of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
