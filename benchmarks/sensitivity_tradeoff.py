"""Accuracy/speed trade-off of keeping the most sensitive layers float (``quantize --keep-float N``), for the two
sensitivity metrics of ``python -m tools sensitivity``.

    python -m benchmarks.sensitivity_tradeoff [--model models/digits-ddpm] [--work work/bench-sensitivity]
                                              [--keep 0 1 2 4 8] [--num 16] [--steps 50] [--batch 8]

On the reference model's work folder (exported and calibrated with the default settings when missing), the
layers are ranked twice: ``--metric step`` (defaults: UNet output MSE at 5 trajectory steps) and ``--metric image``
(final-image MSE after ``--image-steps`` DDIM steps from 4 seeds); each ranking is kept in WORK/keep-float/ and
reused while the model is unchanged. For each ranking and N: quantize with the ``onnxruntime`` target keeping the N
highest-ranked layers float; final images of DDIM ``steps`` from ``num`` seeds (image i uses seed i) against FP32
(PSNR over all pixels, SSIM); UNet latency at ``batch`` rows on ONNX Runtime CPU (median of interleaved calls, all
models in every round; one intra-op thread by default, as a busy core makes two ORT threads spin). Results: docs/benchmarks.md, section "sensitivity-tradeoff".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, machine, markdown_table, today, write_section
from common.errors import UserError
from common.hashing import onnx_model_sha256, sha256_files
from common.workdir import WorkDir
from engines.ort_session import OrtSession
from pipelines.runner import sample_images, seeded_noise
from pipelines.schedulers import make_scheduler
from quantization.qdq_policy import QDQPolicy
from tools.__main__ import main as cli
from validation.image_metrics import psnr, ssim
from validation.latency import step_latency_ms
from validation.sensitivity_file import SensitivityResult

FP32 = "FP32"
POLICY = QDQPolicy(target="onnxruntime")  # what quantize and sensitivity use by default


def prepare(model_dir: Path, work: WorkDir) -> None:
    """Export and calibrate once (each only when its artifact is missing)."""
    if not work.export_json.is_file():
        if not (model_dir / "unet" / "config.json").is_file():
            raise UserError(f"reference model missing at '{model_dir}': python -m tools train-reference {model_dir}")
        assert cli(["export", "--model", str(model_dir), str(work.root), "--force"]) == 0
    if not work.ranges.is_file():
        assert cli(["calibrate", str(work.root)]) == 0


def ranking(work: WorkDir, metric: str, flags: list[str]) -> tuple[Path, SensitivityResult]:
    """WORK/keep-float/sensitivity.<metric>.json, measured when missing or made for another model, ranges file or
    policy (the default ``onnxruntime`` policy: there is no WORK/quantize.json here)."""
    path = work.root / "keep-float" / f"sensitivity.{metric}.json"
    sha = onnx_model_sha256(work.model)
    try:
        result = SensitivityResult.load(path, expected_model_sha256=sha)
        if result.ranges_sha256 == sha256_files([work.ranges]) and result.policy == POLICY.to_json():
            return path, result
    except UserError:
        pass
    assert cli(["sensitivity", str(work.root), "--metric", metric, *flags, "--out", str(path)]) == 0
    return path, SensitivityResult.load(path, expected_model_sha256=sha)


def images(model: Path, info: dict[str, Any], noise: np.ndarray, steps: int) -> np.ndarray:
    """Final images in [0, 1] from ``noise`` (N×C×H×W) with DDIM ``steps``."""
    with OrtSession(model) as sess:
        return sample_images(sess, make_scheduler("ddim", info["scheduler"]), noise, steps).images


def _short(nodes: list[str]) -> str:
    return ", ".join(f"`{x.removeprefix('/inner/')}`" for x in nodes) or "none"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "digits-ddpm")
    p.add_argument("--work", type=Path, default=REPO / "work" / "bench-sensitivity")
    p.add_argument("--keep", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="values of --keep-float N")
    p.add_argument("--num", type=int, default=16, help="seeds (images) for PSNR/SSIM")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the evaluated images")
    p.add_argument("--image-steps", type=int, default=20, help="DDIM steps of the image-metric ranking")
    p.add_argument("--batch", type=int, default=8, help="rows per UNet call for latency")
    p.add_argument("--repeats", type=int, default=30, help="interleaved latency rounds")
    p.add_argument("--threads", type=int, default=1,
                   help="ORT intra-op threads for latency (1: steady on a shared machine; 0 = all cores)")
    p.add_argument("--section", default="sensitivity-tradeoff")
    args = p.parse_args(argv)
    command = "python -m benchmarks.sensitivity_tradeoff " + " ".join(sys.argv[1:] if argv is None else argv)
    work = WorkDir(args.work)
    prepare(args.model, work)
    info = work.load_export_info()
    rankings = {"step": ranking(work, "step", []),
                "image": ranking(work, "image", ["--steps", str(args.image_steps), "--num", "4"])}
    models: dict[str, Path] = {FP32: work.model}
    for metric, (path, _) in rankings.items():
        for n in args.keep:
            if n == 0 and metric != "step":
                continue  # N = 0 is the same model for every ranking
            out = work.root / "keep-float" / f"{metric}-keep{n}.onnx"
            assert cli(["quantize", str(work.root), "--target", "onnxruntime", "--keep-float", str(n),
                        "--sensitivity", str(path), "--out", str(out)]) == 0
            models[f"{metric} N={n}"] = out
    c, h, w = info["inputs"]["sample"]["shape"][1:]
    noise = seeded_noise((c, h, w), range(args.num))
    load = os.getloadavg()[0]
    start = time.perf_counter()
    ref = images(work.model, info, noise, args.steps)
    quality = {}
    for label, path in models.items():
        if label != FP32:
            img = images(path, info, noise, args.steps)
            quality[label] = (psnr(img, ref), ssim(img, ref))
            print(f"{label}: PSNR {quality[label][0]:.2f} dB, SSIM {quality[label][1]:.4f}")
    latency = {r["backend"]: r["ms"] for r in step_latency_ms(models, info, [args.batch], args.repeats, args.threads)}
    seconds = time.perf_counter() - start
    rows: list[list[object]] = [[FP32, "–", "all", "–", "–", f"{latency[FP32]:.2f}", "1.00"]]
    for label in models:
        if label == FP32:
            continue
        metric, n = label.split(" N=")
        kept = rankings[metric][1].most_sensitive(int(n))
        rows.append([f"INT8, keep-float {n}", "–" if n == "0" else metric, _short(kept),
                     f"{quality[label][0]:.2f}", f"{quality[label][1]:.4f}", f"{latency[label]:.2f}",
                     f"{latency[FP32] / latency[label]:.2f}"])
    settings = json.loads(work.ranges.read_text())["settings"]
    calib = (f"`calibrate` defaults ({settings['method']}, {settings['params'].get('samples')} samples, estimator "
             f"{settings['estimator']['method']}, aggregation {settings['aggregation']['method']})")
    model_name = args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model
    rank_lines = [f"- `{metric}`: `{r.command}` ({len(r.layers)} layers, {r.settings.get('what')}; "
                  f"{r.seconds:.0f} s)" for metric, (_, r) in rankings.items()]
    body = "\n".join([
        "## Layer sensitivity: keeping the N most sensitive layers float", "",
        f"Command: `{command}` · {today()} · {machine()}", "",
        f"Reference model `{model_name}`, W8A8 `--target onnxruntime` with the default policy (exclude "
        f"{' '.join(f'`{p}`' for p in POLICY.exclude) or 'nothing'}); ranges: {calib}. Each layer the policy "
        "quantizes is quantized alone (everything else float) and ranked by:", "", *rank_lines, "",
        f"Then `quantize --keep-float N --sensitivity <ranking>`. PSNR/SSIM: final images of DDIM {args.steps} "
        f"from {args.num} seeds against FP32. Latency: one UNet call at batch {args.batch}, ONNX Runtime CPU "
        f"({args.threads or 'all'} intra-op thread{'s' if args.threads != 1 else ''}), median of {args.repeats} "
        f"interleaved rounds ({seconds:.0f} s for images and latency; 1-minute load average "
        f"{load:.1f} on {os.cpu_count()} cores when they started).", "",
        markdown_table(["model", "ranking", "layers kept float", "PSNR (dB)", "SSIM", f"UNet ms (batch {args.batch})",
                        "speed-up vs FP32"], rows),
    ])
    write_section(args.section, body)
    print(body)
    print(f"wrote section '{args.section}' of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
